"""A BERT-style encoder in plain torch, with a masked-language-model head, on gems and on ATen.

    python examples/bert.py                    # tiny on Triton's interpreter, hidden 4096 on a GPU
    python examples/bert.py --hidden 1024 --layers 4 --dtype float16

Token, position and segment embeddings, post-norm layers (LayerNorm) with bidirectional attention
through ``F.scaled_dot_product_attention`` under a padding mask, a GELU MLP, and an MLM head tied
to the word embeddings; random weights, random tokens, nothing downloaded.
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
class BertConfig:
    vocab: int = 30522
    hidden: int = 4096
    layers: int = 2
    heads: int = 32
    ffn: int = 16384
    max_positions: int = 512
    segments: int = 2
    seq: int = 512
    batch: int = 4
    eps: float = 1e-12


def default_config() -> BertConfig:
    """Tiny on the interpreter (seconds per step); hidden 4096 on a GPU."""
    if flag_gems.runtime.device.interpreter:
        return BertConfig(vocab=64, hidden=32, layers=2, heads=4, ffn=64, max_positions=16, seq=8, batch=2)
    return BertConfig()


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.words = nn.Embedding(config.vocab, config.hidden)
        self.positions = nn.Embedding(config.max_positions, config.hidden)
        self.segments = nn.Embedding(config.segments, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.norm(self.words(tokens) + self.positions(positions) + self.segments(segments))


class EncoderLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.attn_out = nn.Linear(config.hidden, config.hidden)
        self.attn_norm = nn.LayerNorm(config.hidden, eps=config.eps)
        self.ffn_in = nn.Linear(config.hidden, config.ffn)
        self.ffn_out = nn.Linear(config.ffn, config.hidden)
        self.ffn_norm = nn.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(batch, seq, hidden)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class Bert(nn.Module):
    """Token ids and segment ids (batch, seq), padding mask (batch, seq) -> MLM logits (batch, seq, vocab)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.layers))
        self.head = nn.Linear(config.hidden, config.hidden)
        self.head_norm = nn.LayerNorm(config.hidden, eps=config.eps)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab))
        for module in self.modules():  # BERT's initialisation: N(0, 0.02), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        # Every query attends to the real tokens of its sequence only: (batch, 1, 1, seq), True = attend.
        mask = ~padding[:, None, None, :]
        x = self.embeddings(tokens, segments)
        for layer in self.layers:
            x = layer(x, mask)
        h = self.head_norm(F.gelu(self.head(x)))
        return F.linear(h, self.embeddings.words.weight, self.decoder_bias)  # tied to the word embeddings


def build(config: BertConfig, dtype: torch.dtype, seed: int = 0):
    """The model on flag_gems' device, and ``run(model) -> (logits, loss)`` on one fixed random batch
    with padded sequences and 15% of the real tokens to predict."""
    torch.manual_seed(seed)
    model = Bert(config).to(device=flag_gems.device, dtype=dtype)
    device = flag_gems.device
    tokens = torch.randint(0, config.vocab, (config.batch, config.seq), device=device)
    segments = (torch.arange(config.seq, device=device) >= config.seq // 2).long().expand(config.batch, -1)
    lengths = torch.randint(config.seq // 2, config.seq + 1, (config.batch,), device=device)
    lengths[0] = config.seq
    padding = torch.arange(config.seq, device=device)[None, :] >= lengths[:, None]
    predict = (torch.rand(config.batch, config.seq, device=device) < 0.15) & ~padding
    predict[0, 0] = True
    labels = torch.where(predict, tokens, -100)

    def run(m: nn.Module):
        logits = m(tokens, segments, padding)
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    return model, run


def main(argv=None) -> int:
    args = parser("A BERT-style encoder on gems, checked against ATen").parse_args(argv)
    config = replace(default_config(), **{k: v for k, v in vars(args).items()
                                          if k in ("hidden", "layers", "seq", "batch") and v is not None})
    config.max_positions = max(config.max_positions, config.seq)
    dtype = default_dtype(args.dtype)
    model, run = build(config, dtype, args.seed)
    check, training = check_model(model, run, args.train_steps, args.timed_steps)
    title = (f"BERT-style encoder: hidden {config.hidden}, {config.layers} layers, {config.heads} heads, "
             f"ffn {config.ffn}, vocab {config.vocab}, batch {config.batch} x seq {config.seq}, "
             f"{str(dtype).replace('torch.', '')} on {flag_gems.device}")
    return 0 if report(title, check, training) else 1


if __name__ == "__main__":
    sys.exit(main())
