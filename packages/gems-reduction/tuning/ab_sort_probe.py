"""Which part of the register sort (``gems_reduction.sort``) goes wrong on long rows, on a GPU.

    python packages/gems-reduction/tuning/ab_sort_probe.py            # on a CUDA machine: < 60 s
    python packages/gems-reduction/tuning/ab_sort_probe.py --full     # also rows of 8192 in the ops
    python packages/gems-reduction/tuning/ab_sort_probe.py --smoke    # tiny rows, runs on CPU too

Each line checks one (what, dtype, R, warps) against ``torch.sort`` / ATen:
- ``tl.sort`` with dtype int64 or int32: a probe kernel loads a [BLOCK_L, R] tile the way the
  production kernel does (runtime strides), sorts each row with ``tl.sort`` and stores it. int64 keys
  are built like the production keys (value bits << 32 | position); int32 are plain values, to tell a
  64-bit fault from a fault of the sort network. (The production kernel sorts integer keys only.)
- ``sort``, ``kthvalue``, ``topk``: the production kernel through ``torch.*`` under ``flag_gems.use_gems()``
  with ``GPU_MAX_ROW`` raised to R (the warps shown are those ``sort_tiles`` gives).
The verdict is ``OK`` or ``WRONG: n/m rows, first (row, col) got g want w``. Every case runs in a pool
of processes (compile and check); the table comes out sorted by case.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import os
import sys
import time

import torch

import flag_gems
from gems_reduction import sort

ON_GPU = flag_gems.device == "cuda"
KEY_DTYPES = {"int64": torch.int64, "int32": torch.int32}
OP_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int32": torch.int32}


@functools.cache
def _probe_sort():
    """The probe kernel, made once ``flag_gems`` has chosen GPU or interpreter: Triton must not be imported
    (nor ``tl.sort`` decorated) before that choice."""
    import triton
    import triton.language as tl

    @triton.jit
    def probe_sort(x_ptr, out_ptr, rows, row_stride, col_stride, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr):
        """Rows of ``BLOCK_R`` keys sorted as the production kernel sorts them, a tile of BLOCK_L rows."""
        lane = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
        r = tl.arange(0, BLOCK_R)
        mask = (lane < rows)[:, None] & (r < BLOCK_R)[None, :]
        offsets = lane[:, None] * row_stride + r[None, :] * col_stride
        keys = tl.load(x_ptr + offsets, mask=mask, other=0)
        tl.store(out_ptr + offsets, tl.sort(keys, 1), mask=mask)

    return probe_sort


def _keys(dtype: str, rows: int, length: int) -> torch.Tensor:
    """Values with many ties (and negatives); int64 keys carry the position in their low half."""
    values = torch.randint(-1000, 1000, (rows, length), device=flag_gems.device, dtype=torch.int32)
    if dtype == "int64":
        position = torch.arange(length, device=values.device, dtype=torch.int64)
        return (values.to(torch.int64) << 32) | position
    return values


def _verdict(got: torch.Tensor, want: torch.Tensor) -> str:
    bad = got != want
    if got.dtype.is_floating_point:
        bad &= ~(got.isnan() & want.isnan())
    rows = bad.reshape(bad.shape[0], -1).any(1)
    if not rows.any():
        return "OK"
    row, col = (int(i) for i in bad.reshape(bad.shape[0], -1).nonzero()[0])
    g, w = got.reshape(got.shape[0], -1)[row, col].item(), want.reshape(want.shape[0], -1)[row, col].item()
    return f"WRONG: {int(rows.sum())}/{rows.numel()} rows, first ({row}, {col}) got {g} want {w}"


def _probe_tl_sort(what: str, dtype: str, length: int, warps: int, rows: int) -> tuple[str, int]:
    keys = _keys(dtype, rows, length)
    out = torch.empty_like(keys)
    block_l = max(1, min(rows, 4096 // length))
    _probe_sort()[(-(-rows // block_l),)](keys, out, rows, keys.stride(0), keys.stride(1), BLOCK_L=block_l,
                                          BLOCK_R=length, num_warps=warps)
    return _verdict(out, torch.sort(keys, dim=1).values), warps


def _op_input(dtype: str, rows: int, length: int) -> torch.Tensor:
    x = torch.randint(-50, 50, (rows, length), device=flag_gems.device)
    if dtype == "int32":
        return x.to(torch.int32)
    x = x.to(torch.float32) * 0.5
    x[:, 1::7] = torch.randn_like(x[:, 1::7]) * 100  # distinct values among the ties
    return x.to(OP_DTYPES[dtype])


def _probe_op(what: str, dtype: str, length: int, warps: int, rows: int) -> tuple[str, int]:
    sort.GPU_MAX_ROW = sort.MAX_ROW = max(length, sort.MAX_ROW)
    x = _op_input(dtype, rows, length)
    k = length // 2 + 1 if what == "kthvalue" else min(length, sort.SELECT_UP_TO + 16)
    if what == "sort":
        expected = torch.sort(x, dim=1, stable=True)
        with flag_gems.use_gems():
            got = torch.sort(x, dim=1, stable=True)
        verdict = _verdict(torch.stack([got.values.float(), got.indices.float()], 1),
                           torch.stack([expected.values.float(), expected.indices.float()], 1))
    else:
        op = torch.kthvalue if what == "kthvalue" else torch.topk
        expected = op(x, k, 1)
        with flag_gems.use_gems():
            got = op(x, k, 1)
        # Equal values may be reported at any of their positions: the index must point at the value.
        picked = torch.gather(x, 1, got.indices.reshape(rows, -1)).reshape(got.values.shape)
        verdict = _verdict(torch.stack([got.values.float(), picked.float()], 1),
                           torch.stack([expected.values.float(), got.values.float()], 1))
    _, _, used = sort.sort_tiles(rows, length)
    return verdict, used


def _cases(smoke: bool, full: bool) -> list[tuple[str, str, int, int]]:
    """(what, dtype, R, warps); the ops' warps are their own (0 here)."""
    lengths = (16, 32, 64) if smoke else (1024, 2048, 4096, 8192)
    warps = (4, 16) if smoke else (4, 8, 16, 32)
    cases = []
    for dtype in KEY_DTYPES:
        for length in lengths:
            cases += [("tl.sort", dtype, length, w) for w in warps]
    op_lengths = lengths if full or smoke else lengths[:3]
    for dtype in OP_DTYPES:
        for what in ("sort", "kthvalue", "topk") if dtype == "float32" else ("sort", "kthvalue"):
            cases += [(what, dtype, length, 0) for length in op_lengths]
    return cases


