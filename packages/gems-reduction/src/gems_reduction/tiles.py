"""Block sizes of the reduce skeleton, and the knobs they read.

The knobs are module attributes so that a tuning run (``tuning/ab_reduce.py``) can time alternatives
on a GPU without editing code. Plans are cached per signature: after changing a knob, call
``reduce.forget_plans()``. The defaults are the choices measured on an H100.
"""

from __future__ import annotations

from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.runtime import device
from gems_reduction import layout as lay

#: Few, large programs: the interpreter runs programs one after another. False gives the GPU's tiles,
#: which the interpreter runs too (slowly), as the smoke run of the tuning script does.
INTERPRETER_TILES = device.interpreter

#: Bytes of input each program loads per loop step: 16 KB keeps enough loads in flight on an H100.
STEP_BYTES = 16384

#: Bytes each thread loads per loop step: 128 (eight 16-byte vectors), so that a 16 KB step has 4 warps
#: whatever the dtype: on an H200 bfloat16 sums over rows of 131072 and whole tensors took 8% less time
#: than with 64 bytes, float32 the same (tuning/ab_reduce.py).
THREAD_BYTES = 128

#: Arg-reductions carry a position next to each element: elements per loop step, and per thread.
ARG_STEP_ELEMENTS = 4096
ARG_THREAD_ELEMENTS = 16

#: Bytes of the row segment each program of the cols kernel (dim-0 style reductions) owns: 1024, eight
#: whole 128-byte lines per row of a step. On an H100 the bfloat16 dim-0 reductions ran 1.028x as fast
#: as with 256 bytes (sum and mean over dim 0 of (512, 131072): from 0.97x to 1.02x ATen's speed).
COLS_BYTES = 1024
#: The same for arg-reductions (argmax and the like), which keep a position beside each value: with 1024
#: bytes bfloat16 argmax over dim 0 of (8192, 8192) took 93 us on an H100 against 76 us with 256.
ARG_COLS_BYTES = 256

#: How arg-reductions (argmax, max.dim, ...) fold a loop step. 0: a (value, position) pair per element of
#: the tile, compared element by element, combined at the end. 1: one pair per output: the step's
#: extremum (one NaN-propagating max per element), then the first position holding it (a compare and a
#: min per element); no position registers per element, so the plain reductions' tiles (16 KB steps,
#: ``COLS_BYTES`` segments) apply. 2: as 1, the position searched only in steps where some output improves.
#: ``ARG_TILE`` is for reductions over rows (the last dim), ``ARG_TILE_COLS`` over columns (dim 0). On an H100
#: (benchmark/results/2026-11-27-h100-4/logs/ab_reduce.txt), bfloat16 argmax over the last dim took 59.1
#: instead of 71.3 us with 1 at (8192, 8192) and 63.0 instead of 66.7 at (512, 131072); 2 lost. Over dim 0,
#: 1 lost 34% at (8192, 8192) (101.8 against 75.8 us): the columns keep a position per element.
ARG_TILE = 1
ARG_TILE_COLS = 1
#: (A mode finding the step's extremum and its first position by one combined (value, position) reduction
#: lost on an H100: argmax over dim 0 0.74x the default's speed; its sm_90 PTX had 17.7 instructions an
#: element against 11.9. It was removed.)
#:
#: ``ARG_TILE_COLS_IN_THREAD``: True gives the cols kernel of ``ARG_TILE_COLS`` only the warps that cover a
#: row segment side by side (a warp loads 32 16-byte vectors of a row), so each thread owns whole columns
#: and the per-step reductions over rows stay inside threads. The plain tiles stack warps along the rows
#: (bfloat16, 1024-byte segments: warps [2, 2]), and each step's two reductions then cross warps through
#: shared memory: the sm_90 PTX of that loop has, a step, 4 bar.sync, 16 shuffles and 64 shared-memory
#: accesses more than the pipeline needs, which in_thread removes (9.8 PTX instructions per element,
#: against 12.5 for the pairs). It has few warps a program (2 for 1024-byte segments): pair it with more
#: programs (``IN_THREAD_PROGRAMS_PER_SM``). With it, 1 is the default over dim 0 (13-15% faster than the
#: pairs on an H100); without it 1 lost there.
ARG_TILE_COLS_IN_THREAD = True

