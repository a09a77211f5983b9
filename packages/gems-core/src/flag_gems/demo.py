"""A transformer block run forward and backward on gems and on ATen, compared and timed.

``python -m flag_gems demo`` runs it. The helpers that do the comparing serve any model:

    check = compare_forward_backward(model, run)   # run(model) -> (output, loss)
    print(check.summary())
    curves = compare_training(model, run, steps=20)

Both copy the model, run one copy on ATen and one on gems from the same weights and inputs, and
compare outputs, loss and every parameter's gradient (or the loss after each AdamW step) within a
tolerance for the model's dtype, relative to the reference's largest magnitude.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from flag_gems import api, coverage
from flag_gems.runtime import device

#: Largest error, relative to the reference's largest magnitude, accepted for a model run in a dtype.
#: A model chains many reductions, so these sit above the per-op tolerances of flag_gems.testing.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
#: Training amplifies differences: AdamW turns a rounding difference in a near-zero gradient into a
#: full step, so loss curves are compared more loosely.
TRAINING_TOLERANCE = {torch.float64: 1e-7, torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}

Run = Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor]]


def relative_error(res: torch.Tensor, ref: torch.Tensor) -> float:
    """max |res - ref| over max |ref|, computed in float64 (0 when both are all zero)."""
    res, ref = res.detach().double(), ref.detach().double().to(res.device)
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().item()
    diff = (res - ref).abs().max().item()
    if diff != diff:  # NaN where the reference has none
        return float("inf")
    return diff / scale if scale > 0 else diff


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _synchronize() -> None:
    if device.name == "cuda":
        torch.cuda.synchronize()


@dataclass
class Check:
    """Errors of a gems run against an ATen run, with timings and the coverage report of the gems run."""

    errors: dict[str, float]
    tolerance: float
    coverage: coverage.Report
    aten_seconds: list[float] = field(default_factory=list)
    gems_seconds: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every error within the tolerance."""
        return all(e <= self.tolerance for e in self.errors.values())

    def worst(self, prefix: str = "") -> tuple[str, float]:
        """The largest error among the entries whose name starts with ``prefix``."""
        named = [(e, n) for n, e in self.errors.items() if n.startswith(prefix)]
        error, name = max(named) if named else (0.0, "")
        return name, error

    def failures(self) -> dict[str, float]:
        """The entries above the tolerance, with their errors."""
        return {n: e for n, e in self.errors.items() if e > self.tolerance}

    def summary(self) -> str:
        """Two lines: the timings, then the comparison with ATen."""
        lines = []
        if self.aten_seconds and self.gems_seconds:
            aten, gems = statistics.median(self.aten_seconds), statistics.median(self.gems_seconds)
            note = " (Triton interpreter: not a performance number)" if device.interpreter else \
                f", gems/ATen {gems / aten:.2f}x"
            lines.append(f"forward + backward, median of {len(self.gems_seconds)} steps: "
                         f"ATen {aten * 1e3:.2f} ms, gems {gems * 1e3:.2f} ms{note}")
        grads = [n for n in self.errors if n.startswith("grad ")]
        grad_name, grad_error = self.worst("grad ")
        parts = [f"{n} {self.errors[n]:.1e}" for n in self.errors if not n.startswith("grad ")]
        if grads:
            parts.append(f"{len(grads)} gradients, worst {grad_error:.1e} ({grad_name[5:]})")
        verdict = "OK" if self.ok else "MISMATCH: " + ", ".join(f"{n} {e:.1e}" for n, e in self.failures().items())
        lines.append(f"against ATen: {', '.join(parts)} (tolerance {self.tolerance:.0e}): {verdict}")
        return "\n".join(lines)


def _gems():
    """Serve with what is enabled now, or with every family when gems is off (as coverage.collect does)."""
    return contextlib.nullcontext() if api.is_enabled() else api.use_gems()


def _aten():
    """Serve nothing: the reference runs on ATen even where gems is enabled."""
    return api.use_gems(families=[])