def _run_case(case: tuple[str, str, int, int], smoke: bool) -> str:
    what, dtype, length, warps = case
    torch.manual_seed(length * 131 + warps)
    rows = 4 if smoke else 64
    try:
        probe = _probe_tl_sort if what == "tl.sort" else _probe_op
        verdict, used = probe(what, dtype, length, warps, rows)
        if ON_GPU:
            torch.cuda.synchronize()
    except Exception as error:  # a compile or launch failure is a result too
        verdict, used = f"ERROR: {type(error).__name__}: {str(error).splitlines()[0][:80]}", warps
    return f"{what:9} {dtype:9} {length:6} {used:5}  {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny rows, runs on CPU through the interpreter")
    parser.add_argument("--full", action="store_true", help="also rows of 8192 in the ops")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes compiling and checking")
    options = parser.parse_args()
    cases = _cases(options.smoke, options.full)
    start = time.perf_counter()
    print(f"{'what':9} {'dtype':9} {'R':>6} {'warps':>5}  verdict")
    if options.smoke or options.jobs <= 1:
        lines = [_run_case(case, options.smoke) for case in cases]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(options.jobs, mp_context=context) as pool:
            lines = list(pool.map(_run_case, cases, [options.smoke] * len(cases)))
    for line in lines:
        print(line)
    failed = sum("WRONG" in line or "ERROR" in line for line in lines)
    print(f"{len(cases)} cases, {failed} not OK, {time.perf_counter() - start:.0f} s")
    if options.smoke and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