#: Software pipelining of the loop over the reduced range (Triton's ``num_stages``): the loads of the
#: next two steps are issued (asynchronously, into shared memory) before the current step is combined,
#: so every program keeps two steps in flight. Without it ptxas often places each load right before
#: its first use, leaving one 16-byte load per thread in flight (seen in the SASS of amax and of every
#: dim-0 reduction). 1 turns it off; the interpreter ignores it.
STAGES = 1 if device.interpreter else 3

#: A reduced range that one loop step would cover is read as two half steps, so that the pipelined loop
#: has the second half's loads in flight while it combines the first. False reads it in one step: twice
#: as many programs, each one load deep, which keeps as many loads in flight through occupancy instead.
#: On an H100 one 16 KB step made the bfloat16 reductions over the last dim 1.007x as fast, but whole-tensor
#: ones (count_nonzero, aminmax, nansum of (8192, 8192)) 5-19% slower in the same week's benchmark: two.
HALF_STEPS = True

#: Programs per SM a split reduction is given. A reduction with fewer than half that many programs
#: per SM has its reduced range split (with two steps in flight per program, two programs per SM
#: already keep the memory busy, and a split costs a second launch). Short rows are packed into
#: programs only while ~this many programs per SM remain. Two per SM: on an H200 dim-0 and whole-tensor
#: reductions took 4-9% less time than with four. Tests raise it to run the split path on small tensors.
PROGRAMS_PER_SM = 2
#: The same for the cols kernel (dim-0 style reductions); 0 uses ``PROGRAMS_PER_SM``. A standalone column
#: sum of bfloat16 (8192, 8192) with 1024-byte segments took 59.1 us on an H100 with its rows in 32 chunks
#: (~4 programs an SM) against 66.8 with 16; in the library 4 lost 7% over the dim-0 cases
#: (benchmark/results/2026-11-27-h100-4/logs/ab_reduce2.txt).
COLS_PROGRAMS_PER_SM = 0
#: Programs per SM of the in-thread column arg-reductions (``ARG_TILE_COLS_IN_THREAD``), whose programs
#: have few warps; their splits round up. bfloat16 argmax over dim 0 on an H100: (8192, 8192) 76.3 ->
#: 66.2 us, (512, 131072) 82.3 -> 72.0 (8 an SM with 8 KB steps: 67.7 and 91.2).
IN_THREAD_PROGRAMS_PER_SM = 4
#: How a split rounds the programs it aims at: False rounds the splits per range up (the grid may pass
#: the target by up to a range's programs: 5 x 64 = 320 programs where 264 fit in one wave of argmax's
#: 8-warp programs), True rounds down, so the grid never exceeds ~the target. True won 1-2% on every
#: dim-0 case of bfloat16 (8192, 8192) and (512, 131072) on an H100 (sum over dim 0: 63.5 -> 62.4 us).
SPLIT_FLOOR = True
#: A split costs a second launch (a few microseconds of host and device time): ranges whose programs would
#: each read fewer bytes than this unsplit are not split. bfloat16 (64, 4096) over dim 0 on an H200: two
#: launches of ~2 us each, 11-20 us a call against ATen's 8-12 (benchmark/results/2026-11-28-h200-replay).
SPLIT_MIN_BYTES = 131072


#: Softmax over a non-last dim whose columns are too long for one pass (see ``softmax.py``): 0 keeps the
#: strip programs (each owns whole columns, reads them twice); N > 0 splits the reduced dim into chunks
#: over about N programs per SM: a first pass stores each chunk's (max, sum of exp) per column, a second
#: combines its columns' chunks and writes its own chunk. For (8192, 8192) the strips of 16 columns give
#: 512 programs reading 32 bytes a row, twice.
#: On an H100, bfloat16 softmax over dim 0 of (8192, 8192): 210.8 us with the strips, 202.3 with 4 programs an
#: SM and 256-byte segments, 186.1 with 4 and 128-byte ones (log_softmax 217.0 -> 183.8); (512, 131072)
#: takes one pass either way (117 us). 8 programs an SM: 186.3 -> 175.7 us (log_softmax 183.6 -> 173.2);
#: float32 unchanged (305 vs 298 us, noise).
SOFTMAX_SPLIT_PER_SM = 8
#: Bytes of the row segment each program of that split owns (128: one 128-byte line per row).
SOFTMAX_SPLIT_COLS_BYTES = 128
#: The same split for the softmax backward over a non-last dim (pass 1: per-chunk sums of g * y, or g
#: for log_softmax); 0 keeps the strip programs, which read g and y twice. (8192, 8192) bfloat16 on an
#: H100: 306.6 us with the strips, 235.7 with 2 programs an SM, 237-239 with 4 or 8.
SOFTMAX_BACKWARD_SPLIT_PER_SM = 2
#: Bytes of the row segment each program of the backward's split owns (measured with 256).
SOFTMAX_BACKWARD_SPLIT_COLS_BYTES = 256

