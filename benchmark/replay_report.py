"""Which calls replay (flag_gems.native), why the others do not, and their time per call against ATen's.

    python benchmark/replay_report.py [CASE ...] [--calls N]

Each case runs a few calls with new tensors under ``use_gems()`` (checked against ATen), then both sides'
time per call over ``--calls`` calls with one synchronize (the best of five loops), then the replay module's
counts for the overloads the case reaches. Diagnostics for issue work, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import flag_gems
from flag_gems import native

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmark.profile_host import per_call_us  # noqa: E402  (the best of five loops of calls)

aten = torch.ops.aten
DEV = flag_gems.device
BF16, F32 = torch.bfloat16, torch.float32


def _x(*shape, dtype=BF16):
    return torch.randn(*shape, dtype=dtype, device=DEV)


def _cross_entropy():
    x, t = _x(1, 32000), torch.randint(0, 32000, (1,), device=DEV)
    return lambda: F.cross_entropy(x, t)


def _layer_norm_backward():
    x, w, b, gy = _x(1, 4096), _x(4096), _x(4096), _x(1, 4096)
    _, mean, rstd = aten.native_layer_norm(x, [4096], w, b, 1e-5)
    return lambda: aten.native_layer_norm_backward(gy, x, [4096], mean, rstd, w, b, [True, True, True])


def _batch_norm_train():
    x, w, b = _x(2, 64, 16, 16, dtype=F32), _x(64, dtype=F32), _x(64, dtype=F32)
    rm, rv = torch.zeros(64, device=DEV), torch.ones(64, device=DEV)
    return lambda: F.batch_norm(x, rm, rv, w, b, training=True)


def _layer_norm_backward_64():
    x, w, b, gy = _x(64, 4096), _x(4096), _x(4096), _x(64, 4096)
    _, mean, rstd = aten.native_layer_norm(x, [4096], w, b, 1e-5)
    return lambda: aten.native_layer_norm_backward(gy, x, [4096], mean, rstd, w, b, [True, True, True])


def _batch_norm_backward():
    x, w, b, gy = _x(2, 64, 16, 16, dtype=F32), _x(64, dtype=F32), _x(64, dtype=F32), _x(2, 64, 16, 16, dtype=F32)
    rm, rv = torch.zeros(64, device=DEV), torch.ones(64, device=DEV)
    _, mean, invstd = aten.native_batch_norm(x, w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5)
    return lambda: aten.native_batch_norm_backward(gy, x, w, rm, rv, mean, invstd, True, 1e-5, [True, True, True])


def _rotary():
    q, k = _x(1, 1, 32, 128), _x(1, 1, 8, 128)
    cos, sin = _x(4096, 64, dtype=F32), _x(4096, 64, dtype=F32)
    positions = torch.tensor([[17]], device=DEV)

    def aten():
        c, s = cos[positions][..., None, :], sin[positions][..., None, :]
        return tuple(torch.cat([x[..., :64] * c - x[..., 64:] * s, x[..., 64:] * c + x[..., :64] * s], -1).to(x.dtype)
                     for x in (q, k))

    return lambda: flag_gems.apply_rotary_pos_emb(q, k, cos, sin, positions), aten


def _weight_norm_fused():
    v, g = _x(64, 4096), _x(64, 1)
    return lambda: flag_gems.weight_norm(v, g, 0), lambda: torch._weight_norm(v, g, 0)


def _cross_entropy_fused():
    x, t = _x(16, 128256), torch.randint(0, 128256, (16,), device=DEV)
    return lambda: flag_gems.cross_entropy_loss(x, t), lambda: F.cross_entropy(x, t)


def _public(gems, aten, *shapes):
    """A public function of ours (``gems``) against the ATen ops it stands for (``aten``), on the same inputs."""
    def make():
        tensors = [_x(*shape) for shape in shapes]
        return lambda: gems(*tensors), lambda: aten(*tensors)
    return make


def _glu_backward():
    x, gy = _x(1, 4096), _x(1, 2048)
    return lambda: aten.glu_backward(gy, x, -1)


def _unary(fn, *shape, dtype=BF16):
    def make():
        x = _x(*shape, dtype=dtype)
        return lambda: fn(x)
    return make


def _binary(fn, a_shape, b_shape, dtype=BF16):
    def make():
        a, b = _x(*a_shape, dtype=dtype), _x(*b_shape, dtype=dtype)
        return lambda: fn(a, b)
    return make


# name: (overloads reached, maker of a call with fresh tensors)
CASES = {
    "argmax_last": (["argmax"], _unary(lambda x: x.argmax(-1), 1, 4096)),
    "argmax_dim0": (["argmax"], _unary(lambda x: x.argmax(0), 4096, 1)),
    "argmax_all": (["argmax"], _unary(lambda x: x.argmax(), 64, 4096)),
    "sum_long_row": (["sum.dim_IntList"], _unary(lambda x: x.sum(-1), 1, 131072)),
    "softmax_long_row": (["_softmax"], _unary(lambda x: x.softmax(-1), 1, 131072)),
    "amax_dim0_64": (["amax"], _unary(lambda x: x.amax(0), 64, 4096)),
    "sum_dim0_64": (["sum.dim_IntList"], _unary(lambda x: x.sum(0), 64, 4096)),
    "celu": (["celu", "elu"], _unary(lambda x: F.celu(x, 0.5), 1, 4096)),
    "glu": (["glu"], _unary(lambda x: F.glu(x, -1), 1, 4096)),
    "glu_backward": (["glu_backward"], _glu_backward),
    "elu_backward": (["elu_backward"], _binary(
        lambda gy, y: aten.elu_backward(gy, 1.0, 1.0, 1.0, False, y), (1, 4096), (1, 4096))),
    "cross_entropy": (["_log_softmax", "nll_loss_forward"], _cross_entropy),
    "mm_16x4096x4096": (["mm"], _binary(torch.mm, (16, 4096), (4096, 4096))),
    "bmm_8x64": (["bmm"], _binary(torch.bmm, (8, 64, 64), (8, 64, 64))),
    "mm_fp32_16": (["mm"], _binary(torch.mm, (16, 16), (16, 16), dtype=F32)),
    "linear_fp32": (["mm"], _binary(F.linear, (1, 2048), (2048, 2048), dtype=F32)),
    # Public functions, which call ops of their own namespace when they need no autograd node.
    "rms_norm_fused": (["gems_norm::rms_norm"], _public(
        lambda x, w: flag_gems.rms_norm(x, (4096,), w, 1e-6), lambda x, w: F.rms_norm(x, (4096,), w, 1e-6),
        (1, 4096), (4096,))),
    "fused_add_rms_norm": (["gems_norm::fused_add_rms_norm"], _public(
        lambda x, r: flag_gems.fused_add_rms_norm(x, r, (4096,), None, 1e-6),
        lambda x, r: (F.rms_norm(x + r, (4096,), None, 1e-6), x + r), (1, 4096), (1, 4096))),
    "silu_and_mul": (["gems_pointwise::silu_and_mul"], _public(
        flag_gems.silu_and_mul, lambda a, b: F.silu(a) * b, (1, 14336), (1, 14336))),
    "rotary": (["gems_pointwise::apply_rotary_pos_emb"], _rotary),
    "weight_norm_fused": (["gems_norm::weight_norm"], _weight_norm_fused),
    "cross_entropy_fused": (["gems_reduction::cross_entropy_loss"], _cross_entropy_fused),
    "layer_norm": (["layer_norm"], _unary(lambda x: F.layer_norm(x, (4096,)), 1, 4096)),
    "layer_norm_backward": (["native_layer_norm_backward"], _layer_norm_backward),
    "layer_norm_backward_64": (["native_layer_norm_backward"], _layer_norm_backward_64),
    "batch_norm_backward": (["native_batch_norm_backward"], _batch_norm_backward),
    "batch_norm_train": (["native_batch_norm", "_native_batch_norm_legit"], _batch_norm_train),
}


def _close(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return all(_close(x, y) for x, y in zip(a, b))
    if not isinstance(a, torch.Tensor):
        return True
    if a.dtype in (torch.int64, torch.int32, torch.bool):
        return torch.equal(a, b)
    return torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def report(name: str, calls: int) -> None:
    overloads, make = CASES[name]
    native.clear()
    matches = True
    for _ in range(4):
        made = make()  # a call, or (our public function's call, the ATen ops it stands for)
        fn, aten_fn = made if isinstance(made, tuple) else (made, made)
        expected = aten_fn()
        with flag_gems.use_gems():
            matches = matches and _close(fn(), expected)
    aten_us = per_call_us(aten_fn, calls)
    with flag_gems.use_gems():
        gems_us = per_call_us(fn, calls)
    stats = native.stats()
    found = [f"{op}: {stats[op][0]} replayed, {stats[op][1]} planned, {stats[op][2]} given up"
             + (f" ({stats[op][3]})" if stats[op][3] else "") for op in overloads if op in stats]
    print(f"{name:22s} ATen {aten_us:6.1f} us  gems {gems_us:6.1f} us  ({aten_us / gems_us:4.2f}x)  "
          f"{'matches' if matches else 'DIFFERS'}  " + ("; ".join(found) or "no replaying kernel reached"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help=f"default: all of {', '.join(CASES)}")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="also each case's kernels under gems, by device time")
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (Triton's interpreter)"
    print(f"replayed launches: {native.status()}; {card}")
    for name in args.cases or CASES:
        report(name, args.calls)
        if args.profile:
            kernels(name)


def kernels(name: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    made = CASES[name][1]()
    fn = made[0] if isinstance(made, tuple) else made
    with flag_gems.use_gems():
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
    for event in prof.key_averages():
        if event.device_time_total > 0:
            print(f"    {event.count // 20:2d} x {event.device_time_total / event.count:7.2f} us  {event.key[:90]}")


if __name__ == "__main__":
    main()
