"""Make the committed test dataset tests/data/point_u_maze_crl_d4.npz (GCBC's learning test).

    python tests/make_datasets.py [--out tests/data/point_u_maze_crl_d4.npz]

Trains CRL as the learning tests do (depth 4, width 64, 650 k env steps on point_u_maze's CPU preset, seed
0; helpers.learn_point_u_maze) in a temporary folder, then records 64 stochastic episodes of its final
checkpoint on point_u_maze (`rlscale record`). About 4 minutes on a 2-core CPU. An existing file is never
replaced: remove it first to remake it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import learn_point_u_maze  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "data" / "point_u_maze_crl_d4.npz"
EPISODES = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    from rlscale.data import datasets
    from rlscale.evaluation.policy import load

    if out.exists():
        raise SystemExit(f"{out} exists; remove it to remake it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows, seconds = learn_point_u_maze(Path(tmp) / "crl")
        print(f"trained in {seconds:.0f} s; last success-any {rows[-1]['eval/episode_success_any']:.2f}")
        held = datasets.record(load(Path(tmp) / "crl"), EPISODES, out)
    print(f"{out}: {held}")


if __name__ == "__main__":
    main()
