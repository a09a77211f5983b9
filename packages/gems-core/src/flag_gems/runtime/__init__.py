"""Runtime: the device kernels run on and, without a GPU, Triton's interpreter and its shims."""

from flag_gems.runtime import device

__all__ = ["device"]
