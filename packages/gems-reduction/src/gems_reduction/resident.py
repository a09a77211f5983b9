"""Softmax over rows too long for one program, read once: every chunk of a row stays in registers.

A row is cut into ``CHUNKS`` chunks, one program each. A program loads its chunk, publishes the chunk's
(max, sum of exp) to a buffer, waits until every program of its row has published (a counter per row),
combines the statistics and writes its chunk from the registers it loaded. The input is read once and the
result written once: the two-pass path over long rows (softmax.py) reads it twice, the second time partly
from DRAM. (Over columns, as softmax over dim 0, the same scheme lost to the two-pass split on an H100:
each chunk program then reads every chunk's statistics of its columns.)

Waiting on other programs is safe only when they all run at once: the grid is never larger than the GPU
holds at one time (computed from the compiled kernel's registers and shared memory), it is launched as a
cooperative grid (the driver refuses a grid it cannot hold rather than hang), and a row's programs are
consecutive, so each round of rows is resident together. The interpreter runs programs one after
another, so there a row is one chunk (``CHUNKS`` 1) and nothing waits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import shared_launcher
from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction.reduce import tl_dtype
from gems_reduction.rows import geometry, safe_shift

#: Bytes of a chunk (one program's tile) and its warps. On an H100, (512, 131072): bfloat16 softmax 115 us
#: (81% of a copy of its bytes; the two-pass path 140 us), float32 210 us (87%; 315 us), with the next chunk
#: loaded before the wait (``PREFETCH``; without it bfloat16 took 128 us); 16 KB chunks 123 us
#: (benchmark/results/2026-11-27-h100-7/logs/ab_softmax_resident_rows.txt).
TILE_BYTES = 32768
TILE_WARPS = 8
#: Load the next row's chunk before waiting for the current row (twice the registers for the data).
#: (Loads marked evict-first and streaming stores, so that L2 drops the rows first, lost 2-6%.)
PREFETCH = True
#: Rows longer than this take the path: what softmax.py's one-pass kernel holds in registers.
ONE_PASS_ELEMENTS = 16384
#: Off: the two-pass paths take every call. Off on the interpreter, where a row is one chunk and the
#: one-pass kernel is the same computation; tests turn it on there to run this kernel's code.
ENABLED = not device.interpreter


@triton.jit
def _row_start(row, R, INT64: tl.constexpr):
    """Offset of ``row``'s first element (in int64 where offsets may pass int32)."""
    if INT64:
        row = tl.cast(row, tl.int64)
    return row * R


@triton.jit
def _load_chunk(x_ptr, row, r, R, rows_count, INT64: tl.constexpr):
    """A program's chunk (positions ``r``) of ``row``, -inf past the row's end or past the last row."""
    return tl.load(x_ptr + _row_start(row, R, INT64) + r, mask=(r < R) & (row < rows_count), other=float("-inf"))


@triton.jit
def _row_statistics(stats_ptr, count_ptr, row, part, m, s, rows_count, CHUNKS: tl.constexpr):
    """Publish this chunk's (max, sum of exp), wait for the rest of ``row``; returns the row's."""
    slot = row * CHUNKS + part
    tl.store(stats_ptr + slot, m)
    tl.store(stats_ptr + rows_count * CHUNKS + slot, s)
    # Every thread's stores before the count (one thread performs the atomic, with release semantics).
    tl.debug_barrier()
    tl.atomic_add(count_ptr + row, 1, sem="release", scope="gpu")
    while tl.atomic_add(count_ptr + row, 0, sem="acquire", scope="gpu") < CHUNKS:
        pass
    tl.debug_barrier()
    slots = row * CHUNKS + tl.arange(0, CHUNKS)
    # Through L2 only: the other programs' stores were made on other SMs.
    ms = tl.load(stats_ptr + slots, cache_modifier=".cg")
    ss = tl.load(stats_ptr + rows_count * CHUNKS + slots, cache_modifier=".cg")
    big = tl.max(ms, 0)
    return big, tl.sum(tl.where(ms == float("-inf"), 0.0, ss * tl.exp(ms - safe_shift(big))), 0)


