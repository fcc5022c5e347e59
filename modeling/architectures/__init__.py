"""PyTorch architectures, one definition each, shared by export, the baseline oracle and training.

State-dict key names follow the LiteMedSAM checkpoint so that it loads strictly.
"""
