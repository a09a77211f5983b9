"""Launching a jitted kernel with as little host work per call as possible.

On the GPU the first launch of a kernel for a given specialisation goes through Triton's
``kernel[grid](...)``, which compiles (or loads from Triton's disk cache); the compiled kernel is then
kept and later launches call its launcher directly. Triton specialises a kernel on its integer
arguments equal to 1 or divisible by 16 and on 16-byte aligned pointers, so the caller passes that
specialisation as part of the cache key. On the interpreter every launch goes through Triton.
"""

from __future__ import annotations

import torch
import triton

from flag_gems.runtime import device


def specialization(args) -> tuple:
    """The facts Triton specialises a kernel on, for the arguments given."""
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append(a.data_ptr() % 16 == 0)
        elif type(a) is int:
            key.append(1 if a == 1 else (2 if a % 16 == 0 else 0))
    return tuple(key)


class Launcher:
    """Launches one jitted kernel with fixed constexprs and launch options."""

    __slots__ = ("kernel", "constexprs", "options", "_compiled")

    def __init__(self, kernel, constexprs: dict, **options) -> None:
        self.kernel = kernel
        self.constexprs = constexprs
        self.options = options
        self._compiled: dict[tuple, tuple] = {}

    def __call__(self, grid: tuple, args: list, spec_key: tuple | None = None) -> None:
        if device.interpreter or spec_key is None or triton.knobs.runtime.launch_enter_hook is not None:
            self.kernel[grid](*args, **self.constexprs, **self.options)
            return
        compiled = self._compiled.get(spec_key)
        if compiled is None:
            kernel = self.kernel[grid](*args, **self.constexprs, **self.options)
            self._compiled[spec_key] = (kernel.run, kernel.function, kernel.packed_metadata,
                                        tuple(self.constexprs.values()))
            return
        run, function, metadata, constexprs = compiled
        stream = torch.cuda.current_stream().cuda_stream
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        run(grid[0], g1, g2, stream, function, metadata, None, None, None, *args, *constexprs)