@triton.jit
def _resident_softmax_kernel(
    x_ptr, y_ptr, stats_ptr, count_ptr, R, rows_count,
    LOG: tl.constexpr, SAFE: tl.constexpr, ACC: tl.constexpr, INT64: tl.constexpr, CHUNKS: tl.constexpr,
    CHUNK_R: tl.constexpr, PREFETCH: tl.constexpr,
):
    """Program ``pid`` owns chunk ``pid % CHUNKS`` of rows ``pid // CHUNKS``, + grid / CHUNKS, ...
    ``PREFETCH``: the next row's chunk is loaded before the wait, so that its reads overlap it."""
    pid = tl.program_id(0)
    part = pid % CHUNKS
    r = part * CHUNK_R + tl.arange(0, CHUNK_R)
    if INT64:
        r = r.to(tl.int64)
    step = tl.num_programs(0) // CHUNKS
    first = pid // CHUNKS
    raw = _load_chunk(x_ptr, first, r, R, rows_count, INT64)
    for row in range(first, rows_count, step):
        x = raw.to(ACC)
        m = tl.max(x, 0)
        # Kept while the row waits: softmax scales them (one multiply an element, not a second exp and a
        # division); log_softmax keeps the input instead, in its own dtype.
        e = tl.exp(x - safe_shift(m))
        s = tl.sum(e, 0)
        if PREFETCH:
            ahead = _load_chunk(x_ptr, row + step, r, R, rows_count, INT64)
        big, total = _row_statistics(stats_ptr, count_ptr, row, part, m, s, rows_count, CHUNKS)
        if LOG:
            y = raw.to(ACC) - (big + tl.log(total))
        else:
            # A row of -inf only: exp(-inf - -inf) / 0 is NaN, as ATen's.
            y = e * (tl.exp(m - big) / total)
        if SAFE:
            y = tl.where(big == float("-inf"), 0.0, y)
        tl.store(y_ptr + _row_start(row, R, INT64) + r, y.to(y_ptr.dtype.element_ty), mask=r < R)
        raw = ahead if PREFETCH else _load_chunk(x_ptr, row + step, r, R, rows_count, INT64)


def tiles_for(length: int, itemsize: int) -> tuple[int, int] | None:
    """(CHUNK_R, CHUNKS) of a softmax over rows of ``length``, or None where this path does not pay (one
    program holds the row) or cannot run (more chunks than programs fit)."""
    if device.interpreter:
        return next_power_of_2(length), 1
    if length <= ONE_PASS_ELEMENTS:
        return None
    chunk_r = TILE_BYTES // itemsize
    chunks = next_power_of_2(cdiv(length, chunk_r))
    return (chunk_r, chunks) if chunks <= 256 else None


def _programs_per_sm(compiled, warps: int, index: int = 0) -> int:
    """Programs of ``compiled`` one SM holds at once: by registers (allocated per warp in units of 256),
    shared memory (1 KB reserved a program), threads, and programs (32 on every GPU since Volta)."""
    props = torch.cuda.get_device_properties(index)
    per_warp = cdiv(max(compiled.n_regs, 1) * 32, 256) * 256
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // (per_warp * warps)
    smem = getattr(props, "shared_memory_per_multiprocessor", 0) or 100 * 1024
    by_shared = smem // (compiled.metadata.shared + 1024)
    by_threads = props.max_threads_per_multi_processor // (32 * warps)
    return max(0, min(by_regs, by_shared, by_threads, 32))


class ResidentLaunch:
    """A ready resident softmax: its launch and the size of its buffers."""

    __slots__ = ("launch", "rows", "chunks")

    def __init__(self, launch: lay.Launch, rows: int, chunks: int) -> None:
        self.launch = launch
        self.rows = rows
        self.chunks = chunks

    def __call__(self, tensors: list, ptr: int = 0) -> None:
        x = tensors[0]
        # Each chunk's max, then each chunk's sum; arrivals per row.
        stats = x.new_empty(2 * self.chunks * self.rows, dtype=torch.float32)
        counts = torch.zeros(self.rows, dtype=torch.int32, device=x.device)
        self.launch([*tensors, stats, counts], ptr | stats.data_ptr() | counts.data_ptr())


def plan(shape, dim: int, x_dtype: torch.dtype, y_dtype: torch.dtype, acc_dtype, log: bool,
         safe: bool) -> ResidentLaunch | None:
    """The resident softmax of a contiguous tensor of ``shape`` along ``dim``, or None where it does not
    apply (off, not the last dim, rows short enough for one program)."""
    outer, length, inner = geometry(shape, dim)
    found = tiles_for(length, x_dtype.itemsize) if ENABLED and inner == 1 else None
    if found is None:
        return None
    chunk_r, chunks = found
    int64 = lay.force_int64 or outer * length > lay.INT32_MAX
    constexprs = dict(LOG=log, SAFE=safe, ACC=tl_dtype(acc_dtype), INT64=int64, CHUNKS=chunks, CHUNK_R=chunk_r,
                      PREFETCH=PREFETCH)
    warps = TILE_WARPS if not device.interpreter else 4
    options = {} if device.interpreter else {"launch_cooperative_grid": True}
    programs = outer * chunks
    if not device.interpreter:
        compiled = _resident_softmax_kernel.warmup(x_dtype, y_dtype, torch.float32, torch.int32, length, outer,
                                                   grid=(1,), num_warps=warps, **options, **constexprs)
        compiled._init_handles()  # loads the binary: its register count is known from then on
        resident = _programs_per_sm(compiled, warps, torch.cuda.current_device()) * lay.sm_count()
        programs = min(programs, resident // chunks * chunks)
        if programs < chunks:
            return None
    launcher = shared_launcher(_resident_softmax_kernel, constexprs, num_warps=warps, **options)
    return ResidentLaunch(lay.Launch(launcher, (programs,), [length, outer]), outer, chunks)


__all__ = ["plan", "tiles_for", "ResidentLaunch"]
