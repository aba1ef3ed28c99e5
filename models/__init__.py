"""Trained model bundles shipped with cryspnet-gen (installed as ``cryspnet_gen.bundles``).

Each sub-folder is one bundle: ``manifest.json`` + weight files (safetensors) + ``README.md``.
"""
