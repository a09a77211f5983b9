"""ATen's rules that the norm ops follow beside the math: dtypes our kernels take, and the dtype of the
statistics ATen saves for backward, which differs between its CUDA and CPU kernels."""

from __future__ import annotations

import torch

from flag_gems.runtime import device

#: Input dtypes the kernels compute (in float32); others go back to ATen.
FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32})

#: Where ATen's CUDA and CPU kernels differ, match the device's: CUDA's layer and batch norm keep mean and
#: inverse std in float32 for half inputs (CPU's in the input's dtype unless the parameters are float32),
#: and CUDA's batch norm saves the running statistics in eval (CPU's saves empty tensors).
ATEN_CUDA = not device.interpreter


def params_ok(x: torch.Tensor, *params, mixed: bool) -> bool:
    """Each defined parameter has ``x``'s dtype, or (``mixed``, half ``x``) one shared float32 dtype."""
    dtypes = {p.dtype for p in params if p is not None}
    if not dtypes or dtypes == {x.dtype}:
        return True
    return mixed and dtypes == {torch.float32} and x.dtype != torch.float32


def stats_dtype(x: torch.Tensor, *params, acc_on_cuda: bool) -> torch.dtype:
    """The dtype ATen gives the saved statistics of ``x`` normalised with ``params``.

    ``acc_on_cuda``: the op's CUDA kernel saves them in float32 whatever the input (layer and batch
    norm); otherwise (and on CPU) float32 only when a float32 parameter meets a half input.
    """
    if acc_on_cuda and ATEN_CUDA:
        return torch.float32
    if any(p is not None and p.dtype != x.dtype for p in params):
        return torch.float32
    return x.dtype
