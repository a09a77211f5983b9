"""Gems kernels captured in a CUDA graph and replayed: no allocation or host sync that capture forbids,
and the replay reads the inputs' new contents (GPU only)."""

from __future__ import annotations

import pytest
import torch

import flag_gems
from flag_gems.testing import assert_close, served

DEVICE = flag_gems.device

pytestmark = pytest.mark.skipif(DEVICE == "cpu", reason="CUDA graphs: GPU only")

# What a decoding step calls, one of each kind, and what a training step adds.
INFERENCE_OPS = ("add", "mul", "silu", "sum", "_softmax", "mm", "rms_norm", "layer_norm")
TRAINING_OPS = ("add", "mul", "silu", "_softmax", "mm", "native_layer_norm", "native_layer_norm_backward",
                "mse_loss", "mse_loss_backward", "silu_backward")


def _step(x, w, norm_w, target, grad: bool):
    h = torch.nn.functional.rms_norm(x, (x.shape[-1],), norm_w)
    h = torch.nn.functional.silu(h @ w) * 0.5 + x
    p = torch.softmax(h, -1)
    h = torch.nn.functional.layer_norm(h + p, (h.shape[-1],), norm_w)
    if not grad:
        return h, h.sum(-1)
    loss = torch.nn.functional.mse_loss(h, target)
    loss.backward()
    return loss, norm_w.grad


def _inputs(dtype):
    n = 256
    return (torch.randn(16, n, dtype=dtype), torch.randn(n, n, dtype=dtype) / 16,
            torch.rand(n, dtype=dtype) + 0.5, torch.randn(16, n, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_capture_and_replay_match_aten(dtype, grad):
    x, w, norm_w, target = _inputs(dtype)
    norm_w.requires_grad_(grad)
    with served(*(TRAINING_OPS if grad else INFERENCE_OPS)):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compiles and warms the autograd engine outside the capture
            _step(x, w, norm_w, target, grad)
        torch.cuda.current_stream().wait_stream(side)
        norm_w.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = _step(x, w, norm_w, target, grad)
    fresh = _inputs(dtype)
    for tensor, new in zip((x, w, target), (fresh[0], fresh[1], fresh[3])):
        tensor.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    if grad:
        norm_w.grad = None
    expected = _step(x, w, norm_w, target, grad)
    for got, want in zip(outputs, expected):
        assert_close(got, want, dtype, reduce_dim=x.shape[-1])
