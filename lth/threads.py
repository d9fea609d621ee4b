"""Threading defaults chosen before torch starts, so that several runs on one machine share it fairly.

OpenMP's default wait policy keeps idle worker threads spinning; two runs with one spinning pool
each on 2 cores took 92 s where one alone takes 13 s (``OMP_WAIT_POLICY=PASSIVE``: 16 s). torch
reads the OpenMP variables when it is first imported, so :func:`choose` must run before that (the
``lth`` command calls it first thing). What the user set wins: ``OMP_WAIT_POLICY`` and
``OMP_NUM_THREADS`` from the environment are left as they are, and a library user's own
``torch.set_num_threads`` is never overridden (nothing here calls it). :data:`CHOICE` is what was
chosen, recorded in each run's ``env.json``.
"""

from __future__ import annotations

import math
import os
import sys

CHOICE: dict = {}  # filled by choose(): what lth set and what the user had set


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota if one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def choose(environ=None) -> dict:
    """Set ``OMP_WAIT_POLICY=PASSIVE``, and ``OMP_NUM_THREADS`` to the available cores when the
    process is restricted to fewer than the machine's, where the user has not set them. Returns (and keeps in :data:`CHOICE`) what was chosen and what the user set."""
    env = os.environ if environ is None else environ
    user = {k: env[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in env}
    chosen = {}
    if "OMP_WAIT_POLICY" not in env:
        chosen["OMP_WAIT_POLICY"] = env["OMP_WAIT_POLICY"] = "PASSIVE"
    # the thread count: torch's default (one per physical core) unless this process may use fewer CPUs
    # than the machine has (taskset, a cgroup quota), which torch's default does not see
    if "OMP_NUM_THREADS" not in env and available_cores() < (os.cpu_count() or 1):
        chosen["OMP_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(available_cores())
    CHOICE.clear()
    CHOICE.update({"set_by_lth": chosen, "set_by_user": user,
                   "torch_imported_before": "torch" in sys.modules})  # True: too late, torch kept its own
    return dict(CHOICE)


def record() -> dict:
    """What ``env.json`` records: the choice above, the variables in effect and torch's thread count."""
    import torch

    return {**CHOICE,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "available_cores": available_cores()}
