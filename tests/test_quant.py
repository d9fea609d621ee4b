import torch

from lth.quant import int8_zlib, quantize_row_int8


def test_row_int8_error_is_at_most_half_a_step_per_row():
    w = torch.randn(16, 64)
    q, s = quantize_row_int8(w)
    err = (q.float() * s.float()[:, None] - w).abs()
    assert torch.all(err <= s.float()[:, None] / 2 + 1e-6) and q.dtype == torch.int8


def test_int8_zlib_is_smaller_than_float32_and_dequantizes_close():
    state = {"a.weight": torch.randn(64, 64), "a.scale": torch.rand(64)}
    nbytes, deq = int8_zlib(state)
    assert nbytes < (64 * 64 + 64) * 4 / 3
    assert torch.allclose(deq["a.weight"], state["a.weight"], atol=0.03)
    assert torch.allclose(deq["a.scale"], state["a.scale"], atol=1e-3)


def test_zero_rows_survive_quantization():
    w = torch.zeros(4, 8)
    w[1] = 1.0
    _, deq = int8_zlib({"w": w})
    assert torch.all(deq["w"][[0, 2, 3]] == 0) and torch.allclose(deq["w"][1], w[1], rtol=1e-3)
