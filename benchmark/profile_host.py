"""Where the host time of a tiny op goes: layer by layer for ``add``, and a profile of each tiny op.

    python benchmark/profile_host.py [--calls N] [--profile]
    python benchmark/profile_host.py --cpu [--calls N] [--profile]

Prints µs per call (many calls, one synchronize) of ATen's add, of gems' add through the dispatcher,
of the family's function called from Python, of the generated op, of an output allocation and of a
launch of the compiled kernel alone; then ATen's and gems' µs per call of each tiny op (1024 bf16
elements); with ``--profile``, cProfile's top entries for each tiny op.

``--cpu`` measures the Python part without a GPU: on CPU tensors, with launches taking the GPU's
direct path to a no-op in place of the compiled kernel (see ``stub_launches``), so each row is the
host work of core and the family minus Triton's launch itself (about 5 µs on an H100).
Diagnostics for the direct-launch work, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import types

import torch
import torch.nn.functional as F
import triton
import triton.language as tl  # noqa: F401  (the scale op's jitted function needs it among its globals)

import flag_gems

DEVICE = "cuda"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    synchronize()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def _no_launch(*args, **kwargs) -> None:
    return None


class _NoKernel:
    """Stands for a jitted kernel in a Launcher: ``kernel[grid](...)`` runs nothing."""

    def __getitem__(self, grid):
        return _no_launch


def stub_launches() -> None:
    """From now on every Launcher takes the GPU's direct path to a no-op instead of a compiled kernel:
    host-side specialisation keys, GPU block sizes and launcher caches are all exercised, no kernel runs.
    Kernels launched other than through a Launcher still run, through the interpreter."""
    from flag_gems import launch, plugins
    from flag_gems.runtime import device

    plugins.discover()  # the families import their kernels as the interpreter wants them
    device.interpreter = False
    launch._raw_stream = lambda index: 0
    launch._current_device = lambda: 0
    launch._direct_call = lambda kernel, constexprs: (_no_launch, None, (), constexprs)
    make = launch.Launcher.__init__

    def make_stubbed(self, kernel, constexprs: dict, **options) -> None:
        make(self, kernel, constexprs, **options)
        self.kernel = _NoKernel()

    launch.Launcher.__init__ = make_stubbed
    _stub_device_queries()


def _stub_device_queries() -> None:
    """Families size their grids from the GPU's properties and BLAS reads the current stream: answer
    those on CPU as an H100 would."""
    props = types.SimpleNamespace(
        name="H100 (stub)", major=9, minor=0, multi_processor_count=132, total_memory=80 * 2**30,
        L2_cache_size=50 * 2**20, regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472,
        shared_memory_per_block_optin=232448, max_threads_per_multi_processor=2048, warp_size=32)
    torch.cuda.get_device_properties = lambda *args, **kwargs: props
    torch.cuda.current_device = lambda: 0
    torch._C._cuda_getCurrentRawStream = lambda index: 0
    torch._C._cuda_getDevice = lambda: 0


@triton.jit
def _scale(x, alpha):
    return x * alpha


def timed(rows, calls: int) -> list[tuple]:
    results = []
    for name, fn in rows:
        try:
            results.append((name, per_call_us(fn, calls)))
        except Exception as error:  # a diagnostic row that does not apply to this Triton
            results.append((name, f"failed: {type(error).__name__}: {error}"[:100]))
    return results


def layers_of_add(calls: int) -> None:
    from flag_gems import plugins

    x = torch.randn(1024, device=DEVICE, dtype=torch.bfloat16)
    y = torch.randn(1024, device=DEVICE, dtype=torch.bfloat16)
    out = torch.empty_like(x)
    scale = flag_gems.pointwise_dynamic(_scale, is_tensor=[True, False], promotion_methods=[(0, "DEFAULT")])
    family_fn = plugins.discover()["pointwise"].ops["add.Tensor"].fn
    from gems_pointwise import binary

    kernel = binary.add_kernel
    aten_rows = [("aten torch.add", lambda: torch.add(x, y)),
                 ("aten torch.mul(x, 0.5)", lambda: torch.mul(x, 0.5)),
                 ("torch.empty(1024, bf16)", lambda: torch.empty(1024, dtype=torch.bfloat16, device=DEVICE)),
                 ("torch.empty_like(x)", lambda: torch.empty_like(x)),
                 ("torch.empty_like(x, dtype, format)",
                  lambda: torch.empty_like(x, dtype=torch.bfloat16, memory_format=torch.contiguous_format)),
                 ("x.new_empty(1024)", lambda: x.new_empty(1024))]
    results = timed(aten_rows, calls)
    with flag_gems.use_gems(families=["pointwise"]):
        rows = [("gems torch.add (dispatcher)", lambda: torch.add(x, y)),
                ("family function from Python", lambda: family_fn(x, y)),
                ("pointwise_dynamic op", lambda: kernel(x, y)),
                ("pointwise_dynamic op, out0=", lambda: kernel(x, y, out0=out)),
                ("pointwise_dynamic op, scalar arg", lambda: scale(x, 0.5))]
        if DEVICE == "cuda":
            kernel(x, y, out0=out)  # compiles the kernel the direct-launch row calls
            plan = kernel._plans[(x.dtype, x.dtype, out.dtype)]
            launcher = next(iter(plan.flat_launchers.values()))
            launch, function, head, tail, *_ = next(iter(launcher._compiled.values()))
            stream = torch.cuda.current_stream().cuda_stream
            args = [x, y, out, 1024]
            rows.append(("compiled kernel, direct launch",
                         lambda: launch(1, 1, 1, stream, function, *head, *args, *tail)))
            pointers = [x.data_ptr(), y.data_ptr(), out.data_ptr(), 1024]
            rows.append(("direct launch, pointers as ints",
                         lambda: launch(1, 1, 1, stream, function, *head, *pointers, *tail)))
            rows.append(("direct launch, data_ptr() per call",
                         lambda: launch(1, 1, 1, stream, function, *head, x.data_ptr(), y.data_ptr(),
                                        out.data_ptr(), 1024, *tail)))
        results += timed(rows, calls)
    launches = ", launches stubbed" if DEVICE == "cpu" else ""
    print(f"\nadd, 1024 bf16 on {DEVICE}{launches}: µs per call")
    for name, us in results:
        print(f"  {name:36s} {us if isinstance(us, str) else f'{us:8.2f}'}")


def tiny_ops() -> dict:
    """The tiny ops measured one by one: 1024 bf16 elements each (a 1x1024 row for the norms)."""
    x = torch.randn(1024, device=DEVICE, dtype=torch.bfloat16)
    y = torch.randn(1024, device=DEVICE, dtype=torch.bfloat16)
    row = x.view(1, 1024)
    w = torch.randn(1024, device=DEVICE, dtype=torch.bfloat16)
    a = torch.randn(16, 16, device=DEVICE, dtype=torch.bfloat16)
    return {
        "add": lambda: torch.add(x, y), "mul_scalar": lambda: x * 1.5, "silu": lambda: F.silu(x),
        "leaky_relu": lambda: F.leaky_relu(x, 0.2), "sum": lambda: torch.sum(x),
        "softmax": lambda: torch.softmax(x, -1), "rms_norm": lambda: F.rms_norm(row, (1024,), w, 1e-6),
        "layer_norm": lambda: F.layer_norm(row, (1024,), w, w), "mm": lambda: torch.mm(a, a),
    }


def decode_ops() -> dict:
    """The ops of one layer of benchmark/decoder.py's decoding step (hidden 2048, 32 heads of 64), with
    the step's own shapes and views: strided rotary products, cache writes, batch-1 products."""
    bf16 = dict(device=DEVICE, dtype=torch.bfloat16)
    h = torch.randn(1, 1, 2048, **bf16)
    w = torch.randn(2048, **bf16)
    weight = torch.randn(2048, 2048, **bf16)
    q = torch.randn(1, 1, 2048, **bf16).view(1, 1, 32, 64).transpose(1, 2)
    cos = torch.randn(1024, 64, **bf16)
    cache = torch.randn(1, 8, 1024, 64, **bf16)
    k = torch.randn(1, 1, 512, **bf16).view(1, 1, 8, 64).transpose(1, 2)
    gate = torch.randn(1, 1, 8192, **bf16)
    return {
        "rms_norm (1,1,2048)": lambda: F.rms_norm(h, (2048,), w, 1e-5),
        "linear 1x2048x2048": lambda: F.linear(h, weight),
        "neg of a slice": lambda: -q[..., 32:],
        "mul q*cos[pos]": lambda: q * cos[7],
        "add residual": lambda: h + h,
        "cache[:, :, pos] = k": lambda: cache[:, :, 7].copy_(k[:, :, 0]),
        "silu (1,1,8192)": lambda: F.silu(gate),
        "mul (1,1,8192)": lambda: gate * gate,
    }


