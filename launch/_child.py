"""``python -S launch/_child.py PARENT_PID COMMAND...``: exec COMMAND so that it receives SIGTERM when the
process that started it dies (Linux ``PR_SET_PDEATHSIG``; the setting survives ``exec``).

A training process whose launcher, Ray worker or Slurm job died then finishes its epoch, saves a
checkpoint and exits (``rlscale train`` handles SIGTERM), instead of training on unsupervised. Elsewhere
than Linux the command is simply exec'd.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, command = int(sys.argv[1]), sys.argv[2:]
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(75)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
