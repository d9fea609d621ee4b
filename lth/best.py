"""Test metrics at the early-stop state only (``Config.test_at = "best"``).

Evaluating the test split at every evaluation can cost as much as the training between two evaluations
(the CNN track: 15,000 evaluated images against 5,000 trained on). With ``test_at="best"``:

* an evaluation computes the validation split only;
* each member's state (parameters and buffers) at its best value of the task's early-stop column
  (:class:`lth.metrics.MetricSpec`: ``early_stop``, ``mode``; strictly better only, so ties keep the
  earliest step and a non-finite value never wins, the rule ``lth report`` picks rows by) is kept, a
  copy in memory and in mid-run snapshots;
* at the end of training the test split is evaluated twice per member: at the final state and at that
  best state. Their ``test_*`` columns are filled into the rows of those two steps; the rows of other
  steps leave them empty.

So ``lth report`` reads the same test accuracy at early stop as with ``test_at="every"`` (the default),
for a fraction of the evaluation time.
"""

from __future__ import annotations

import math

import torch

MODES = ("every", "best")


class BestStates:
    """Each member's best early-stop value so far, the step it came at and a copy of its state."""

    def __init__(self, members: int, column: str, mode: str):
        self.column, self.mode = column, mode
        self.steps: list[int] = [-1] * members
        self.values: list[float] = [math.inf if mode == "min" else -math.inf] * members
        self.states: list[dict[str, torch.Tensor] | None] = [None] * members

    def better(self, value: float, i: int) -> bool:
        if not math.isfinite(value):
            return False
        return value < self.values[i] if self.mode == "min" else value > self.values[i]

    def update(self, step: int, metrics: dict, ens) -> None:
        for i, v in enumerate(metrics[self.column].tolist()):
            if self.better(float(v), i):
                self.steps[i], self.values[i], self.states[i] = step, float(v), ens.member_state(i)

    @torch.no_grad()
    def evaluate(self, ens, fn) -> dict[str, torch.Tensor]:
        """``fn(ens)`` (an evaluation) with every member at its best state; ``ens`` is left as it was."""
        now = [ens.member_state(i) for i in range(len(self.steps))]
        for i, s in enumerate(self.states):
            if s is not None:
                ens.load_member(i, s)
        try:
            return fn(ens)
        finally:
            for i, s in enumerate(now):
                ens.load_member(i, s)

    # --- snapshots ---------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"steps": list(self.steps), "values": list(self.values), "states": list(self.states)}

    def load(self, state: dict) -> None:
        start = math.inf if self.mode == "min" else -math.inf  # a member with no best yet
        self.steps = [int(s) for s in state["steps"]]
        self.values = [float(v) if math.isfinite(float(v)) else start for v in state["values"]]
        self.states = list(state["states"])
        if not len(self.steps) == len(self.values) == len(self.states):
            raise ValueError("best states: steps, values and states differ in length")


def fill_test(rows: list[dict], keys: list[tuple], step: int, final: dict, best_steps: list[int],
              best: dict) -> None:
    """Write the test metrics into ``rows``: ``keys[i]`` is the ``(field, value)`` pairs that identify
    member ``i``'s rows; ``final`` and ``best`` are ``[M]`` metrics at ``step`` and at ``best_steps[i]``."""
    for i, key in enumerate(keys):
        for at, metrics in ((step, final), (best_steps[i], best)):
            for r in rows:
                if int(r["step"]) == at and all(r.get(k) == v for k, v in key):
                    r.update({k: round(float(v[i]), 6) for k, v in metrics.items()})