def _step(model: nn.Module, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    output, loss = run(model)
    loss.backward()
    _synchronize()
    return output, loss


def _timed_step(model: nn.Module, run: Run) -> float:
    start = time.perf_counter()
    _step(model, run)
    return time.perf_counter() - start


def compare_forward_backward(model: nn.Module, run: Run, steps: int = 0,
                             tolerance: float | None = None) -> Check:
    """Run forward and backward on a copy of ``model`` under ATen and on another under gems, and compare.

    ``run(model)`` returns ``(output, loss)``; it must be deterministic (same inputs every call).
    The gems run is observed by the coverage report; ``steps`` more steps of each are then timed,
    alternating between ATen and gems.
    """
    tolerance = TOLERANCE.get(model_dtype(model), 1e-4) if tolerance is None else tolerance
    aten_model, gems_model = copy.deepcopy(model), copy.deepcopy(model)
    with _aten():
        output, loss = _step(aten_model, run)
    with coverage.collect() as report:
        gems_output, gems_loss = _step(gems_model, run)
    aten_seconds, gems_seconds = [], []
    for _ in range(steps):
        with _aten():
            aten_seconds.append(_timed_step(aten_model, run))
        with _gems():
            gems_seconds.append(_timed_step(gems_model, run))
    errors = {"output": relative_error(gems_output, output), "loss": relative_error(gems_loss, loss)}
    gems_params = dict(gems_model.named_parameters())
    for name, param in aten_model.named_parameters():
        gems_grad = gems_params[name].grad
        if param.grad is None or gems_grad is None:
            if (param.grad is None) != (gems_grad is None):
                errors[f"grad {name}"] = float("inf")
            continue
        errors[f"grad {name}"] = relative_error(gems_grad, param.grad)
    return Check(errors, tolerance, report, aten_seconds, gems_seconds)


@dataclass
class TrainingCheck:
    """Loss after each AdamW step, on ATen and on gems."""

    aten_losses: list[float]
    gems_losses: list[float]
    tolerance: float

    @property
    def errors(self) -> list[float]:
        """Per step, |gems - ATen| / |ATen| of the loss."""
        return [abs(g - a) / max(abs(a), 1e-12) for a, g in zip(self.aten_losses, self.gems_losses)]

    @property
    def ok(self) -> bool:
        """Every step's loss within the tolerance."""
        return all(e <= self.tolerance for e in self.errors)

    def summary(self) -> str:
        """One line: both loss curves' ends and the worst step's error."""
        worst = max(self.errors, default=0.0)
        return (f"{len(self.aten_losses)} AdamW steps: loss {self.aten_losses[0]:.4f} -> {self.aten_losses[-1]:.4f} "
                f"on ATen, {self.gems_losses[0]:.4f} -> {self.gems_losses[-1]:.4f} on gems; worst step error "
                f"{worst:.1e} (tolerance {self.tolerance:.0e}): {'OK' if self.ok else 'MISMATCH'}")


def train_losses(model: nn.Module, run: Run, steps: int = 20, lr: float = 1e-3) -> list[float]:
    """Train ``model`` in place with AdamW for ``steps`` steps; the loss before each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        _, loss = run(model)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def compare_training(model: nn.Module, run: Run, steps: int = 20, lr: float = 1e-3,
                     tolerance: float | None = None) -> TrainingCheck:
    """Train a copy of ``model`` on ATen and another on gems (optimizer included) and compare the losses."""
    tolerance = TRAINING_TOLERANCE.get(model_dtype(model), 1e-3) if tolerance is None else tolerance
    with _aten():
        aten = train_losses(copy.deepcopy(model), run, steps, lr)
    with _gems():
        gems = train_losses(copy.deepcopy(model), run, steps, lr)
    return TrainingCheck(aten, gems, tolerance)


# -- the demo's block ---------------------------------------------------------------------------------
@dataclass
class BlockConfig:
    """Sizes of the demo block; ``style`` "llama" (RMSNorm, causal, SwiGLU) or "bert" (LayerNorm, GELU)."""

    dim: int = 64
    heads: int = 4
    hidden: int = 128
    seq: int = 16
    batch: int = 2
    style: str = "llama"


def default_config(style: str = "llama") -> BlockConfig:
    """Tiny on the interpreter (seconds), a realistic layer on a GPU."""
    if device.interpreter:
        return BlockConfig(dim=32, heads=2, hidden=64, seq=16, batch=2, style=style)
    return BlockConfig(dim=4096, heads=32, hidden=11008 if style == "llama" else 16384, seq=1024, batch=4,
                       style=style)


class Block(nn.Module):
    """A pre-norm (llama) or post-norm (bert) transformer block, attention through SDPA."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        self.config = config
        dim, hidden = config.dim, config.hidden
        llama = config.style == "llama"
        self.attn_norm = nn.RMSNorm(dim) if llama else nn.LayerNorm(dim)
        self.mlp_norm = nn.RMSNorm(dim) if llama else nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=not llama)
        self.proj = nn.Linear(dim, dim, bias=not llama)
        self.up = nn.Linear(dim, 2 * hidden if llama else hidden, bias=not llama)
        self.down = nn.Linear(hidden, dim, bias=not llama)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        heads = self.config.heads
        q, k, v = self.qkv(x).view(batch, seq, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.config.style == "llama")
        return self.proj(out.transpose(1, 2).reshape(batch, seq, dim))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.style == "llama":
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.style == "llama":
            x = x + self.attention(self.attn_norm(x))
            return x + self.mlp(self.mlp_norm(x))
        x = self.attn_norm(x + self.attention(x))
        return self.mlp_norm(x + self.mlp(x))


def run_demo(config: BlockConfig | None = None, dtype: torch.dtype | None = None, steps: int = 3,
             seed: int = 0, out=print) -> bool:
    """Run the demo block on ATen and on gems, print the comparison, timings and coverage; True if they match."""
    config = config or default_config()
    dtype = dtype or (torch.float32 if device.interpreter else torch.bfloat16)
    torch.manual_seed(seed)
    block = Block(config).to(device=device.name, dtype=dtype)
    x = torch.randn(config.batch, config.seq, config.dim, device=device.name, dtype=dtype)
    target = torch.randn_like(x)

    def run(model: nn.Module):
        y = model(x)
        return y, F.mse_loss(y.float(), target.float())

    where = "cpu, Triton interpreter" if device.interpreter else torch.cuda.get_device_name()
    out(f"flag_gems demo: {config.style}-style block, dim {config.dim}, {config.heads} heads, hidden {config.hidden}, "
        f"batch {config.batch} x seq {config.seq}, {str(dtype).replace('torch.', '')} on {where}")
    check = compare_forward_backward(block, run, steps=steps)
    out(check.summary())
    out(check.coverage.table())
    return check.ok


__all__ = ["Block", "BlockConfig", "Check", "TOLERANCE", "TRAINING_TOLERANCE", "TrainingCheck",
           "compare_forward_backward", "compare_training", "default_config", "model_dtype", "relative_error",
           "run_demo", "train_losses"]
