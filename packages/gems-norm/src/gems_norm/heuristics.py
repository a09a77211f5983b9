"""Block sizes, warps and program counts of the norm kernels, and the cached launch of a kernel.

Each size is a named rule with its reason; none is tuned by a sweep at run time. On the interpreter
every program costs milliseconds whatever its size, so there the rules pick few, large programs.
``KNOBS`` selects between kernel variants that only timing on the GPU can rank (tuning/ab_norm.py).
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from flag_gems import native
from flag_gems.launch import aligned, shared_launcher, specialization
from flag_gems.runtime import device

#: Widest row (elements) a program holds whole in registers: 32 fp32 values a thread at 16 warps.
#: Wider rows take the looped kernels, which read the row twice.
MAX_ROW_BLOCK = 16384
#: The same for the backward, whose tiles keep about five arrays live (x, dy, xhat, two gradient sums):
#: wider rows spill registers (16384 wide ran 10x slower than its looped form on an H100).
MAX_ROW_BLOCK_BACKWARD = 8192

# Elements of one tile. On the GPU ~4K elements (16 a thread at 8 warps) keep enough 16-byte loads in
# flight per SM to reach the copy ceiling with several programs resident.
_TILE = 65536 if device.interpreter else 4096


@dataclasses.dataclass
class Knobs:
    """Choices between kernel variants that only timing on the GPU settles (``tuning/ab_norm.py`` times them
    against each other). Plans read them when they are built: after changing one, ``clear_plans()``. The
    defaults are what the kernels ship with; None stands for the named rule of that size."""

    #: Row norm backward (layer and RMS norm, N <= MAX_ROW_BLOCK_BACKWARD): elements of a tile (None: 16 KB
    #: of input a step on the GPU, two rows of 4096 in bfloat16 and one in float32, the fastest on an H100),
    #: warps (None: 8 values a thread), programs per SM, and whether a row's mean and rstd are loaded a step
    #: ahead with its tile (else each step waits on them after its tile has arrived: one memory latency a
    #: row). On an H100 (8192, 4096) bfloat16 went from 84 to 68 us with these defaults.
    row_bwd_tile: int | None = None
    row_bwd_warps: int | None = None
    row_bwd_programs_per_sm: int = 1
    row_bwd_prefetch_stats: bool = True
    #: ``fused_add_rms_norm``'s backward: the gradient of the sum output added to dx by the backward kernel (it
    #: reads each element once) rather than by a second elementwise pass over dx (read twice, written twice).
    #: H100, bf16 (8192, 4096) forward and backward: 318.4 -> 300.5 us (ATen's composition 364.9).
    row_bwd_fold_dh: bool = True
    #: Per-channel sums (batch norm's statistics and backward sums, weight norm): elements of a tile (None:
    #: the strip rule), programs per SM, pipeline stages of the loop's loads (None: Triton does not pipeline
    #: a loop without a dot), whether split s takes steps s, s + S, ... (all splits sweep the tensor
    #: together) instead of a run of its own, and sums of x - pivot and its square (the pivot one element of
    #: the channel) instead of a Welford update with a division per element.
    sums_tile: int | None = None
    sums_programs_per_sm: int = 2
    sums_stages: int | None = 3
    sums_interleaved: bool = True
    sums_shifted: bool = False
    #: The passes that follow the sums (batch norm's normalisation, its dx) walk the tensor from its end:
    #: after interleaved sums, the data read last is still in L2 (50 MB on an H100) when they start.
    apply_reversed: bool = True
    #: Elements of a tile of the per-channel elementwise passes (batch norm's normalisation, its dx; None:
    #: the strip rule's 4K).
    apply_tile: int | None = None
    #: Batch norm training with at most this many splits of the sums a channel: each normalising program merges
    #: its channels' partial statistics itself (the program of a channel's first tile saves and updates them)
    #: instead of a small kernel writing a table of coefficients first: one launch, and the idle time around
    #: it, less, for 3 x splits partials a channel read by every program instead of 3 coefficients (0: never).
    #: On an H100 (ab_norm): fp32 (8,512,64,64), one split, 97.0 -> 77.5 us (1.02x ATen); (32,256,56,56),
    #: eight splits, 118.4 -> 118.0 us.
    merge_in_apply: int = 64
    #: Row norm forward (layer and RMS norm, N <= MAX_ROW_BLOCK): elements of a tile (None: the tile rule's 4K,
    #: one row of 4096) and warps (None: 16 values a thread).
    row_fwd_tile: int | None = None
    row_fwd_warps: int | None = None
    #: Row norm forward, rows held in registers: weight and bias loaded with the row, their latency hidden behind
    #: its loads, rather than after the reductions (48 registers for layer norm at 8 warps, rows of 4096); layer
    #: norm's mean and variance from one reduction of shifted sums rather than two in a row (2 barriers instead of
    #: 5); cache hints (x and y evict-first / streaming, the parameters evict-last); a cap on registers a thread
    #: (None: ptxas decides). On an H100, bf16 (8192, 4096) (benchmark/results/2026-11-27-h100-4/logs/
    #: ab_norm_fwd*.txt): weight first, layer norm 51.1 -> 50.4 us, RMS norm 50.9 -> 49.9 and 50.1 -> 49.9; the
    #: one-pass moments, the hints and a cap of 32 registers (8 programs an SM instead of 6) tied or lost.
    row_fwd_params_first: bool = True
    row_fwd_one_pass: bool = False
    row_fwd_stream: bool = False
    row_fwd_maxnreg: int | None = None
    #: (Holding weight, bias and row in their own dtype until used, and the output as one FMA with w * rstd
    #: folded, tied or lost on an H100: layer norm 50.6-51.3 us against 51.0, RMS norm 50.3-50.5 against 49.9,
    #: `ab_norm_fwd3.txt` there; those variants were removed.)


#: The knobs every plan reads.
KNOBS = Knobs()


def cdiv(a: int, b: int) -> int:
    # Plain integer helpers: triton.cdiv and triton.next_power_of_2 cost microseconds a call from Python.
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def warps(elements: int, per_thread: int = 16) -> int:
    """Warps for a tile of ``elements`` held in registers: ``per_thread`` values a thread, 4 to 16 warps."""
    if device.interpreter:
        return 4
    return min(16, max(4, elements // (32 * per_thread)))


def row_backward_tile(itemsize: int) -> int | None:
    """Elements of a row-norm backward tile: ``KNOBS.row_bwd_tile``, else 16 KB of input on the GPU."""
    if KNOBS.row_bwd_tile or device.interpreter:
        return KNOBS.row_bwd_tile
    return 16384 // itemsize


def row_tile(rows: int, cols: int, tile: int | None = None) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of a tile of about ``tile`` elements (default ``_TILE``) holding whole rows of
    ``cols`` elements; narrow rows share a program."""
    block_n = next_pow2(max(cols, 1))
    block_m = min(next_pow2(max(rows, 1)), max(1, (tile or _TILE) // block_n))
    return block_m, block_n


def chunk() -> int:
    """Elements a looped kernel handles per step over a row or a group too wide for registers."""
    return 16384 if device.interpreter else 4096


def _padded_block(inner: int, top: int) -> int:
    """The largest power of two <= ``top`` (and >= 64 unless ``inner`` is smaller) whose padding of
    ``inner`` idles at most 1/8 of the lanes, else the one idling fewest: 56x56 = 3136 takes 512
    (7 steps, 87.5% of lanes busy) rather than 2048 (77%)."""
    best, best_waste = top, 1.0
    block = top
    while block >= min(64, top):
        waste = 1 - inner / (cdiv(inner, block) * block)
        if waste <= 0.125:
            return block
        if waste < best_waste:
            best, best_waste = block, waste
        block //= 2
    return best


def strip_tile(channels: int, inner: int, inner_contiguous: bool, tile: int | None = None) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_K) of a tile of about ``tile`` elements (default ``_TILE``) over ``channels`` x ``inner``.

    The contiguous axis gets the long side (coalesced loads), the other fills the tile up to its size.
    """
    tile = tile or _TILE
    if inner_contiguous:
        top = min(next_pow2(max(inner, 1)), 16384 if device.interpreter else 2048, next_pow2(tile))
        block_k = _padded_block(inner, top)
        block_c = min(next_pow2(max(channels, 1)), max(1, tile // block_k))
    else:
        block_c = min(next_pow2(max(channels, 1)), 256 if device.interpreter else 64)
        block_k = min(next_pow2(max(inner, 1)), max(1, tile // block_c))
    return block_c, block_k


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def programs(work: int, per_sm: int = 2) -> int:
    """Programs of a grid whose programs loop over ``work`` items: a few per SM, at most one per item.

    Loops keep per-program partial results (weight gradients, statistics) few, so that reducing them
    afterwards costs little, while several programs an SM still hide memory latency. Two per SM ran
    the layer/RMS norm backward fastest on an H100 (1 and 3 were 20-40% slower).
    """
    if device.interpreter:
        return max(1, min(work, 4))
    return max(1, min(work, _sm_count(torch.cuda.current_device()) * per_sm))


#: Plans a cache keeps: beyond this many signatures (prefills of every length) the oldest are dropped.
MAX_PLANS = 1024
_every_plans: list[Plans] = []


class Plans(dict):
    """What calls of one signature share, worked out on the first of them: launches with their grids,
    constexprs and Triton's specialisation of the integers, the outputs' shapes and dtypes, whether the
    kernels take the call at all. ``plans.get(key) or plans.add(key, *args)`` is the one lookup a call
    makes; ``build(*args)`` makes the plan, which must be truthy (a callable, a ``ReadyLaunch``, a tuple).

    The key must name everything the plan depends on (``signature`` of each tensor, the flags), so that
    a plan built from one call's arguments serves every call with that key.
    """

    __slots__ = ("build",)

    def __init__(self, build) -> None:
        super().__init__()
        self.build = build
        _every_plans.append(self)

    def add(self, key, *args):
        """``build(*args)`` kept under ``key``, the oldest plan dropped from a full cache."""
        plan = self.build(*args)
        if len(self) >= MAX_PLANS:
            self.pop(next(iter(self)), None)
        self[key] = plan
        return plan


def clear_plans() -> None:
    """Forget every plan of the family, and the calls core replays from C++, so that the next calls build
    theirs anew (after a knob changes)."""
    for plans in _every_plans:
        plans.clear()
    native.clear()


class _ToAten:
    """The plan of a call the kernels do not take: its caller hands the call to ATen."""

    def __repr__(self) -> str:
        return "TO_ATEN"


TO_ATEN = _ToAten()


def no_grads(*args) -> tuple[None, None, None]:
    """The plan of a backward asked for no gradient."""
    return None, None, None


def dtype_of(t: torch.Tensor | None) -> torch.dtype | None:
    """``t``'s dtype, None for an absent tensor."""
    return None if t is None else t.dtype


def signature(t: torch.Tensor | None) -> tuple | None:
    """What a plan may depend on of a tensor argument: shape, strides, dtype and device (None for None).
    The device as ``get_device()``'s index (-1 off the GPU), cheaper to read than a ``torch.device``."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.get_device())


def launch(kernel, grid: tuple, args: list, num_warps: int, **constexprs) -> None:
    """Launch ``kernel`` over ``grid``. The compiled kernel is kept per constexprs, dtypes and Triton's
    specialisation of ``args``, so a repeated call skips Triton's launch path.

    ``constexprs`` must be the kernel's last parameters, given in signature order.
    """
    # The launcher is kept per tensor dtypes too, as ReadyLaunch's key names the integers only.
    dtypes = tuple([a.dtype for a in args if isinstance(a, torch.Tensor)])
    shared_launcher(kernel, constexprs, dtypes, num_warps=num_warps)(
        grid, args, None if device.interpreter else specialization(args))


class ReadyLaunch:
    """A launch fixed but for its tensors (and float scalars): the kernel's launcher, grid, and Triton's
    specialisation of its integer arguments, worked out once, so that a call only checks pointer
    alignment. For the calls of a hot path (a decoding step launches the same few shapes every token).

    The ``args`` of each call are: one tensor per entry of ``dtypes``, of that dtype; then the integers
    ``ints`` given here; then only Python floats. What varies between calls (pointers) is checked.
    """

    __slots__ = ("launcher", "grid", "tensors", "spec")

    def __init__(self, kernel, grid: tuple, num_warps: int, dtypes: tuple, ints: tuple, maxnreg: int | None = None,
                 **constexprs) -> None:
        # Kept per dtypes: the key below names the integers only. ``maxnreg`` caps registers a thread.
        options = {"num_warps": num_warps} if maxnreg is None else {"num_warps": num_warps, "maxnreg": maxnreg}
        self.launcher = shared_launcher(kernel, constexprs, dtypes, **options)
        self.grid = grid
        self.tensors = len(dtypes)
        # Triton's key for the ints (1, divisible by 16, width); the tag keeps it apart from the full
        # specialisation() tuples that launch() files in the same launcher.
        self.spec = None if device.interpreter else ("aligned", *specialization(ints))

    def __call__(self, args: tuple, inputs_aligned: bool | None = None) -> None:
        """Launch with ``args``. ``inputs_aligned``: ``caller_aligned`` of the tensors among ``args`` that
        the caller did not allocate for this call, where it knows them (fresh tensors are always aligned);
        None checks every pointer."""
        spec = self.spec
        # Every pointer 16-byte aligned is the case the key names; any other takes Triton's full
        # specialisation as its key.
        if spec is not None and not (aligned(args[:self.tensors]) if inputs_aligned is None else inputs_aligned):
            spec = specialization(args)
        self.launcher(self.grid, args, spec)


def caller_aligned(*tensors) -> bool:
    """Whether each of ``tensors`` (None for an absent one) starts at a 16-byte aligned address: for the
    tensors a call was given, checked once for all its launches (``ReadyLaunch``'s ``inputs_aligned``).
    True on the interpreter, which does not specialise."""
    return device.interpreter or aligned([t for t in tensors if t is not None])
