"""The CRL critic's pairwise L2 energy: the matrix-product form (``rlscale.agents.contrastive.energy``) against
the definition through the ``[B, B, D]`` tensor of differences, alone and inside a whole SGD step.

Both forms run in one process, their timed calls interleaved, so the ratios are what to read (this
machine's timings are noisy). The SGD step is ``CRL.sgd_step`` (actor, α and both critic encoders)
on a point-maze-sized minibatch, with ``rlscale.agents.contrastive.energy`` swapped for the definition.

    python benchmarks/energy.py                                   # batch 256 and 1024, CPU-scale nets
    python benchmarks/energy.py --batch-sizes 256 --nets 4x64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np

from rlscale.agents import contrastive
from rlscale.agents.crl import CRL
from rlscale.config import config_for
from rlscale.data.buffer import Transitions
from rlscale.sizes import task_spec
from rlscale.storage.run_dir import write_atomic


def energy_by_differences(sa_repr, g_repr, kind="l2"):
    if kind != "l2":
        return ENERGY_AS_SHIPPED(sa_repr, g_repr, kind)
    return -jnp.sqrt(jnp.sum(jnp.square(sa_repr[:, None, :] - g_repr[None, :, :]), axis=-1) + 1e-12)


ENERGY_AS_SHIPPED = contrastive.energy
FORMS = {"matrix_product": ENERGY_AS_SHIPPED, "differences": energy_by_differences}


def interleaved_ms(calls: dict, repeats: int) -> dict:
    """Median milliseconds per call of each function, calls alternating between them."""
    for call in calls.values():
        jax.block_until_ready(call())  # compile and warm up
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def critic_loss_ms(batch: int, repr_dim: int, repeats: int) -> dict:
    phi = jax.random.normal(jax.random.PRNGKey(0), (batch, repr_dim))
    psi = phi + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (batch, repr_dim))

    def value_and_grad(energy):
        loss = lambda a, b: contrastive.contrastive_loss(energy(a, b), "forward_infonce", 0.1)[0]  # noqa: E731
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return lambda: step(phi, psi)

    return interleaved_ms({name: value_and_grad(energy) for name, energy in FORMS.items()}, repeats)


def sgd_step_ms(env: str, depth: int, width: int, batch: int, repeats: int, steps_per_call: int) -> dict:
    spec = task_spec(env)
    cfg = config_for(env, depth=depth, width=width, batch_size=batch)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    minibatch = Transitions(
        state=jax.random.normal(keys[0], (batch, spec.state_size)),
        action=jax.random.uniform(keys[1], (batch, spec.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (batch, spec.goal_size)),
    )
    calls = {}
    for name, energy in FORMS.items():
        contrastive.energy = energy  # traced now, so each compiled program keeps its own form
        try:
            agent = CRL.build(cfg, spec)
            learner = jax.jit(agent.init)(jax.random.PRNGKey(0))

            def k_steps(learner, key, agent=agent):
                body = lambda l, k: (agent.sgd_step(l, minibatch, k)[0], None)  # noqa: E731
                return jax.lax.scan(body, learner, jax.random.split(key, steps_per_call))[0]

            compiled = jax.jit(k_steps).lower(learner, jax.random.PRNGKey(2)).compile()
        finally:
            contrastive.energy = ENERGY_AS_SHIPPED
        calls[name] = lambda compiled=compiled, learner=learner: compiled(learner, jax.random.PRNGKey(3))
    return {name: ms / steps_per_call for name, ms in interleaved_ms(calls, repeats).items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--nets", nargs="+", default=["4x64", "16x64", "4x16"], help="DEPTHxWIDTH")
    parser.add_argument("--env", default="point_u_maze")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-call", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / f"energy_{jax.default_backend()}.json")
    args = parser.parse_args(argv)
    rows = []
    for batch in args.batch_sizes:
        ms = critic_loss_ms(batch, 64, args.repeats)
        rows.append({"what": "critic_loss_value_and_grad", "batch_size": batch, "repr_dim": 64, "ms": ms})
        print(f"critic loss, batch {batch}: {ms}", flush=True)
        for net in args.nets:
            depth, width = (int(x) for x in net.split("x"))
            ms = sgd_step_ms(args.env, depth, width, batch, args.repeats, args.steps_per_call)
            rows.append({"what": "sgd_step", "env": args.env, "depth": depth, "width": width, "batch_size": batch, "ms": ms})
            print(f"SGD step, depth {depth} width {width} batch {batch}: {ms}", flush=True)
    for row in rows:
        row["speedup"] = row["ms"]["differences"] / row["ms"]["matrix_product"]
    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": jax.local_device_count(),
                    "backend": jax.default_backend(), "device": str(jax.devices()[0]), "jax": jax.__version__},
        "rows": rows,
    }
    write_atomic(args.out, json.dumps(payload, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
