"""Using trained policies: the evaluation rollouts and their metrics (``rollout``), loading a checkpoint's
policy (``policy``), ``rlscale eval`` over checkpoints (``evaluate``) and rendering (``visualize``).
docs/metrics.md#per-evaluation."""
