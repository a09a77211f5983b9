"""What llama.py and bert.py share: their command line, and running and printing the two checks.

A model example builds its model and a ``run(model) -> (logits, loss)`` function; ``check_model``
then compares one forward and backward on gems with ATen (logits, loss, every gradient) and 20
AdamW steps (the loss curve), using the helpers of ``flag_gems.demo``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

import flag_gems
from flag_gems.demo import Check, TrainingCheck, compare_forward_backward, compare_training

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parser(description: str) -> argparse.ArgumentParser:
    """The options both examples take; sizes left out mean the example's defaults for the device."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: float32 on the interpreter, else bfloat16")
    p.add_argument("--hidden", type=int, help="hidden size (default: tiny on the interpreter, 4096 on a GPU)")
    p.add_argument("--layers", type=int, help="number of layers")
    p.add_argument("--seq", type=int, help="sequence length")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--train-steps", type=int, default=20, help="AdamW steps compared (0: none)")
    p.add_argument("--timed-steps", type=int, default=3, help="forward+backward steps timed on each side")
    p.add_argument("--seed", type=int, default=0)
    return p


def default_dtype(name: str | None) -> torch.dtype:
    if name:
        return DTYPES[name]
    return torch.float32 if flag_gems.runtime.device.interpreter else torch.bfloat16


def check_model(model: nn.Module, run: Callable, train_steps: int = 20, timed_steps: int = 0,
                lr: float = 1e-3) -> tuple[Check, TrainingCheck | None]:
    """Forward + backward on gems against ATen, then ``train_steps`` AdamW steps on each (if any)."""
    check = compare_forward_backward(model, run, steps=timed_steps)
    training = compare_training(model, run, steps=train_steps, lr=lr) if train_steps else None
    return check, training


def report(title: str, check: Check, training: TrainingCheck | None) -> bool:
    """Print the results; True when gems matched ATen everywhere."""
    print(title)
    print(check.summary())
    if training is not None:
        print(training.summary())
    print(check.coverage.table())
    return check.ok and (training is None or training.ok)
