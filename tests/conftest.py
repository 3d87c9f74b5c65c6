import os
import sys
import tempfile
from pathlib import Path

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One persistent XLA compilation cache for the whole session, shared with the training processes that
# tests start: many tests train identical tiny configurations, which then compile once.
# With pytest-xdist every worker process imports this file: they share the cache through the run's id.
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _run_id:
    _cache = Path(tempfile.gettempdir()) / f"rlscale_test_xla_cache_{_run_id}"
    _cache.mkdir(exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="rlscale_test_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared helpers module


# The longest test files first, so that the two test processes (pytest-xdist, a file per process at a
# time) do not end with one of them alone on a long file; every other file keeps its place.
LONGEST_FIRST = ["test_learning.py", "test_learning_variants.py", "test_train.py", "test_task_suite.py",
                 "test_sweep.py", "test_envs.py", "test_eval.py", "test_stitching.py", "test_analysis.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