#: Softmax over rows too long for one pass (the last dim): 0 gives every block of rows its program;
#: with (512, 131072) bfloat16 all 512 programs are resident at once (4 an SM), 128 MB of rows in
#: flight, so the second loop (which walks each row back to meet it in L2) mostly re-reads DRAM. N > 0
#: launches a persistent grid of programs holding about N bytes of rows in all (at least one program),
#: each taking every grid-th row. On an H100, (512, 131072) bfloat16 with 32 KB steps: 142.6 -> 138.2 us
#: (log_softmax 141.0 -> 129.9); 16 and 24 MB lost (0.72x, 0.83x); (8192, 8192) takes one pass (94.6 us).
SOFTMAX_ROWS_IN_FLIGHT_BYTES = 32 * 2**20
#: Bytes of a row each loop step of that persistent path loads (the other path's 16 KB otherwise): a
#: program alone on its SM needs more in flight (its loops are pipelined, ``STAGES``; unpipelined lost).
SOFTMAX_ROWS_STEP_BYTES = 32768
#: The persistent path for the backward over long rows (its bytes count g and y). On an H100,
#: (512, 131072) bfloat16: 221.5 -> 207.3 us with 64 MB (48 MB 213.7, 32 MB 219.2).
SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES = 64 * 2**20
#: Its step bytes (of each of g and y): measured with 16 KB; 32 KB makes its kernels spill registers.
SOFTMAX_BACKWARD_ROWS_STEP_BYTES = 16384
#: Softmax forward over fewer rows than SMs, each too long for one pass (an LLM's logits at small batch):
#: the split of the dim-0 path along each row instead of one program a row, which leaves SMs idle. On an
#: H100, bfloat16 rows of 128256: 1 row 35.0 -> 11.4 us (ATen 37.4), 8 rows 36.6 -> 13.2 (37.7), 64 rows
#: 40.9 -> 26.1 (41.2); 16 programs an SM instead of 8 changed nothing.
SOFTMAX_SPLIT_FEW_ROWS = True


def settings() -> tuple:
    """Every knob's value: part of each plan's cache key."""
    return (INTERPRETER_TILES, STEP_BYTES, THREAD_BYTES, ARG_STEP_ELEMENTS, ARG_THREAD_ELEMENTS, COLS_BYTES,
            ARG_COLS_BYTES, ARG_TILE, ARG_TILE_COLS, ARG_TILE_COLS_IN_THREAD, STAGES, HALF_STEPS, PROGRAMS_PER_SM,
            COLS_PROGRAMS_PER_SM, IN_THREAD_PROGRAMS_PER_SM, SPLIT_FLOOR, SPLIT_MIN_BYTES, SOFTMAX_SPLIT_PER_SM,
            SOFTMAX_SPLIT_COLS_BYTES, SOFTMAX_BACKWARD_SPLIT_PER_SM, SOFTMAX_BACKWARD_SPLIT_COLS_BYTES,
            SOFTMAX_ROWS_IN_FLIGHT_BYTES, SOFTMAX_ROWS_STEP_BYTES, SOFTMAX_BACKWARD_ROWS_IN_FLIGHT_BYTES,
            SOFTMAX_BACKWARD_ROWS_STEP_BYTES, SOFTMAX_SPLIT_FEW_ROWS)


