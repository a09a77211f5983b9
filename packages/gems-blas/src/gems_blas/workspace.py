"""Scratch memory that products reuse from call to call instead of allocating it each time.

Two kinds, each one buffer per device and stream, grown when a call needs more:
- ``partials``: the fp32 slices of a split reduction, written by the product kernel and summed by
  ``epilogue``'s finish kernel. Kept per thread as well: two threads launching on one stream could
  otherwise interleave their two launches, and one finish would sum the other's slices.
- ``descriptor_scratch``: the per-program memory in which the Hopper kernel builds its tensor
  descriptors, which Triton asks its allocator for at every launch. It is used within one launch only,
  so threads may share it.
Work on one stream runs in order, so a buffer is never written by one call while an earlier call on its
stream still reads it; a buffer kept for another stream is never handed out. During CUDA graph capture
every call gets fresh memory from the graph's pool, as a plain allocation would, since a replay may run
beside work on other streams. So does a call recorded for replay (``flag_gems.native``): a replayed call
allocates the memory its recording allocated, and a buffer kept from before would be shared instead.
"""

from __future__ import annotations

import threading

import torch
import triton
from triton.runtime import _allocation

from flag_gems import launch
from flag_gems.runtime import device

if device.interpreter:

    def _stream_key() -> tuple:
        return (-1, 0)

    def _capturing() -> bool:
        return False
else:
    _capturing = torch._C._cuda_isCurrentStreamCapturing
    _raw_stream = torch._C._cuda_getCurrentRawStream
    _current_device = torch._C._cuda_getDevice

    def _stream_key() -> tuple:
        # Where kernels launch: the current device's current stream (flag_gems.launch does the same).
        dev = _current_device()
        return (dev, _raw_stream(dev))


_local = threading.local()


def partials(numel: int, like: torch.Tensor) -> torch.Tensor:
    """An fp32 buffer of at least ``numel`` elements on ``like``'s device for this thread and the current
    stream. Kernels take only its address: its shape is not the partials' shape."""
    if _capturing() or launch.recording:
        return torch.empty(numel, dtype=torch.float32, device=like.device)
    buffers = getattr(_local, "partials", None)
    if buffers is None:
        buffers = _local.partials = {}
    key = (like.get_device(), *_stream_key())
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = torch.empty(numel, dtype=torch.float32, device=like.device)
    return buf


_descriptor_buffers: dict[tuple, torch.Tensor] = {}


def descriptor_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Triton's allocator for launch scratch: the buffer kept for the current device and ``stream``."""
    if _capturing():
        return torch.empty(size, dtype=torch.int8, device="cuda")
    key = (_current_device(), stream)  # "cuda" below is the current device too
    buf = _descriptor_buffers.get(key)
    if buf is None or buf.numel() < size or buf.data_ptr() % alignment:
        buf = _descriptor_buffers[key] = torch.empty(size, dtype=torch.int8, device="cuda")
    return buf


def ensure_allocator() -> None:
    """Install ``descriptor_scratch`` as Triton's allocator where none is set. The allocator is a context
    variable, so each thread (autograd's too) needs it set."""
    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(descriptor_scratch)
