"""A Llama-style decoder in plain torch, run on gems and on ATen and compared.

    python examples/llama.py                   # tiny on Triton's interpreter, hidden 4096 on a GPU
    python examples/llama.py --hidden 1024 --layers 4 --dtype bfloat16

RMSNorm, rotary position embedding, grouped-query attention through
``F.scaled_dot_product_attention`` and a SwiGLU MLP; random weights, random tokens, nothing
downloaded. The model code has no flag_gems in it: gems serves its ATen ops from below.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from model_check import check_model, default_dtype, parser, report
from torch import nn

import flag_gems


@dataclass
class LlamaConfig:
    vocab: int = 32000
    hidden: int = 4096
    layers: int = 2
    heads: int = 32
    kv_heads: int = 8
    ffn: int = 11008
    seq: int = 1024
    batch: int = 2
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def default_config() -> LlamaConfig:
    """Tiny on the interpreter (seconds per step); Llama-7B-wide layers on a GPU."""
    if flag_gems.runtime.device.interpreter:
        return LlamaConfig(vocab=64, hidden=32, layers=2, heads=4, kv_heads=2, ffn=64, seq=8, batch=2)
    return LlamaConfig()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, (seq, head_dim // 2), in float32."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head's vector by the position's angles (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        hd = config.head_dim
        self.q = nn.Linear(config.hidden, config.heads * hd, bias=False)
        self.k = nn.Linear(config.hidden, config.kv_heads * hd, bias=False)
        self.v = nn.Linear(config.hidden, config.kv_heads * hd, bias=False)
        self.o = nn.Linear(config.heads * hd, config.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = self.config
        batch, seq, _ = x.shape
        q = self.q(x).view(batch, seq, c.heads, c.head_dim).transpose(1, 2)
        k = self.k(x).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v(x).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        groups = c.heads // c.kv_heads  # grouped-query attention: each k/v head serves `groups` q heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(batch, seq, c.heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.hidden, config.ffn, bias=False)
        self.up = nn.Linear(config.hidden, config.ffn, bias=False)
        self.down = nn.Linear(config.ffn, config.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden, config.eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden, config.eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.eps)
        self.lm_head = nn.Linear(config.hidden, config.vocab, bias=False)
        cos, sin = rope_tables(config.seq, config.head_dim, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for module in self.modules():  # Llama's initialisation: N(0, 0.02)
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        seq = tokens.shape[1]
        cos, sin = self.cos[:seq], self.sin[:seq]  # computed in float32, held in the model's dtype
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build(config: LlamaConfig, dtype: torch.dtype, seed: int = 0):
    """The model on flag_gems' device, and ``run(model) -> (logits, loss)`` on one fixed random batch."""
    torch.manual_seed(seed)
    model = Llama(config).to(device=flag_gems.device, dtype=dtype)
    tokens = torch.randint(0, config.vocab, (config.batch, config.seq + 1), device=flag_gems.device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def run(m: nn.Module):
        logits = m(inputs)
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    return model, run


def main(argv=None) -> int:
    args = parser("A Llama-style decoder on gems, checked against ATen").parse_args(argv)
    config = replace(default_config(), **{k: v for k, v in vars(args).items()
                                          if k in ("hidden", "layers", "seq", "batch") and v is not None})
    dtype = default_dtype(args.dtype)
    model, run = build(config, dtype, args.seed)
    check, training = check_model(model, run, args.train_steps, args.timed_steps)
    title = (f"Llama-style decoder: hidden {config.hidden}, {config.layers} layers, {config.heads} heads "
             f"({config.kv_heads} kv), ffn {config.ffn}, vocab {config.vocab}, batch {config.batch} x seq "
             f"{config.seq}, {str(dtype).replace('torch.', '')} on {flag_gems.device}")
    return 0 if report(title, check, training) else 1


if __name__ == "__main__":
    sys.exit(main())
