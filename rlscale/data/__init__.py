"""The data an agent learns from: the on-device replay buffer and its relabelling samplers (``buffer``), and
offline datasets recorded from checkpoints (``datasets``). docs/method.md#goal-sampling and docs/method.md#offline-training."""
