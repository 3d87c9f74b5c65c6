"""rlscale: scaling self-supervised goal-conditioned RL in depth (contrastive RL with deep residual MLPs)."""

__version__ = "0.1.0"


def load_policy(path, deterministic: bool = True):
    """A checkpoint's jitted policy ``obs -> action`` and its task name (see :mod:`rlscale.policy`)."""
    from rlscale.policy import load_policy as load

    return load(path, deterministic)