def thread_elements(itemsize: int, arg: bool) -> int:
    """Elements each thread takes per loop step (``THREAD_BYTES`` of input, or
    ``ARG_THREAD_ELEMENTS`` when ``arg``: a position is kept per lane)."""
    return ARG_THREAD_ELEMENTS if arg else max(1, THREAD_BYTES // itemsize)


def warps_for(elements: int, per_thread: int) -> int:
    """num_warps for a tile of ``elements``, ``per_thread`` elements each thread: 4 to 16 warps."""
    return max(4, min(16, elements // (32 * per_thread)))


def step_elements(itemsize: int, arg: bool) -> int:
    """Elements each program loads per loop step (``STEP_BYTES`` of input, or ``ARG_STEP_ELEMENTS`` when
    ``arg``: a position is kept per lane)."""
    if INTERPRETER_TILES:
        return 16384  # few, large programs
    return ARG_STEP_ELEMENTS if arg else max(1, STEP_BYTES // itemsize)


def reduced_block(length: int, most: int, least: int) -> int:
    """How much of the reduced range a loop step takes: at most ``most``. On the GPU a range that one
    step would cover takes two half steps (unless they would be shorter than ``least``, or
    ``HALF_STEPS`` is off), so that the pipelined loop has the next step's loads in flight while it
    combines the current one."""
    block = min(next_power_of_2(max(length, 1)), most)
    if HALF_STEPS and not INTERPRETER_TILES and block >= length and block >= 2 * least:
        block //= 2
    return block


def rows_tiles(rows: int, length: int, step: int, per_thread: int) -> tuple[int, int, int]:
    """(BLOCK_K rows, BLOCK_R elements, num_warps) for the rows kernel: ``step`` elements per loop
    step, in contiguous runs of 256 or more; short rows are packed several per program, but never so
    many that fewer than ~``PROGRAMS_PER_SM`` programs per SM remain."""
    block_r = reduced_block(length, step, 256)
    block_k = min(next_power_of_2(rows), max(1, step // block_r))
    if not INTERPRETER_TILES:
        spread = next_power_of_2(cdiv(rows, PROGRAMS_PER_SM * lay.sm_count()))
        block_k = max(1, min(block_k, spread))
    return block_k, block_r, warps_for(block_k * block_r, per_thread)


def cols_tiles(cols: int, length: int, step: int, itemsize: int, per_thread: int,
               arg: bool = False, in_thread: bool = False) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_N, num_warps) for the cols kernel: ``COLS_BYTES`` row segments (``ARG_COLS_BYTES``
    for arg-reductions; coalesced), ``step`` elements per loop step, warps stacked along the reduced dim
    (``in_thread``: only the warps that cover a segment side by side, none along the reduced dim)."""
    segment = 256 if INTERPRETER_TILES else max(16, (ARG_COLS_BYTES if arg else COLS_BYTES) // itemsize)
    block_n = min(next_power_of_2(cols), segment)
    block_r = reduced_block(length, max(1, step // block_n), 1)
    if in_thread:
        return block_r, block_n, max(1, min(16, block_n * itemsize // (32 * 16)))
    return block_r, block_n, warps_for(block_r * block_n, per_thread)


def split_count(programs: int, length: int, block: int, per_sm: int = 0, floor: bool | None = None, *,
                program_bytes: int) -> tuple[int, int]:
    """(splits, chunk): how many programs share one reduced range, and the length each takes.

    Too few programs to fill the GPU are split up to ``per_sm`` (default ``PROGRAMS_PER_SM``) per SM,
    the splits per range rounded down where ``floor`` (default ``SPLIT_FLOOR``); a split always covers
    whole blocks. Programs reading fewer than ``SPLIT_MIN_BYTES`` unsplit (``program_bytes``) are not split.
    """
    splits = 1
    target = (per_sm or PROGRAMS_PER_SM) * lay.sm_count()
    floor = SPLIT_FLOOR if floor is None else floor
    if 2 * programs < target and length > 2 * block and program_bytes >= SPLIT_MIN_BYTES:
        ways = target // programs if floor else cdiv(target, programs)
        splits = min(ways, cdiv(length, block))
    chunk = max(cdiv(cdiv(length, splits), block) * block, 1)
    return max(cdiv(length, chunk), 1), chunk
