"""Which device kernels run on, decided once at import, before any kernel is decorated."""

from __future__ import annotations

import os

import torch


def _has_gpu() -> bool:
    # GEMS_FORCE_INTERPRETER lets a GPU machine run the CPU test path too.
    if os.environ.get("GEMS_FORCE_INTERPRETER", "0") == "1":
        return False
    return torch.cuda.is_available()


_GPU = _has_gpu()

#: "cuda" with a GPU, "cpu" when kernels run through Triton's interpreter.
name: str = "cuda" if _GPU else "cpu"
vendor_name: str = "nvidia" if _GPU else "cpu"
#: True when kernels run through Triton's interpreter on CPU tensors.
interpreter: bool = not _GPU
#: The dispatch keys our kernels are registered on (rule 1 of dispatch).
dispatch_key: str = "CUDA" if _GPU else "CPU"
autograd_key: str = "AutogradCUDA" if _GPU else "AutogradCPU"

support_fp64: bool = True
support_int64: bool = True


def __getattr__(attr: str):
    # Asked lazily: reading the capability initialises CUDA, which import must not do.
    if attr == "support_bf16":
        # bf16 needs compute capability 8.0 on NVIDIA; the interpreter computes it through fp32.
        return (not _GPU) or torch.cuda.get_device_capability()[0] >= 8
    raise AttributeError(attr)


def device_count() -> int:
    return torch.cuda.device_count() if _GPU else 1
