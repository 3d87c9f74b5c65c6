"""The training loop: one trainer for every algorithm of ``rlscale.agents`` (``loop``: collection, SGD,
evaluation, checkpoints and the run's host side), packed seeds (``seed_groups``) and the multi-device split
(``parallel``). docs/method.md#training-loop."""
