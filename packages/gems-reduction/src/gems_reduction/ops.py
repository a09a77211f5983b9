"""The ATen overloads this family serves, and its public fused functions.

Every implementation takes its overload's arguments as ATen passes them and may return
``NotImplemented`` for a case its kernels do not handle; ``_served`` then replays the call on ATen's
own kernel, which also raises ATen's error for bad input.
"""

from __future__ import annotations

from collections.abc import Callable

from flag_gems import OpImpl, aten_kernel, aten_names, lazy


def _served(name: str, impl: Callable) -> Callable:
    fallback = aten_kernel(name)

    def serve(*args, **kwargs):
        result = impl(*args, **kwargs)
        return fallback(*args, **kwargs) if result is NotImplemented else result

    serve.__name__ = serve.__qualname__ = f"gems_{name.replace('.', '_')}"
    serve.__doc__ = impl.__doc__
    return serve


def _served_lazily(name: str, target: str, make: Callable[[Callable], Callable] | None = None) -> lazy:
    """``_served(name, f)`` for the function ``f`` at ``target`` (``make(f)`` where given), made at the op's
    first call: the op is declared, and served, before its kernel module (and Triton) is imported."""
    return lazy(target, lambda impl: _served(name, make(impl) if make else impl))


def _declare(table: dict[str, str | lazy]) -> list[OpImpl]:
    # Implementations are named ("module:function" in this package), not imported.
    # Overloads missing from the running torch, or composite there, are left out rather than refused.
    return [OpImpl(name, impl if isinstance(impl, lazy) else _served_lazily(name, f"gems_reduction.{impl}"))
            for name, impl in table.items()
            if aten_names.resolve(name) is not None and not aten_names.is_composite_implicit(name)]


def _reductions() -> dict[str, str]:
    return {
        "sum": "reduce:sum_all", "sum.out": "reduce:sum_all",
        "sum.dim_IntList": "reduce:sum_dim", "sum.IntList_out": "reduce:sum_dim",
        "nansum": "reduce:nansum", "nansum.out": "reduce:nansum",
        "mean": "reduce:mean_all", "mean.dtype_out": "reduce:mean_all",
        "mean.dim": "reduce:mean_dim", "mean.out": "reduce:mean_dim",
        "prod": "reduce:prod_all", "prod.out": "reduce:prod_all",
        "prod.dim_int": "reduce:prod_dim", "prod.int_out": "reduce:prod_dim",
        "amax": "reduce:amax", "amax.out": "reduce:amax",
        "amin": "reduce:amin", "amin.out": "reduce:amin",
        "aminmax": "reduce:aminmax", "aminmax.out": "reduce:aminmax",
        "max": "reduce:max_all", "max.unary_out": "reduce:max_all",
        "min": "reduce:min_all", "min.unary_out": "reduce:min_all",
        "all": "reduce:all_dims", "all.all_out": "reduce:all_dims", "all.dim": "reduce:all_dims",
        "all.out": "reduce:all_dims", "all.dims": "reduce:all_dims", "all.dims_out": "reduce:all_dims",
        "any": "reduce:any_dims", "any.all_out": "reduce:any_dims", "any.dim": "reduce:any_dims",
        "any.out": "reduce:any_dims", "any.dims": "reduce:any_dims", "any.dims_out": "reduce:any_dims",
        "count_nonzero": "reduce:count_nonzero", "count_nonzero.out": "reduce:count_nonzero",
        "count_nonzero.dim_IntList": "reduce:count_nonzero", "count_nonzero.dim_IntList_out": "reduce:count_nonzero",
    }


def _arg_reductions() -> dict[str, str]:
    return {
        "argmax": "argmax:argmax", "argmax.out": "argmax:argmax",
        "argmin": "argmax:argmin", "argmin.out": "argmax:argmin",
        "max.dim": "argmax:max_dim", "max.dim_max": "argmax:max_dim",
        "min.dim": "argmax:min_dim", "min.dim_min": "argmax:min_dim",
    }


def _statistics() -> dict[str, str]:
    return {
        "var.correction": "var_mean:var", "var.correction_out": "var_mean:var",
        "std.correction": "var_mean:std", "std.correction_out": "var_mean:std",
        "var_mean.correction": "var_mean:var_mean", "var_mean.correction_out": "var_mean:var_mean",
        "std_mean.correction": "var_mean:std_mean", "std_mean.correction_out": "var_mean:std_mean",
        "linalg_vector_norm": "norm:vector_norm", "linalg_vector_norm.out": "norm:vector_norm",
        "norm.Scalar": "norm:norm", "norm.Scalar_out": "norm:norm",
        "norm.ScalarOpt_dim": "norm:norm", "norm.out": "norm:norm",
        "norm.ScalarOpt_dim_dtype": "norm:norm", "norm.dtype_out": "norm:norm",
        "norm.ScalarOpt_dtype": "norm:norm_all", "norm.ScalarOpt_dtype_out": "norm:norm_all",
        "dist": "norm:dist", "dist.out": "norm:dist",
        "logsumexp": "norm:logsumexp", "logsumexp.out": "norm:logsumexp",
    }


