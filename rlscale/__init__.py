"""rlscale: scaling self-supervised goal-conditioned RL in depth (contrastive RL with deep residual MLPs)."""

__version__ = "0.1.0"
