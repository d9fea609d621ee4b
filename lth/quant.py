"""int8 + zlib: the parameter-golf baseline's way to ship a dense model, as a point of comparison for
tickets (a supermask ships 1 bit per weight; a dense model about 8 bits before zlib).

Matrices are quantized per row, symmetrically: ``q = round(w / s)`` with ``s = max|w_row| / 127``
(int8, scale stored as float16); 1-D parameters are stored as float16. The artifact is zlib level 9 of
all of it concatenated. :func:`int8_zlib` returns its size and the dequantized weights, so the model
can be evaluated exactly as it would be shipped.
"""

from __future__ import annotations

import zlib

import torch


def quantize_row_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, C] float -> (int8 [R, C], float16 scales [R]); rows of zeros get scale 1."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    s = (w2.abs().amax(dim=1) / 127.0).to(torch.float16).float()
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(w2 / s[:, None]), -127, 127).to(torch.int8)
    return q.reshape(w.shape), s.to(torch.float16)


def int8_zlib(state: dict[str, torch.Tensor], level: int = 9) -> tuple[int, dict[str, torch.Tensor]]:
    """(bytes of the zlib-compressed int8 artifact, dequantized float32 state) for a model's parameters."""
    parts, out = [], {}
    for name in sorted(state):
        w = state[name].detach().cpu()
        if w.dim() >= 2:
            q, s = quantize_row_int8(w)
            parts += [q.numpy().tobytes(), s.numpy().tobytes()]
            out[name] = (q.float().reshape(w.shape[0], -1) * s.float()[:, None]).reshape(w.shape)
        else:
            h = w.to(torch.float16)
            parts.append(h.numpy().tobytes())
            out[name] = h.float()
    return len(zlib.compress(b"".join(parts), level)), out
