"""Trained model bundles shipped with cryspnet-gen (installed as ``cryspnet_gen.bundles``).

Each sub-folder is one bundle: ``manifest.json`` + weight files (safetensors), tree models (gzipped LightGBM
text, ``*.lgb.txt.gz``), the Z and Wyckoff priors counted on the bundle's training formulas (``*.json.gz``, built
by ``cryspnet-gen data z-prior``) + ``README.md``; ``prototypes-mp-v1`` is the prototype library.
"""
