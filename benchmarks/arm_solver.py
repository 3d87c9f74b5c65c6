"""Does a fixed solver iteration count keep the arm's physics? (docs/tasks.md#arm-tasks)

MJX's Newton solver runs a ``while_loop`` that stops after ``iterations`` (6 in ``envs/assets/arm.xml``) or
once the cost stops improving; on a GPU such a loop reads its predicate back to the host on every iteration
(docs/method.md#no-host-syncs). With ``iterations = 1`` MJX runs one Newton step and no loop. This rolls out
the same envs with the same random actions under both and reports how far the trajectories part: the
gripper (link7) and, with a cube, the cube positions, per step of the episode.

    python benchmarks/arm_solver.py                      # arm_push_easy and arm_binpick_easy, 32 envs, 100 steps

Writes ``benchmarks/results/arm_solver_<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from rlscale import envs
from rlscale.storage.run_dir import write_atomic


def rollout(task, num_envs: int, steps: int, seed: int) -> np.ndarray:
    """Observations ``[steps + 1, num_envs, obs]`` under uniform random actions, the keys fixed by ``seed``."""
    reset_key, action_key = jax.random.split(jax.random.PRNGKey(seed))
    actions = jax.random.uniform(action_key, (steps, num_envs, task.spec.action_size), minval=-1.0, maxval=1.0)

    @jax.jit
    def run(keys, actions):
        state = jax.vmap(task.reset)(keys)

        def body(state, action):
            state = jax.vmap(task.step)(state, action)
            return state, state.obs

        _, observations = jax.lax.scan(body, state, actions)
        return jnp.concatenate([state.obs[None], observations])

    return np.asarray(run(jax.random.split(reset_key, num_envs), actions))


def with_iterations(task, iterations: int):
    task.mj_model.opt.iterations = iterations
    task.mjx_model = mjx.put_model(task.mj_model)
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["arm_push_easy", "arm_binpick_easy"])
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.tasks:
        documented = envs.make(name)
        iterations = int(documented.mj_model.opt.iterations)
        reference = rollout(documented, args.num_envs, args.steps, seed=0)
        fixed = rollout(with_iterations(envs.make(name), 1), args.num_envs, args.steps, seed=0)
        # The state's first 3 entries are the cube's position with a cube, else link7's (envs/arm.py).
        position = slice(0, 3)
        apart = np.linalg.norm(fixed[..., position] - reference[..., position], axis=-1)  # [steps + 1, envs]
        finite = np.isfinite(apart)  # a blown-up simulation leaves NaN: counted apart, not in the distances
        row = {"task": name, "documented_iterations": iterations, "fixed_iterations": 1,
               "num_envs": args.num_envs, "steps": args.steps,
               "position_compared": "cube" if documented.has_cube else "link7",
               "max_apart_m_at_step": {str(s): float(apart[s][finite[s]].max(initial=0.0))
                                       for s in (1, 10, 25, 50, args.steps) if s <= args.steps},
               "median_apart_m_at_end": float(np.median(apart[-1][finite[-1]])) if finite[-1].any() else None,
               "envs_non_finite_at_end": {"documented": int((~np.isfinite(reference[-1]).all(-1)).sum()),
                                          "fixed": int((~np.isfinite(fixed[-1]).all(-1)).sum())}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    backend = jax.default_backend()
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"arm_solver_{backend}.json"
    payload = {"benchmark": "arm_solver", "machine": {"device": backend, "platform": platform.platform(),
                                                    "processor": platform.processor() or platform.machine()},
               "jax": jax.__version__, "results": rows}
    write_atomic(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
