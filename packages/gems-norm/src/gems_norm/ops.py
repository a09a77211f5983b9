"""The ATen overloads this family serves, and its public fused functions.

The list is built against the running torch: an overload it lacks is left out, one that is
CompositeImplicitAutograd there is served on the Autograd key by a differentiable implementation
(layer_norm, rms_norm, _fused_rms_norm, instance_norm), and overloads ATen implements only on some devices
(cuDNN's batch norm, the CUDA fused RMS norm backward) are served only where ATen has a kernel on this
device's key.
Implementations are named, not imported: enabling the family imports no kernel module (nor Triton)
until an op's first call.
"""

from __future__ import annotations

import torch

from flag_gems import OpImpl, aten_names, lazy
from flag_gems.runtime import device


def _declare(name: str, fn, autograd_fn=None, device_only: bool = False) -> list[OpImpl]:
    # ``fn`` serves the backend key, ``autograd_fn`` the Autograd key where the op is CompositeImplicitAutograd.
    if aten_names.resolve(name) is None:
        return []
    if aten_names.is_composite_implicit(name):
        return [OpImpl(name, autograd_fn, autograd=True)] if autograd_fn is not None else []
    if fn is None:
        return []
    if device_only and not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", device.dispatch_key):
        return []
    return [OpImpl(name, fn)]


def _fn(target: str) -> lazy:
    # Named, not imported: the kernel module (and Triton) loads at the op's first call.
    return lazy(f"gems_norm.{target}")


def ops() -> list[OpImpl]:
    """The ATen overloads served, with their implementations."""
    declared = [
        ("native_layer_norm", "layer_norm:native_layer_norm"),
        ("native_layer_norm_backward", "layer_norm:native_layer_norm_backward"),
        ("native_group_norm", "group_norm:native_group_norm"),
        ("native_group_norm_backward", "group_norm:native_group_norm_backward"),
        ("native_batch_norm", "batch_norm:native_batch_norm"),
        ("_native_batch_norm_legit", "batch_norm:native_batch_norm_legit"),
        ("_native_batch_norm_legit.no_stats", "batch_norm:native_batch_norm_legit_no_stats"),
        ("_native_batch_norm_legit_no_training", "batch_norm:native_batch_norm_legit_no_training"),
        ("_native_batch_norm_legit_functional", "batch_norm:native_batch_norm_legit_functional"),
        ("_batch_norm_with_update", "batch_norm:batch_norm_with_update"),
        ("_batch_norm_with_update_functional", "batch_norm:batch_norm_with_update_functional"),
        ("_batch_norm_no_update", "batch_norm:batch_norm_no_update"),
        ("native_batch_norm_backward", "batch_norm:native_batch_norm_backward"),
        ("batch_norm_backward", "batch_norm:batch_norm_backward"),
        ("_weight_norm_interface", "weight_norm:weight_norm_interface"),
        ("_weight_norm_interface_backward", "weight_norm:weight_norm_interface_backward"),
    ]
    result = [op for name, target in declared for op in _declare(name, _fn(target))]
    result += _declare("layer_norm", None, _fn("layer_norm:layer_norm_op"))
    result += _declare("rms_norm", None, _fn("rms_norm:rms_norm_op"))
    result += _declare("instance_norm", None, _fn("instance_norm:instance_norm_op"))
    result += _declare("_fused_rms_norm", _fn("rms_norm:fused_rms_norm_backend_op"), _fn("rms_norm:fused_rms_norm_op"),
                       device_only=True)
    result += _declare("_fused_rms_norm_backward", _fn("rms_norm:fused_rms_norm_backward_op"), device_only=True)
    result += _declare("cudnn_batch_norm", _fn("batch_norm:cudnn_batch_norm"), device_only=True)
    result += _declare("cudnn_batch_norm_backward", _fn("batch_norm:cudnn_batch_norm_backward"), device_only=True)
    return result


def fused() -> dict:
    """The public fused functions, by their ``flag_gems.<name>``; each imports its module at its first call."""
    return {
        "rms_norm": _fn("rms_norm:rms_norm"),
        "fused_add_rms_norm": _fn("rms_norm:fused_add_rms_norm"),
        "skip_layer_norm": _fn("layer_norm:skip_layer_norm"),
        "instance_norm": _fn("instance_norm:instance_norm"),
        "weight_norm": _fn("weight_norm:weight_norm"),
    }
