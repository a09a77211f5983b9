"""The softmax family: _softmax, _log_softmax, _safe_softmax and their backward, on the row skeleton.

Along the softmax dim R (see ``rows``):
- R fits a block: one load, the statistics, one store (1 read + 1 write);
- longer: a first loop keeps a running (max, sum of exp) per lane (online softmax), a second loop,
  walking back so that the most recently read blocks are still in L2, writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.runtime import device
from gems_reduction import layout as lay
from gems_reduction import rows
from gems_reduction.reduce import convert, tl_dtype
from gems_reduction.rows import lanes, online_update, safe_shift, tile, tile_mask


@triton.jit
def _softmax_value(x, m, s, LOG: tl.constexpr, SAFE: tl.constexpr, AXIS: tl.constexpr):
    m_t = tl.expand_dims(m, AXIS)
    if LOG:
        y = x - m_t - tl.expand_dims(tl.log(s), AXIS)
    else:
        y = tl.exp(x - m_t) / tl.expand_dims(s, AXIS)
    if SAFE:
        y = tl.where(m_t == float("-inf"), 0.0, y)
    return y


@triton.jit
def _softmax_fwd_kernel(
    x_ptr, y_ptr, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, SAFE: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    lane_off, lane_mask = lanes(tl.program_id(0), L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    r = tl.arange(0, BLOCK_R)
    if INT64:
        r = r.to(tl.int64)
    if ONE_PASS:
        offs = tile(lane_off, r * r_stride, AXIS)
        mask = tile_mask(lane_mask, r < R, AXIS)
        x = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0).to(ACC), float("-inf"))
        m = tl.max(x, AXIS)
        s = tl.sum(tl.exp(x - tl.expand_dims(safe_shift(m), AXIS)), AXIS)
        tl.store(y_ptr + offs, convert(_softmax_value(x, m, s, LOG, SAFE, AXIS), y_ptr.dtype.element_ty), mask=mask)
    else:
        m = tl.full([BLOCK_L], float("-inf"), ACC)
        s = tl.zeros([BLOCK_L], ACC)
        for r0 in range(0, R, BLOCK_R):
            offs = tile(lane_off, (r0 + r) * r_stride, AXIS)
            mask = tile_mask(lane_mask, r0 + r < R, AXIS)
            x = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0).to(ACC), float("-inf"))
            m, s = online_update(m, s, x, AXIS)
        blocks = tl.cdiv(R, BLOCK_R)
        for i in range(0, blocks):
            r0 = (blocks - 1 - i) * BLOCK_R
            offs = tile(lane_off, (r0 + r) * r_stride, AXIS)
            mask = tile_mask(lane_mask, r0 + r < R, AXIS)
            x = tl.load(x_ptr + offs, mask=mask, other=0).to(ACC)
            y = _softmax_value(x, m, s, LOG, SAFE, AXIS)
            tl.store(y_ptr + offs, convert(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_value(g, y, total, LOG: tl.constexpr, AXIS: tl.constexpr):
    if LOG:
        gi = g - tl.exp(y) * tl.expand_dims(total, AXIS)
    else:
        gi = y * (g - tl.expand_dims(total, AXIS))
    return gi


@triton.jit
def _softmax_bwd_kernel(
    g_ptr, y_ptr, gi_ptr, R, L, lane_blocks, lane_stride, r_stride, outer_stride,
    LOG: tl.constexpr, AXIS: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
    INT64: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """softmax: gi = y * (g - sum(g * y)); log_softmax: gi = g - exp(y) * sum(g)."""
    lane_off, lane_mask = lanes(tl.program_id(0), L, lane_blocks, lane_stride, outer_stride, INT64, BLOCK_L)
    r = tl.arange(0, BLOCK_R)
    if INT64:
        r = r.to(tl.int64)
    if ONE_PASS:
        offs = tile(lane_off, r * r_stride, AXIS)
        mask = tile_mask(lane_mask, r < R, AXIS)
        g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
        y = tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
        if LOG:
            total = tl.sum(g, AXIS)
        else:
            total = tl.sum(g * y, AXIS)
        gi = _backward_value(g, y, total, LOG, AXIS)
        tl.store(gi_ptr + offs, convert(gi, gi_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tile(tl.zeros([BLOCK_L], ACC), tl.zeros([BLOCK_R], ACC), AXIS)
        for r0 in range(0, R, BLOCK_R):
            offs = tile(lane_off, (r0 + r) * r_stride, AXIS)
            mask = tile_mask(lane_mask, r0 + r < R, AXIS)
            g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
            if LOG:
                acc += g
            else:
                acc += g * tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
        total = tl.sum(acc, AXIS)
        blocks = tl.cdiv(R, BLOCK_R)
        for i in range(0, blocks):
            r0 = (blocks - 1 - i) * BLOCK_R
            offs = tile(lane_off, (r0 + r) * r_stride, AXIS)
            mask = tile_mask(lane_mask, r0 + r < R, AXIS)
            g = tl.load(g_ptr + offs, mask=mask, other=0).to(ACC)
            y = tl.load(y_ptr + offs, mask=mask, other=0).to(ACC)
            gi = _backward_value(g, y, total, LOG, AXIS)
            tl.store(gi_ptr + offs, convert(gi, gi_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------
# Launching


def softmax_tiles(lane_count: int, length: int, outer: int, columns: bool, itemsize: int):
    """The tile policy of softmax-like kernels: a row of up to 16K elements is held in registers (one
    pass); longer rows loop over 16 KB blocks. Short rows are packed several per program, never
    fewer than ~4 programs per SM."""
    padded = triton.next_power_of_2(length)
    if device.interpreter:
        block_r = min(padded, 16384)
        block_l = min(triton.next_power_of_2(lane_count), max(1, 16384 // block_r))
        return block_l, block_r, dict(ONE_PASS=block_r >= length), 4
    hold = 16384
    if columns:
        # Whole columns in registers when 16 lanes of them fit (one pass beats wider lanes).
        block_l = rows.lane_width(lane_count, outer)
        one_pass = padded * min(block_l, 16) <= hold
        if one_pass:
            block_l = min(block_l, hold // padded)
        block_r = padded if one_pass else max(1, (16384 // itemsize) // block_l)
    else:
        one_pass = padded <= hold
        block_r = padded if one_pass else 16384 // itemsize
        spread = triton.next_power_of_2(triton.cdiv(lane_count, 4 * lay.sm_count()))
        block_l = max(1, min(4096 // block_r if one_pass else 1, spread))
    return block_l, block_r, dict(ONE_PASS=one_pass), max(4, min(16, block_l * block_r // 512))


class _Call:
    """A ready softmax-like call: the launch (None for an empty tensor), the result dtype, and whether
    the input needs a contiguous copy first."""

    __slots__ = ("launch", "out_dtype", "copy")

    def __init__(self, launch, out_dtype, copy):
        self.launch = launch
        self.out_dtype = out_dtype
        self.copy = copy

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if self.copy:
            x = x.contiguous()
        if out is None:
            y = torch.empty_like(x, dtype=self.out_dtype, memory_format=torch.contiguous_format)
        else:
            y = lay.new_output(out, x.shape, self.out_dtype, x)
        if self.launch is not None:
            self.launch([x, y], x.data_ptr() | y.data_ptr())
        return y if out is None else lay.deliver(y, out)


def _forward_call(x, dim, half_to_float, log, safe) -> _Call | None:
    # half_to_float: a float16 input gives a float32 result (other dtypes: ATen's error).
    out_dtype = x.dtype if not half_to_float else torch.float32 if x.dtype == torch.float16 else None
    dims = lay.wrap_dims(dim, x.dim())
    if dims is None or x.dtype not in lay.FLOATING or out_dtype not in lay.FLOATING:
        return None
    launch = None
    if x.numel():
        d = dims[0] if dims else 0
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        key = (_softmax_fwd_kernel, tuple(x.shape), d, x.dtype, out_dtype, log, safe, lay.force_int64)
        launch = rows.plan(_softmax_fwd_kernel, key, x.shape, d, x.element_size(), softmax_tiles, LOG=log,
                           SAFE=safe, ACC=tl_dtype(acc))
    return _Call(launch, out_dtype, not x.is_contiguous())


def _forward(x, dim, half_to_float, out, log, safe):
    key = (_forward, log, safe, x.shape, x.stride(), x.dtype, dim, half_to_float, lay.force_int64)
    call = lay.calls.get(key)
    if call is None:
        call = _forward_call(x, dim, half_to_float, log, safe)
        if call is None:
            return NotImplemented
        lay.remember(key, call)
    if out is not None and out.dtype != call.out_dtype:
        return NotImplemented
    return call(x, out)


def softmax(x, dim, half_to_float, *, out=None):
    """_softmax / _softmax.out (``half_to_float``: a float16 input gives a float32 result)."""
    return _forward(x, dim, half_to_float, out, False, False)


def log_softmax(x, dim, half_to_float, *, out=None):
    """_log_softmax / _log_softmax.out."""
    return _forward(x, dim, half_to_float, out, True, False)


def safe_softmax(x, dim, dtype=None):
    """_safe_softmax: softmax whose rows of -inf only give zeros instead of NaN."""
    if dtype is not None and dtype != x.dtype:
        if dtype not in lay.FLOATING or x.dtype not in lay.FLOATING:
            return NotImplemented
        x = x.to(dtype)
    return _forward(x, dim, False, None, False, True)


def _backward(grad, output, dim, input_dtype, grad_input, log):
    dims = lay.wrap_dims(dim, output.dim())
    widened = grad.dtype == torch.float32 and input_dtype == torch.float16
    if (dims is None or grad.dtype not in lay.FLOATING or output.dtype != grad.dtype
            or (grad.dtype != input_dtype and not widened) or grad.shape != output.shape
            or (grad_input is not None and grad_input.dtype != input_dtype)):
        return NotImplemented
    grad, output = grad.contiguous(), output.contiguous()
    result = lay.new_output(grad_input, grad.shape, input_dtype, grad)
    if grad.numel():
        d = dims[0] if dims else 0
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        key = (_softmax_bwd_kernel, grad.shape, d, grad.dtype, input_dtype, log, lay.force_int64)
        rows.launch(_softmax_bwd_kernel, key, (grad, output, result), grad.shape, d, softmax_tiles, LOG=log,
                    ACC=tl_dtype(acc))
    return lay.deliver(result, grad_input)


def softmax_backward(grad_output, output, dim, input_dtype, *, grad_input=None):
    """_softmax_backward_data / _softmax_backward_data.out."""
    return _backward(grad_output, output, dim, input_dtype, grad_input, False)


def log_softmax_backward(grad_output, output, dim, input_dtype, *, out=None):
    """_log_softmax_backward_data / _log_softmax_backward_data.out."""
    return _backward(grad_output, output, dim, input_dtype, out, True)
