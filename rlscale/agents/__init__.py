"""The algorithms rlscale trains (``--algo``), one module each, behind one registry.

- ``registry.py``: the :class:`Agent` interface the trainer drives and the :class:`Algorithm` entry the rest of
  rlscale reads (defaults, where its data comes from, parameter count, FLOPs, inference function).
- ``common.py``: what several share (the optimiser step, Polyak targets, the TD target, the twin-Q base, the
  actor and α losses of CRL and SAC).
- ``crl.py`` (the default) and ``contrastive.py`` (its energies and contrastive losses), ``sac.py`` (sac, sac_her), ``td3.py`` (td3_her), ``gcsl.py`` (gcsl, gcbc).

A new method is one module that builds its agent and calls :func:`register`, plus its name in the import
line below (``tests/test_agents.py`` registers one from a file of its own and trains it).
"""

from rlscale.agents.registry import DEFAULT, Agent, Algorithm, Scaled, build, get, names, register, sgd_steps, unregister

from rlscale.agents import crl, sac, td3, gcsl  # noqa: E402,F401  (registers the built-in algorithms, in this order)

__all__ = ["DEFAULT", "Agent", "Algorithm", "Scaled", "build", "get", "names", "register", "sgd_steps", "unregister"]
