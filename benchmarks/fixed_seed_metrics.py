"""Fixed-seed tiny runs of every algorithm (and of CRL offline and with a collector), their metrics without
timings: run it in two checkouts (a refactor's before and after) on one machine and compare.

    python benchmarks/fixed_seed_metrics.py OUT_DIR            # trains 8 tiny runs (~3 min on 2 CPU cores)
    python benchmarks/fixed_seed_metrics.py --compare A B      # the two OUT_DIRs: names and every metric equal?

To run a pinned clone's code, put the clone first: ``PYTHONPATH=CLONE python CLONE/benchmarks/...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny run settings


def train_all(out_dir: Path) -> None:
    from helpers import TINY, without_timing

    from rlscale.config import config_for
    from rlscale.storage import run_dir as rd
    from rlscale.training.loop import train

    out_dir.mkdir(parents=True, exist_ok=False)
    data = str(REPO / "tests" / "data" / "point_u_maze_crl_d4.npz")
    cases = {algo: {"algo": algo} for algo in ("crl", "sac", "sac_her", "td3_her", "gcsl")}
    cases |= {"gcbc": {"algo": "gcbc", "dataset": data}, "crl_offline": {"algo": "crl", "dataset": data},
              "crl_collector": {"algo": "crl", "collector_depth": 8}}
    result = {}
    for name, extra in cases.items():
        options = {k: v for k, v in TINY.items() if k != "env"}
        cfg = config_for("point_u_maze", **{**options, **extra, "seed": 7, "run_dir": str(out_dir / name)})
        rows = rd.read_metrics(train(cfg))
        result[name] = {"run_name": cfg.default_run_name(), "rows": [without_timing(r) for r in rows]}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> bool:
    before, after = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    same = True
    for name in before:
        names_equal = before[name]["run_name"] == after.get(name, {}).get("run_name")
        rows_equal = before[name]["rows"] == after.get(name, {}).get("rows")
        same &= names_equal and rows_equal
        print(f"{name:14s} run name {'same' if names_equal else 'DIFFERS'}, metrics {'identical' if rows_equal else 'DIFFER'}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        return 0 if compare(*args.compare) else 1
    if args.out is None:
        parser.error("give OUT_DIR, or --compare A B")
    train_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
