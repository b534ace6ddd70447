"""starx: STAR (separators for autoregressive pretraining of Vision Mamba) experiments."""

__version__ = "0.1.0"
