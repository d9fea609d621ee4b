"""Killing a run right after one of its snapshots, as a crash or a kill -9 would, for resume tests."""

import pytest


class Killed(Exception):
    """Raised in place of the process dying."""


def kill_after_snapshot(monkeypatch, run, step: int, level_dir: str | None = None) -> None:
    """Call ``run()`` with a snapshot at every evaluation, dying right after the one at ``step`` (in
    ``level_dir``, e.g. ``"level_01"``, when given); snapshot saving is restored afterwards, so the
    next ``run()`` resumes. Fails the test if the run did not get that far."""
    from lth import lottery
    from lth.snapshots import Snapshots

    monkeypatch.setattr(lottery, "SNAPSHOT_SECONDS", 0.0)
    save = Snapshots.save

    def save_then_die(self, at, *a):
        save(self, at, *a)
        if at == step and (level_dir is None or self.meta.parent.name == level_dir):
            raise Killed

    monkeypatch.setattr(Snapshots, "save", save_then_die)
    try:
        with pytest.raises(Killed):
            run()
    finally:
        monkeypatch.setattr(Snapshots, "save", save)
