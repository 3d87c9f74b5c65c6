"""The run directory on disk: its layout, the writer lock, atomic writes and metrics (``run_dir``), and the
checkpoints in it (``checkpoint``). docs/runs.md."""
