"""Rotary position embedding of queries and keys: ``apply_rotary_pos_emb``.

Each head vector's first ``rotary_dim`` features are rotated pairwise by the angle of the token's
position; the rest pass through. The pairs are (i, i + rotary_dim/2) in the rotate-half form (Llama,
GPT-NeoX) and (2i, 2i+1) in the interleaved form (GPT-J). One launch handles q and k: a program takes
one token and a block of heads, loads the token's cos/sin row once and rotates those heads.
The backward is the same rotation by the opposite angle.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from flag_gems import native
from flag_gems.intmath import cdiv, next_power_of_2
from flag_gems.launch import launch
from flag_gems.runtime import device


@triton.jit
def _rotate_heads(x_ptr, out_ptr, x_row, out_row, head0, heads, x_head_stride, out_head_stride, c, s,
                  half, rest, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_REST: tl.constexpr,
                  INTERLEAVED: tl.constexpr):
    h = head0 + tl.arange(0, BLOCK_H)
    i = tl.arange(0, BLOCK_HALF)
    mask = (h[:, None] < heads) & (i[None, :] < half)
    if INTERLEAVED:
        first = 2 * i
        second = first + 1
    else:
        first = i
        second = i + half
    x_heads = x_ptr + x_row + h[:, None] * x_head_stride
    out_heads = out_ptr + out_row + h[:, None] * out_head_stride
    x1 = tl.load(x_heads + first[None, :], mask=mask).to(tl.float32)
    x2 = tl.load(x_heads + second[None, :], mask=mask).to(tl.float32)
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_heads + first[None, :], (x1 * c[None, :] - x2 * s[None, :]).to(out_ty), mask=mask)
    tl.store(out_heads + second[None, :], (x2 * c[None, :] + x1 * s[None, :]).to(out_ty), mask=mask)
    if BLOCK_REST > 0:
        # Features past the rotary dims are copied unchanged.
        j = 2 * half + tl.arange(0, BLOCK_REST)
        rest_mask = (h[:, None] < heads) & (j[None, :] < 2 * half + rest)
        tail = tl.load(x_heads + j[None, :], mask=rest_mask)
        tl.store(out_heads + j[None, :], tail.to(out_ty), mask=rest_mask)


@triton.jit
def rotary_kernel(q, k, q_out, k_out, cos, sin, positions, seq_len, q_heads, k_heads, q_blocks, half, rest,
                  q_sb, q_ss, q_sh, k_sb, k_ss, k_sh, qo_sb, qo_ss, qo_sh, ko_sb, ko_ss, ko_sh,
                  cos_stride, sin_stride, pos_sb, pos_ss,
                  BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_REST: tl.constexpr,
                  INTERLEAVED: tl.constexpr, HAS_POSITIONS: tl.constexpr, INVERSE: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    b = token // seq_len
    t = token % seq_len
    if HAS_POSITIONS:
        position = tl.load(positions + b * pos_sb + t * pos_ss).to(tl.int64)
    else:
        position = t
    i = tl.arange(0, BLOCK_HALF)
    c = tl.load(cos + position * cos_stride + i, mask=i < half).to(tl.float32)
    s = tl.load(sin + position * sin_stride + i, mask=i < half).to(tl.float32)
    if INVERSE:
        s = -s
    if block < q_blocks:
        _rotate_heads(q, q_out, b * q_sb + t * q_ss, b * qo_sb + t * qo_ss, block * BLOCK_H, q_heads, q_sh, qo_sh,
                      c, s, half, rest, BLOCK_H, BLOCK_HALF, BLOCK_REST, INTERLEAVED)
    else:
        _rotate_heads(k, k_out, b * k_sb + t * k_ss, b * ko_sb + t * ko_ss, (block - q_blocks) * BLOCK_H,
                      k_heads, k_sh, ko_sh, c, s, half, rest, BLOCK_H, BLOCK_HALF, BLOCK_REST, INTERLEAVED)


def _blocks(heads: int, half: int) -> tuple[int, int]:
    """(BLOCK_H, num_warps): about 2K rotated pairs per program on the GPU, every head on the
    interpreter (where each program costs milliseconds)."""
    block_half = next_power_of_2(half)
    if device.interpreter:
        return next_power_of_2(heads), 4
    block_h = max(1, min(next_power_of_2(heads), 2048 // block_half))
    return block_h, 4 if block_h * block_half <= 1024 else 8


def _token_strides(x: torch.Tensor) -> tuple[int, int, int]:
    # (batch, sequence, head) strides; a 3-d (tokens, heads, dim) tensor is one batch of tokens.
    if x.dim() == 4:
        return x.stride(0), x.stride(1), x.stride(2)
    return 0, x.stride(0), x.stride(1)


def _rotate(q, k, cos, sin, positions, interleaved: bool, inverse: bool):
    """The kernel launch shared by forward and backward: new q and k tensors."""
    seq_len = q.shape[-3]
    tokens = q.numel() // (q.shape[-1] * q.shape[-2]) if q.numel() else 0
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if tokens == 0 or k.numel() == 0:
        return q_out, k_out
    half = cos.shape[-1]
    rest = q.shape[-1] - 2 * half
    q_heads, k_heads = q.shape[-2], k.shape[-2]
    block_h, warps = _blocks(max(q_heads, k_heads), half)
    q_blocks = cdiv(q_heads, block_h)
    grid = (tokens, q_blocks + cdiv(k_heads, block_h))
    has_positions = positions is not None
    if not has_positions:
        positions = cos  # never read: a tensor keeps the argument list fixed for the cached launcher
    launch(rotary_kernel, grid, q, k, q_out, k_out, cos, sin, positions, seq_len, q_heads, k_heads, q_blocks,
           half, rest, *_token_strides(q), *_token_strides(k), *_token_strides(q_out), *_token_strides(k_out),
           cos.stride(0), sin.stride(0), positions.stride(0) if has_positions else 0,
           positions.stride(1) if has_positions else 0, num_warps=warps,
           BLOCK_H=block_h, BLOCK_HALF=next_power_of_2(half),
           BLOCK_REST=next_power_of_2(rest) if rest else 0, INTERLEAVED=interleaved,
           HAS_POSITIONS=has_positions, INVERSE=inverse)
    return q_out, k_out


class _RotaryEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin, positions, interleaved):
        ctx.save_for_backward(cos, sin, positions)
        ctx.interleaved = interleaved
        return _rotate(q, k, cos, sin, positions, interleaved, inverse=False)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos, sin, positions = ctx.saved_tensors
        grad_q, grad_k = _rotate(_last_dim_dense(grad_q), _last_dim_dense(grad_k), cos, sin, positions,
                                 ctx.interleaved, inverse=True)
        return grad_q, grad_k, None, None, None, None


def _last_dim_dense(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _cache_half(cache: torch.Tensor, head_dim: int, interleaved: bool) -> torch.Tensor:
    # A cache of head_dim columns holds every angle twice (Llama's cat(freqs, freqs), or GPT-J's
    # repeat_interleave): keep one of each.
    if cache.shape[-1] == head_dim:
        cache = cache[:, ::2] if interleaved else cache[:, : head_dim // 2]
    return _last_dim_dense(cache)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         position_ids: torch.Tensor | None = None,
                         rotary_interleaved: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of queries and keys, differentiable in q and k (the caches are constants).

    ``q``: (batch, seq, q_heads, head_dim) or (tokens, q_heads, head_dim); ``k`` likewise with its
    own head count. ``cos``/``sin``: (max_positions, rotary_dim // 2), or (max_positions, head_dim)
    with every angle repeated as in Llama's cache; features past rotary_dim pass through.
    ``position_ids``: (batch, seq) or (seq,) for 4-d inputs, (tokens,) for 3-d; by default a
    token's position is its index in the sequence. ``rotary_interleaved`` pairs features (2i, 2i+1)
    instead of (i, i + rotary_dim/2). Returns (q_embed, k_embed) in q's and k's dtypes.
    """
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return _rotary(q, k, cos, sin, position_ids, rotary_interleaved)
    return _rotary_op(q, k, cos, sin, position_ids, bool(rotary_interleaved))


