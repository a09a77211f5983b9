"""A small Llama-style decoder in plain torch, for timing one decoding step with and without gems.

Random weights, no download: RMSNorm, rotary embeddings, grouped-query attention through
``F.scaled_dot_product_attention`` over a static KV cache, a SwiGLU MLP and a tied LM head. One step
takes the previous token (a device tensor, so greedy decoding never waits on the host) and returns
the logits of the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Config:
    hidden: int = 2048
    layers: int = 16
    heads: int = 32
    kv_heads: int = 8
    intermediate: int = 8192
    vocab: int = 128256
    max_len: int = 1024
    eps: float = 1e-5
    rope_theta: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA_1B = Config()
TINY = Config(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256, max_len=16)


class Decoder:
    """Weights, caches and the step function of one batch-1 decoder."""

    def __init__(self, config: Config, device: str, dtype: torch.dtype, seed: int = 0) -> None:
        self.config = c = config
        gen = torch.Generator(device=device).manual_seed(seed)

        def weight(*shape, scale=None):
            scale = scale if scale is not None else shape[-1] ** -0.5
            return (torch.randn(*shape, generator=gen, device=device) * scale).to(dtype)

        kv = c.kv_heads * c.head_dim
        self.embed = weight(c.vocab, c.hidden, scale=1.0)
        self.layers = [{
            "attn_norm": 1 + weight(c.hidden, scale=0.1), "mlp_norm": 1 + weight(c.hidden, scale=0.1),
            "q": weight(c.hidden, c.hidden), "k": weight(kv, c.hidden), "v": weight(kv, c.hidden),
            "o": weight(c.hidden, c.hidden), "gate": weight(c.intermediate, c.hidden),
            "up": weight(c.intermediate, c.hidden), "down": weight(c.hidden, c.intermediate),
        } for _ in range(c.layers)]
        self.final_norm = 1 + weight(c.hidden, scale=0.1)
        cache_shape = (1, c.kv_heads, c.max_len, c.head_dim)
        self.k_cache = [weight(*cache_shape, scale=1.0) for _ in range(c.layers)]
        self.v_cache = [weight(*cache_shape, scale=1.0) for _ in range(c.layers)]
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim))
        angles = torch.outer(torch.arange(c.max_len, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.cos = angles.cos().to(device=device, dtype=dtype)
        self.sin = angles.sin().to(device=device, dtype=dtype)

    def _rope(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * self.cos[pos] + rotated * self.sin[pos]

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits (1, vocab) after ``token`` (a (1, 1) int64 tensor) at position ``pos``."""
        c = self.config
        h = F.embedding(token, self.embed)  # (1, 1, hidden)
        for i, p in enumerate(self.layers):
            x = F.rms_norm(h, (c.hidden,), p["attn_norm"], c.eps)
            q = F.linear(x, p["q"]).view(1, 1, c.heads, c.head_dim).transpose(1, 2)
            k = F.linear(x, p["k"]).view(1, 1, c.kv_heads, c.head_dim).transpose(1, 2)
            v = F.linear(x, p["v"]).view(1, 1, c.kv_heads, c.head_dim).transpose(1, 2)
            q, k = self._rope(q, pos), self._rope(k, pos)
            self.k_cache[i][:, :, pos] = k[:, :, 0]
            self.v_cache[i][:, :, pos] = v[:, :, 0]
            keys, values = self.k_cache[i][:, :, :pos + 1], self.v_cache[i][:, :, :pos + 1]
            attn = F.scaled_dot_product_attention(q, keys, values, enable_gqa=True)
            h = h + F.linear(attn.transpose(1, 2).reshape(1, 1, c.hidden), p["o"])
            x = F.rms_norm(h, (c.hidden,), p["mlp_norm"], c.eps)
            h = h + F.linear(F.silu(F.linear(x, p["gate"])) * F.linear(x, p["up"]), p["down"])
        h = F.rms_norm(h, (c.hidden,), self.final_norm, c.eps)
        return F.linear(h[:, -1], self.embed)

    def decode(self, token: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """Greedy decoding for ``steps`` tokens from position ``start``; returns the last logits."""
        logits = None
        for pos in range(start, start + steps):
            logits = self.step(token, pos)
            token = logits.argmax(dim=-1, keepdim=True)
        return logits
