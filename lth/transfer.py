"""Transfer: fine-tune a TARGET task under a SOURCE task's ticket (Chen et al. 2020, section 5 and Figure 2:
TRANSFER(S, T)).

``lth train TARGET_PRESET --ticket SOURCE.ticket`` is a transfer when the target config's ``dataset`` is not
the one the ticket was found on (``meta["dataset"]``), or with ``--transfer``; otherwise ``--ticket``
retrains the ticket's own subnetwork as before (``lth.lottery.run``). Specification of a transfer:

- The run is the TARGET's: its config as given (dataset, model and head, seed, trials, training),
  level 0 only (``lth train``), no controls.
- θ0 is the target's weight source: a pre-trained checkpoint (plus the target's own head, drawn from the
  run's seed by the model's ``seeded_parameters()``), or the seed. The ticket must have been found from
  the same θ0: with ``weights=checkpoint:PATH`` the ticket's ``meta["weights_source"]["sha256"]`` must
  equal the target's ``weights_sha256``; a seed-derived target needs a seed-derived ticket. Anything else
  is one line naming both (:func:`check`), before the run directory is touched.
- Masks (:func:`masks_for`): for every parameter the ticket masks that the target model has with the same
  shape (BERT: the encoder's matrices; never a head of another size), the ticket's mask; every other
  prunable parameter of the target stays dense. A ticket none of whose masks fits is refused in one line.
- Record (:func:`configure`): ``Config.transfer_source = {"ticket", "sha256", "dataset", "sparsity",
  "level", "experiment"}`` (the ticket file's path and SHA-256, the source task, the ticket's sparsity
  over its masks, its level and branch) goes into the run's ``config.json``; the ``remaining`` column of
  ``results.csv`` is the density of the masks the target trains under.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .errors import ConfigError


def is_transfer(cfg, ticket, flag: bool = False) -> bool:
    """Whether ``--ticket`` on this target config is a transfer (another dataset, or ``--transfer``)."""
    return ticket is not None and (flag or ticket.meta.get("dataset", cfg.dataset) != cfg.dataset)


def sparsity(masks) -> float:
    """The fraction of the masked entries that are pruned."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total if total else 0.0


def check(cfg, ticket) -> None:
    """One-line ConfigError unless the ticket was found from the target's θ0 (module docstring)."""
    from . import sources

    mine, _ = sources.parse(cfg.weights)
    theirs = dict(ticket.meta.get("weights_source") or {"kind": "seed"})
    if theirs.get("kind") != mine or mine not in ("seed", "checkpoint"):
        raise ConfigError(f"transfer: the ticket's θ0 is {theirs.get('kind')}, the target's {cfg.weights or 'seed'}: "
                          "a ticket transfers onto the θ0 it was found from (a checkpoint or the seed)")
    if mine == "checkpoint" and str(theirs.get("sha256", "")).lower() != str(cfg.weights_sha256).lower():
        raise ConfigError(f"transfer: the ticket was found from checkpoint {theirs.get('name', theirs.get('path'))} "
                          f"(SHA-256 {theirs.get('sha256')}), the target starts from {cfg.weights} (SHA-256 "
                          f"{cfg.weights_sha256}): a different checkpoint")


def configure(cfg, ticket, path=None):
    """The target config of a transfer: checked (:func:`check`), no controls, the source recorded."""
    from .sources import sha256_file

    check(cfg, ticket)
    record = {"ticket": None if path is None else str(path), "sha256": None if path is None else sha256_file(path),
              "dataset": ticket.meta.get("dataset"), "sparsity": round(sparsity(ticket.masks), 6),
              "level": ticket.meta.get("level"), "experiment": ticket.meta.get("experiment")}
    return dataclasses.replace(cfg, controls=[], transfer_source=record)


def masks_for(ticket_masks: dict, template: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The target's masks: the ticket's where the target has that parameter with that shape, else dense."""
    params = dict(template.named_parameters())
    fits = {n: m.bool().clone() for n, m in ticket_masks.items() if n in params and m.shape == params[n].shape}
    if not fits:
        raise ConfigError(f"transfer: none of the ticket's {len(ticket_masks)} masks names a parameter of the "
                          f"target model with its shape")
    out = {n: fits[n] if n in fits else torch.ones(params[n].shape, dtype=torch.bool) for n in names}
    return {**out, **fits}  # the target's order first; a masked parameter it would not prune, after
