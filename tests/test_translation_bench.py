"""bench/translation_lottery.py's checks (issue 12's shapes (a)-(d)) on synthetic summaries."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
tl = pytest.importorskip("translation_lottery")


def summary(bleu: dict) -> list[dict]:
    out = [{"method": "dense", "remaining": 1.0, "test_bleu_mean": bleu.pop("dense")}]
    for (method, s), v in bleu.items():
        out.append({"method": method, "remaining": round(1 - s, 6), "test_bleu_mean": v})
    return out


def paper_like(mp50=20.0):
    b = {"dense": 20.0}
    for s, slt in ((0.5, 20.0), (0.8, 19.0), (0.9, 17.0)):
        b.update({("slt", s): slt, ("clt", s): slt - 0.5, ("lt", s): slt - 1, ("reinit", s): slt - 8,
                  ("random", s): slt - 7, ("random-sign", s): slt - 5, ("mp", s): slt + (0.5 if s == 0.9 else 0),
                  ("slt_mp", s): slt + 1})
    b[("mp", 0.5)] = mp50
    return summary(b)


def test_a_paper_shaped_summary_passes_every_check():
    assert all(c["pass"] for c in tl.checks(paper_like()))


def test_slt_not_above_reinit_fails_check_a():
    s = paper_like()
    next(e for e in s if e["method"] == "reinit" and e["remaining"] == 0.2)["test_bleu_mean"] = 18.0
    assert [c["pass"] for c in tl.checks(s) if c["check"].startswith("(a)")] == [False, True]


def test_check_d_is_not_applicable_when_mp_is_far_below_dense():
    d = [c for c in tl.checks(paper_like(mp50=10.0)) if c["check"].startswith("(d)")]
    assert len(d) == 1 and d[0]["pass"] is None


def test_a_missing_method_leaves_its_checks_undecided():
    s = [e for e in paper_like() if e["method"] != "lt"]
    assert all(c["pass"] is None for c in tl.checks(s) if c["check"].startswith("(c)"))


def test_csc_bytes_count_values_row_indices_and_column_pointers():
    import torch

    m = torch.tensor([[True, False, False], [False, False, True]])
    assert tl.csc_bytes({"w": m}) == 2 * (4 + 4) + 4 * (3 + 1)
