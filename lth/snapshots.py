"""Mid-run snapshots: what a killed training run needs to continue exactly where it was.

A snapshot is two files beside the run's other results, ``<stem>.safetensors`` and ``<stem>.json``:

* tensors: ``state.<key>`` the module's training state (:func:`training_state`: an ensemble's stacked
  parameters and buffers, a supermask's scores, scales and mask-sampling generators), ``opt.<pid>.<k>``
  the optimizers' tensors (:func:`flatten_optimizer_state`), ``cap.<step>.<member>.<name>``
  member states captured for rewinding, ``best.<member>.<name>`` the early-stop states of
  ``test_at="best"`` (:mod:`lth.best`);
* JSON: ``step``, ``train_seconds``, the optimizers' other state, the results rows so far, the captured
  steps and the member count.

The JSON is written last (each file atomically), so a snapshot counts only once both are whole. Data
order is a function of the step, so a run continued from a snapshot is bit-identical to an uninterrupted
one (tested for the lottery and the supermask). A snapshot that cannot be read (cut short, from another
version, another member count) is discarded with a warning and the work redone from its start. One is
written at an evaluation when at least ``every`` seconds have passed since the last, and between
evaluations when ``between`` seconds have (at any step: a run killed between two far-apart evaluations,
e.g. a translation level's 250 steps, loses at most ``between`` seconds of work); long runs resume
mid-level, short ones never pay for the writes.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from .io import atomic_save_tensors, atomic_write_json, load_tensors

SNAPSHOT_SECONDS = 60.0
BETWEEN_EVALS_SECONDS = 900.0


def training_state(model) -> dict[str, torch.Tensor]:
    """What changes while ``model`` trains: its own ``training_state()`` where it declares one, else its
    ``state_dict`` without the frozen template (``base.*``)."""
    if hasattr(model, "training_state"):
        return model.training_state()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("base.")}


def load_training_state(model, state: dict[str, torch.Tensor]) -> None:
    mine = training_state(model)
    bad = [k for k, v in mine.items() if k in state and v.shape != state[k].shape]
    if bad:  # checked before anything is copied (copy_ would broadcast a [1, ...] over the members)
        raise ValueError(f"{bad[0]}: shape {tuple(state[bad[0]].shape)}, not {tuple(mine[bad[0]].shape)}")
    if hasattr(model, "load_training_state"):
        model.load_training_state(state)
        return
    if set(mine) != set(state):
        raise ValueError(f"snapshot holds {sorted(set(state) ^ set(mine))[:3]} ... not in this model")
    with torch.no_grad():
        for k, v in mine.items():
            v.copy_(state[k])


def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer ``state_dict`` as (tensors for safetensors, JSON-able rest): no pickle needed."""
    tensors, state = {}, {}
    for pid, st in sd["state"].items():
        state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                state[str(pid)][k] = v
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {int(pid): dict(st) for pid, st in meta["state"].items()}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


class Snapshots:
    """The snapshot of one training run (a lottery level, a supermask group) at ``<path stem>``."""

    def __init__(self, stem: Path, *, writer: bool = True, every: float = SNAPSHOT_SECONDS,
                 between: float = BETWEEN_EVALS_SECONDS):
        self.tensors, self.meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        self.writer, self.every, self.between = writer, every, between
        self._last = time.monotonic()

    def save(self, step: int, model, state: dict, rows: list[dict]) -> None:
        if not self.writer:
            return
        tensors, opt_meta = flatten_optimizer_state(state["optimizer"])
        tensors.update({f"state.{k}": v.detach().cpu().contiguous() for k, v in training_state(model).items()})
        for s, members in state["captured"].items():
            for i, m in enumerate(members):
                tensors.update({f"cap.{s}.{i}.{n}": v for n, v in m.items()})
        extra = {}
        if "best" in state:  # lth.best: each member's early-stop state so far
            best = state["best"]
            for i, m in enumerate(best["states"]):
                tensors.update({f"best.{i}.{n}": v for n, v in (m or {}).items()})
            extra["best"] = {"steps": best["steps"], "values": [v if v == v and abs(v) != float("inf") else None
                                                                for v in best["values"]]}
        tensors.update({f"hook.{k}": v.detach().cpu().contiguous() for k, v in state.get("hook", {}).items()})
        atomic_save_tensors(tensors, self.tensors)
        atomic_write_json(self.meta, {"step": step, "train_seconds": state["train_seconds"], "optimizer": opt_meta,
                                      "rows": json.loads(json.dumps(rows)), "captured": sorted(state["captured"]),
                                      "members": model.members, **extra})

    def callback(self, model, rows: list[dict]):
        """``snapshot(step, state)`` for :func:`lth.train.train`: saves at most once every ``every`` s.
        ``snapshot.due()`` says whether one is due between evaluations (``between`` s since the last; never
        on a process that does not write, so it needs no agreement between processes)."""

        def snapshot(step, state):
            if time.monotonic() - self._last >= self.every:
                self.save(step, model, state, rows)
                self._last = time.monotonic()

        snapshot.due = lambda: self.writer and time.monotonic() - self._last >= self.between
        return snapshot

    def load(self, model):
        """``(step, resume state, rows)`` with ``model`` holding the snapshot's weights, or None."""
        if not (self.tensors.exists() and self.meta.exists()):
            return None
        backup = {k: v.detach().clone() for k, v in training_state(model).items()}
        try:
            m = json.loads(self.meta.read_text())
            if m["members"] != model.members:
                raise ValueError(f"{m['members']} members, not {model.members}")
            if not all(isinstance(r, dict) and int(r["step"]) >= 0 for r in m["rows"]) or int(m["step"]) < 0:
                raise ValueError("rows or step out of place")
            tensors = load_tensors(self.tensors)
            captured = {int(s): [{k.split(".", 3)[3]: v for k, v in tensors.items() if k.startswith(f"cap.{s}.{i}.")}
                                 for i in range(m["members"])] for s in m["captured"]}
            state = {"optimizer": unflatten_optimizer_state(tensors, m["optimizer"]),
                     "train_seconds": float(m["train_seconds"]), "captured": captured}
            if "best" in m:
                b = m["best"]
                state["best"] = {"steps": b["steps"],
                                 "values": [float("nan") if v is None else v for v in b["values"]],
                                 "states": [{k.split(".", 2)[2]: v for k, v in tensors.items()
                                             if k.startswith(f"best.{i}.")} if s >= 0 else None
                                            for i, s in enumerate(b["steps"])]}
            hook = {k[5:]: v for k, v in tensors.items() if k.startswith("hook.")}
            if hook:  # a stateful training hook's tensors (lth.gradual's masks)
                state["hook"] = hook
            step, rows = int(m["step"]), list(m["rows"])
            # last: the model changes only once everything else has been read
            load_training_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
            return step, state, rows
        except Exception as exc:  # noqa: BLE001 - any unreadable snapshot: redo the work from its start
            try:  # a load that failed half way leaves the weights the model started with
                load_training_state(model, backup)
            except Exception:  # noqa: BLE001 - nothing was loaded: the backup is the model's own state
                pass
            warnings.warn(f"{self.meta.name}: discarding an unreadable snapshot ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); redoing this part from its start")
            return None

    def drop(self) -> None:
        if self.writer:
            for p in (self.tensors, self.meta):
                p.unlink(missing_ok=True)