def _rotary(q, k, cos, sin, position_ids, rotary_interleaved):
    if q.dim() not in (3, 4) or k.dim() != q.dim() or k.shape[:-2] != q.shape[:-2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(f"q and k must be (batch, seq, heads, dim) or (tokens, heads, dim) with matching "
                         f"leading dims and head_dim; got {tuple(q.shape)} and {tuple(k.shape)}")
    head_dim = q.shape[-1]
    cos = _cache_half(cos, head_dim, rotary_interleaved)
    sin = _cache_half(sin, head_dim, rotary_interleaved)
    if cos.dim() != 2 or cos.shape != sin.shape or 2 * cos.shape[-1] > head_dim:
        raise ValueError(f"cos and sin must be (positions, rotary_dim // 2) or (positions, head_dim) with "
                         f"rotary_dim <= head_dim; got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if position_ids is None and q.shape[-3] > cos.shape[0]:
        raise ValueError(f"{q.shape[-3]} positions need cos/sin caches of as many rows; got {cos.shape[0]}")
    if position_ids is not None:
        leading = q.shape[:-2]
        position_ids = position_ids.expand(leading) if q.dim() == 4 else position_ids.reshape(leading)
        if q.dim() == 3:
            position_ids = position_ids.unsqueeze(0)
    q, k = _last_dim_dense(q), _last_dim_dense(k)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return _RotaryEmbedding.apply(q, k, cos, sin, position_ids, bool(rotary_interleaved))
    return _rotate(q, k, cos, sin, position_ids, bool(rotary_interleaved), inverse=False)


# Without an autograd node to build (a decoding step), the whole function is an op of the dispatcher: a
# signature's later calls replay from C++, checks included (the same signature passes them alike).
_rotary_op = native.function_op(
    "gems_pointwise", "apply_rotary_pos_emb(Tensor q, Tensor k, Tensor cos, Tensor sin, Tensor? position_ids, "
    "bool rotary_interleaved) -> (Tensor, Tensor)", _rotary,
    lambda q, k, *_: (q.new_empty(q.shape), k.new_empty(k.shape)))
