"""Dtype conversions on one device: ``_to_copy`` (``tensor.to(dtype)``) and ``copy_`` (``clone``,
``contiguous``, assignment into views).

Anything else (another device, layout, complex, conjugate or negative views, memory shared by source
and destination) goes to ATen. Triton's interpreter itself calls ``copy_`` on CPU while it launches;
core hands those nested calls to ATen.
"""

from __future__ import annotations

import operator

import torch
import triton
import triton.language as tl

import flag_gems
from flag_gems import pointwise_dynamic
from gems_pointwise.overloads import ALL, AtenFallback


# copy_ converts to any dtype, unlike an op's result; ALWAYS_BOOL declares a result dtype (bool)
# that casts to every output, so the output's own dtype decides. The operand is computed raw
# (float32 for half types), and the store converts.
@pointwise_dynamic(promotion_methods=[(0, "ALWAYS_BOOL")])
@triton.jit
def copy_kernel(x):
    return x


@pointwise_dynamic(promotion_methods=[(0, "ALWAYS_BOOL")])
@triton.jit
def copy_through_float32_kernel(x):
    # ATen converts float64 and integers to half types through float32 (c10::Half has no wider
    # constructor), which rounds twice; so does this kernel. (It also keeps the interpreter right:
    # its integer -> bfloat16 cast is a bit-pattern cast.)
    return x.to(tl.float32)


@pointwise_dynamic(promotion_methods=[(0, "ALWAYS_BOOL")])
@triton.jit
def copy_through_int64_kernel(x):
    # ATen converts floats to uint8 through int64 (c10's static_cast_with_inter_type), so negative
    # values wrap (-1.0 -> 255); a direct cast saturates them to 0 on the GPU.
    return x.to(tl.int64)


_DEVICE_TYPE = flag_gems.device
_ATEN_TO_COPY = AtenFallback("_to_copy")
_ATEN_COPY = AtenFallback("copy_")
_HALF = (torch.float16, torch.bfloat16)
_NARROW_SOURCES = (torch.float32, torch.float16, torch.bfloat16)


def _copy_kernel(src_dtype: torch.dtype, dst_dtype: torch.dtype):
    if dst_dtype in _HALF and src_dtype not in _NARROW_SOURCES:
        return copy_through_float32_kernel
    if dst_dtype is torch.uint8 and src_dtype.is_floating_point:
        return copy_through_int64_kernel
    return copy_kernel


# Whether a tensor is on the device our kernels run on, read without building a torch.device.
_on_device = operator.attrgetter("is_cpu" if _DEVICE_TYPE == "cpu" else "is_cuda")
_STRIDED = torch.strided
_same_storage = torch._C._is_alias_of


def _plain(t) -> bool:
    """A strided tensor on the device, of a dtype our kernels hold, with no lazy negation (nor a lazy
    conjugate, which only complex dtypes carry)."""
    return (isinstance(t, torch.Tensor) and t.dtype in ALL and t.layout is _STRIDED and not t.is_neg()
            and _on_device(t))


def _as_tensor(value) -> torch.Tensor:
    # ATen converts its wrapped numbers (0-d double, long, bool tensors) with _to_copy and copy_;
    # crossing into Python made them Python scalars again.
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype={float: torch.float64, complex: torch.complex128}.get(type(value)))


def _same_device(device, t: torch.Tensor) -> bool:
    if device is None:
        return True
    device = torch.device(device)
    index = device.index
    if index is None and device.type == "cuda":
        index = torch.cuda.current_device()  # "cuda" means the current device
    return device.type == t.device.type and index == t.device.index


def to_copy(self, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
             memory_format=None):
    """A copy of ``self`` converted to ``dtype`` on its own device, in the layout ATen picks."""
    plain = _plain(self)
    target = self.dtype if dtype is None and plain else dtype
    if (not plain or target not in ALL or layout not in (None, torch.strided) or pin_memory
            or not _same_device(device, self)):
        return _ATEN_TO_COPY(_as_tensor(self), dtype=dtype, layout=layout, device=device, pin_memory=pin_memory,
                             non_blocking=non_blocking, memory_format=memory_format)
    out = torch.empty_like(self, dtype=target, memory_format=memory_format or torch.preserve_format)
    _copy_kernel(self.dtype, target)(self, out0=out)
    return out


def _broadcasts(src: torch.Tensor, dst: torch.Tensor) -> bool:
    if src.shape == dst.shape:
        return True
    offset = dst.dim() - src.dim()
    return offset >= 0 and all(n == 1 or n == dst.shape[offset + d] for d, n in enumerate(src.shape))


def copy_(self, src, non_blocking=False):
    """Copies ``src`` (broadcast to ``self``'s shape, converted to its dtype) into ``self``."""
    if (not _plain(self) or not _plain(src) or self.get_device() != src.get_device() or not _broadcasts(src, self)
            or _same_storage(self, src)):
        # Shared memory: ATen tells the harmless cases (the same view, disjoint slices) from overlaps.
        return _ATEN_COPY(self, _as_tensor(src), non_blocking)
    if src.shape != self.shape:
        src = src.expand_as(self)
    _copy_kernel(src.dtype, self.dtype)(src, out0=self)
    return self


