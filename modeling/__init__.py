"""The networks and their registry, one definition each: architectures (TinyViT, prompt encoder,
mask decoder, student encoders), checkpoint loading, and the model registry (specs, cards).

Export, the baseline oracle, training and evaluation all import from here; this package imports
none of them (tests/test_layers.py). Needs torch (requirements/dev.txt); never imported by ``app/``.
"""
