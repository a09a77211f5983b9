"""Fused rotary position embedding (RoPE), rotate-half convention, with its backward.

For ``x`` of shape (..., seq, head_dim) split into halves x1, x2 along the last dim, and ``cos``,
``sin`` of shape (seq, head_dim // 2)::

    out = cat(x1 * cos - x2 * sin, x2 * cos + x1 * sin)

One kernel reads x and the angle tables once and writes the result once, where the unfused formula
makes five passes over x. The backward is the rotation by the opposite angle: the same kernel with
sin negated.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems.launch import Launcher, specialization
from flag_gems.runtime import device


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, seq, heads,
                 stride_b, stride_h, stride_s, stride_cs,
                 HALF: tl.constexpr, SIGN: tl.constexpr, FP64: tl.constexpr,
                 BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)  # int64: batch * heads * seq * head_dim may pass 2**31
    rows = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < seq) & (cols[None, :] < HALF)
    x_base = x_ptr + (bh // heads) * stride_b + (bh % heads) * stride_h
    x_offs = rows[:, None].to(tl.int64) * stride_s + cols[None, :]
    cs_offs = rows[:, None] * stride_cs + cols[None, :]
    compute = tl.float64 if FP64 else tl.float32
    # Converted right after loading: the GPU wants fp32 math for half types, the interpreter needs it for bf16.
    x1 = tl.load(x_base + x_offs, mask=mask).to(compute)
    x2 = tl.load(x_base + x_offs + HALF, mask=mask).to(compute)
    c = tl.load(cos_ptr + cs_offs, mask=mask).to(compute)
    s = tl.load(sin_ptr + cs_offs, mask=mask).to(compute) * SIGN
    out_base = out_ptr + bh * seq * (2 * HALF)
    out_offs = rows[:, None].to(tl.int64) * (2 * HALF) + cols[None, :]
    tl.store(out_base + out_offs, (x1 * c - x2 * s).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_base + out_offs + HALF, (x2 * c + x1 * s).to(out_ptr.dtype.element_ty), mask=mask)


def _blocks(seq: int, half: int) -> tuple[int, int, int]:
    """(BLOCK_S, BLOCK_D, num_warps): a whole half row per program, and about 4K elements of each half
    per program on the GPU (enough bytes in flight per SM); few large programs on the interpreter."""
    block_d = triton.next_power_of_2(half)
    budget = 16384 if device.interpreter else 4096
    block_s = max(1, min(triton.next_power_of_2(seq), budget // block_d))
    return block_s, block_d, 4 if block_s * block_d <= 2048 else 8


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fusable(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """Whether the kernel handles this case; every other one takes the reference formula."""
    if x.dim() < 2 or x.dim() > 4 or x.shape[-1] % 2 or x.stride(-1) != 1:
        return False
    seq, half = x.shape[-2], x.shape[-1] // 2
    tables = (cos, sin)
    return (x.device.type == device.name and all(t.device == x.device for t in tables)
            and all(t.dtype in _FLOATS for t in (x, *tables))
            and all(t.shape == (seq, half) and t.stride(-1) == 1 and t.stride(0) == cos.stride(0) for t in tables)
            and not cos.requires_grad and not sin.requires_grad)


# One launcher per (dtypes, constexprs): a compiled kernel is specific to its pointers' dtypes.
_launchers: dict[tuple, Launcher] = {}


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: int, dtype: torch.dtype) -> torch.Tensor:
    if not device.interpreter and x.device.index != torch.cuda.current_device():
        with torch.cuda.device(x.device):  # Triton launches on the current device: make it the tensor's
            return _launch(x, cos, sin, sign, dtype)
    x4 = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))  # a view: x.stride(-1) == 1 was checked
    batch, heads, seq, head_dim = x4.shape
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_s, block_d, warps = _blocks(seq, head_dim // 2)
    key = (x.dtype, cos.dtype, sin.dtype, dtype, head_dim, sign, block_s, block_d, warps)
    launcher = _launchers.get(key)
    if launcher is None:
        constexprs = {"HALF": head_dim // 2, "SIGN": sign, "FP64": torch.float64 in (x.dtype, cos.dtype, sin.dtype),
                      "BLOCK_S": block_s, "BLOCK_D": block_d}
        launcher = _launchers[key] = Launcher(_rope_kernel, constexprs, num_warps=warps)
    args = [x4, cos, sin, out, seq, heads, x4.stride(0), x4.stride(1), x4.stride(2), cos.stride(0)]
    launcher((batch * heads, triton.cdiv(seq, block_s), 1), args,
             None if device.interpreter else specialization(args))
    return out


def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The unfused formula, in plain torch: the definition :func:`rope` follows."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        return _launch(x, cos, sin, 1, torch.promote_types(x.dtype, torch.promote_types(cos.dtype, sin.dtype)))

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        if grad.stride(-1) != 1:
            grad = grad.contiguous()
        return _launch(grad, cos, sin, -1, ctx.x_dtype), None, None


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (..., seq, head_dim) with angle tables ``cos``, ``sin`` of shape
    (seq, head_dim // 2): the value, dtype and gradient of :func:`rope_reference`, in one kernel.

    ``x`` may be a strided view such as (batch, seq, heads, head_dim).transpose(1, 2). Cases the kernel
    does not cover (other table shapes, tables that need a gradient, other devices) use the formula.
    """
    if not _fusable(x, cos, sin):
        return rope_reference(x, cos, sin)
    return _Rope.apply(x, cos, sin)
