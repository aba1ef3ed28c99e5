"""Trained model bundles shipped with cryspnet-gen (installed as ``cryspnet_gen.bundles``).

Each sub-folder is one bundle: ``manifest.json`` + weight files (safetensors) and tree models (gzipped LightGBM
text, ``*.lgb.txt.gz``) + ``README.md``; ``prototypes-mp-v1`` is the prototype library.
"""
