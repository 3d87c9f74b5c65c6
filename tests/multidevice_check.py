"""Run by tests/test_parallel.py in a process with 4 CPU devices (XLA_FLAGS set before JAX starts).

Prints one JSON line: how the sharded SGD step compares with the single-device one, the metric rows of a
tiny run trained on 4 devices and on 1, and where each run's training loop held its state (the buffer
split across the devices, the learner replicated), so that a run that ignored the mesh fails the check;
and the same for 4 packed seeds split over the 4 devices against the same group on one device.
"""

import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from helpers import TINY, without_timing  # noqa: E402

from rlscale.agents.crl import CRL  # noqa: E402
from rlscale.config import TrainConfig  # noqa: E402
from rlscale.data.buffer import Transitions  # noqa: E402
from rlscale.storage import run_dir as rd  # noqa: E402
from rlscale.training import loop as train_module  # noqa: E402
from rlscale.training import parallel  # noqa: E402
from rlscale.training.loop import train  # noqa: E402
from rlscale.training.trainer import Trainer  # noqa: E402

assert len(jax.devices()) == 4, jax.devices()
cfg = TrainConfig(**{**TINY, "batch_size": 64})
spec = Trainer(cfg).spec
agent = CRL.build(cfg, spec)
learner = agent.init(jax.random.PRNGKey(0))
k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
batch = Transitions(
    state=jax.random.normal(k1, (cfg.batch_size, spec.state_size)),
    action=jax.random.uniform(k2, (cfg.batch_size, spec.action_size), minval=-1, maxval=1),
    goal=jax.random.normal(k3, (cfg.batch_size, len(spec.goal_indices))),
)
step = jax.jit(agent.sgd_step)
single, single_metrics = step(learner, batch, jax.random.PRNGKey(2))

mesh = parallel.make_mesh(4)
sharded_batch = jax.device_put(batch, parallel.split_axis(mesh, 0))
replicated_learner = jax.device_put(learner, parallel.replicated(mesh))
sharded, sharded_metrics = step(replicated_learner, sharded_batch, jax.random.PRNGKey(2))
gap = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / (np.abs(np.asarray(b)) + 1e-3)))
    for a, b in zip(jax.tree.leaves((sharded.actor_params, sharded.critic_params)), jax.tree.leaves((single.actor_params, single.critic_params)))
)
params_moved = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(single.critic_params), jax.tree.leaves(learner.critic_params))
)


def data_parallel_placement(state) -> dict:
    """Where a training state lives: the replay buffer's stored steps (obs, action, trajectory ids) split
    across the mesh's devices, every learner array replicated on all of them."""
    stored = [state.buffer.obs, state.buffer.action, state.buffer.traj_id]
    learner_leaves = jax.tree.leaves(state.learner)
    return {
        "buffer_split_over_4": all(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated for x in stored),
        "learner_replicated_on_4": all(len(x.sharding.device_set) == 4 and x.sharding.is_fully_replicated for x in learner_leaves),
    }


# The state the training loop itself holds after each epoch (not a state this script placed).
trained_states = []
_train_epoch = train_module._train_epoch


def _capturing_train_epoch(*args, **kwargs):
    states, progress = _train_epoch(*args, **kwargs)
    trained_states.append(states[0])  # one seed group: data parallelism takes the devices
    return states, progress


train_module._train_epoch = _capturing_train_epoch
runs = tempfile.mkdtemp()
rows, placement = {}, {}
for n in (4, 1):
    trained_states.clear()
    run = train(TrainConfig(**{**TINY, "run_dir": f"{runs}/devices{n}"}), num_devices=n)
    rows[n] = [without_timing(r) for r in rd.read_metrics(run)]
    placement[n] = data_parallel_placement(trained_states[-1])
# Seeds across devices: 4 seeds in one group, split over the 4 devices (the default for --num-seeds 4
# here), against the same group of 4 on one device.
seed_rows, seed_placement = {}, {}
for devices in (None, 1):
    trained_states.clear()
    paths = train_module.train_seeds(TrainConfig(**{**TINY, "run_dir": f"{runs}/seeds_on_{devices}"}), 4,
                                     seed_devices=devices, seed_threads=1 if devices == 1 else None)
    seed_rows[str(devices)] = [[without_timing(r) for r in rd.read_metrics(p)] for p in paths]
    seed_placement[str(devices)] = all(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated
                                       for x in jax.tree.leaves(trained_states[-1]))
try:
    train_module.train_seeds(TrainConfig(**{**TINY, "run_dir": f"{runs}/three"}), 4, seed_devices=3)
    seed_devices_error = ""
except ValueError as err:
    seed_devices_error = str(err)
try:
    Trainer(TrainConfig(**{**TINY, "num_envs": 6}), mesh)
    indivisible_error = ""
except ValueError as err:
    indivisible_error = str(err)
print(json.dumps({
    "relative_gap": gap,
    "params_moved": params_moved,
    "loss_gap": abs(float(sharded_metrics["critic_loss"]) - float(single_metrics["critic_loss"])),
    "rows": {str(n): r for n, r in rows.items()},
    "placement": {str(n): p for n, p in placement.items()},
    "indivisible_error": indivisible_error,
    "seed_rows": seed_rows,
    "seed_placement": seed_placement,
    "seed_devices_error": seed_devices_error,
    "three_written": Path(f"{runs}/three").exists(),
}))