def _softmax() -> dict[str, str]:
    return {
        "_softmax": "softmax:softmax", "_softmax.out": "softmax:softmax",
        "_log_softmax": "softmax:log_softmax", "_log_softmax.out": "softmax:log_softmax",
        "_safe_softmax": "softmax:safe_softmax",
        "_softmax_backward_data": "softmax:softmax_backward", "_softmax_backward_data.out": "softmax:softmax_backward",
        "_log_softmax_backward_data": "softmax:log_softmax_backward",
        "_log_softmax_backward_data.out": "softmax:log_softmax_backward",
    }


def _losses() -> dict[str, str]:
    return {
        "nll_loss_forward": "nll_loss:nll_loss_forward", "nll_loss_forward.output": "nll_loss:nll_loss_forward",
        "nll_loss_backward": "nll_loss:nll_loss_backward", "nll_loss_backward.grad_input": "nll_loss:nll_loss_backward",
        "nll_loss2d_forward": "nll_loss:nll_loss2d_forward", "nll_loss2d_forward.output": "nll_loss:nll_loss2d_forward",
        "nll_loss2d_backward": "nll_loss:nll_loss2d_backward",
        "nll_loss2d_backward.grad_input": "nll_loss:nll_loss2d_backward",
        "mse_loss": "mse_loss:mse_loss", "mse_loss.out": "mse_loss:mse_loss",
        "mse_loss_backward": "mse_loss:mse_loss_backward", "mse_loss_backward.grad_input": "mse_loss:mse_loss_backward",
    }


def _running_extremum(name: str, extremum: str) -> lazy:
    """_cummax_helper / _cummin_helper: ``scan.running_extremum_into`` of ``scan.MAX`` or ``scan.MIN``."""

    def make(running_extremum_into: Callable) -> Callable:
        from gems_reduction import scan

        return running_extremum_into(getattr(scan, extremum))

    return _served_lazily(name, "gems_reduction.scan:running_extremum_into", make)


def _scans() -> dict[str, str | lazy]:
    return {
        "cumsum": "scan:cumsum", "cumsum.out": "scan:cumsum", "cumprod": "scan:cumprod", "cumprod.out": "scan:cumprod",
        "cummax": "scan:cummax", "cummax.out": "scan:cummax", "cummin": "scan:cummin", "cummin.out": "scan:cummin",
        "_cummax_helper": _running_extremum("_cummax_helper", "MAX"),
        "_cummin_helper": _running_extremum("_cummin_helper", "MIN"),
        "logcumsumexp": "scan:logcumsumexp", "logcumsumexp.out": "scan:logcumsumexp",
        "_logcumsumexp": "scan:logcumsumexp", "_logcumsumexp.out": "scan:logcumsumexp",
    }


def _selection() -> dict[str, str]:
    return {
        "sort": "sort:sort", "sort.values": "sort:sort", "sort.stable": "sort:sort_stable",
        "sort.values_stable": "sort:sort_stable", "topk": "sort:topk", "topk.values": "sort:topk",
        "kthvalue": "sort:kthvalue", "kthvalue.values": "sort:kthvalue",
        "median": "sort:median", "median.out": "sort:median", "median.dim": "sort:median_dim",
        "median.dim_values": "sort:median_dim", "nanmedian": "sort:nanmedian", "nanmedian.out": "sort:nanmedian",
        "nanmedian.dim": "sort:nanmedian_dim", "nanmedian.dim_values": "sort:nanmedian_dim",
        "mode": "sort:mode", "mode.values": "sort:mode",
    }


def _differentiable() -> list[OpImpl]:
    # Composite in ATen: served on the Autograd key by an autograd.Function of our own.
    if aten_names.resolve("cross_entropy_loss") is None:
        return []
    return [OpImpl("cross_entropy_loss", lazy("gems_reduction.cross_entropy:cross_entropy"), autograd=True)]


def ops() -> list[OpImpl]:
    """Every overload served by this family."""
    table = {**_reductions(), **_arg_reductions(), **_statistics(), **_softmax(), **_losses(), **_scans(),
             **_selection()}
    return _declare(table) + _differentiable()


def cross_entropy_loss(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Fused cross-entropy of logits against class indices or probabilities, as
    ``torch.nn.functional.cross_entropy``; softmax is never materialised, gradients flow to ``input``."""
    from gems_reduction.cross_entropy import cross_entropy_loss as fused_loss

    return fused_loss(input, target, weight, ignore_index, reduction, label_smoothing)


def fused() -> dict:
    """Public functions (``flag_gems.<name>``) of this family."""
    return {"cross_entropy_loss": cross_entropy_loss}