def ops_table(calls: int, ops: dict | None = None, label: str = "tiny ops") -> None:
    """ATen's and gems' µs per call of each tiny op; on CPU, gems' rows are host work, launches stubbed."""
    ops = ops if ops is not None else tiny_ops()
    aten = dict(timed(ops.items(), calls))
    with flag_gems.use_gems():
        gems = dict(timed(ops.items(), calls))
    launches = ", launches stubbed" if DEVICE == "cpu" else ""
    print(f"\n{label} on {DEVICE}{launches}: µs per call, ATen then gems")
    for name in ops:
        cells = [us if isinstance(us, str) else f"{us:8.2f}" for us in (aten[name], gems[name])]
        print(f"  {name:22s} {cells[0]:>8s} {cells[1]}")


def profiles(calls: int, ops: dict) -> None:
    with flag_gems.use_gems():
        for name, fn in ops.items():
            try:
                for _ in range(20):
                    fn()
            except Exception as error:  # on CPU, a family whose host path asks the GPU for its properties
                print(f"\n-- {name}: not measurable here: {type(error).__name__}: {error}"[:160])
                continue
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                fn()
            profiler.disable()
            synchronize()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(10)
            lines = [ln for ln in text.getvalue().splitlines() if ln.strip()][3:16]
            print(f"\n-- {name}: cProfile, {calls} calls\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="no GPU: CPU tensors, launches stubbed")
    opts = parser.parse_args()
    if opts.cpu:
        global DEVICE
        DEVICE = "cpu"
        stub_launches()
    layers_of_add(opts.calls)
    ops_table(max(opts.calls // 4, 100))
    ops_table(max(opts.calls // 4, 100), decode_ops(), "ops of a decoding step")
    if opts.profile:
        profiles(max(opts.calls // 10, 100), tiny_ops())
        profiles(max(opts.calls // 10, 100), decode_ops())


if __name__ == "__main__":
    main()
