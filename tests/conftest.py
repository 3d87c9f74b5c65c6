import os

# Tests run on the CPU, single-threaded XLA keeps timings and results steady on small machines.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
