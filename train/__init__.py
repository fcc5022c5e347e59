"""Training (PyTorch, offline): per-modality decoder specialists fine-tuned from LiteMedSAM."""
