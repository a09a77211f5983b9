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


def _served_by(module: str, table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Each overload of ``table[function]`` named to be served by ``module:function``."""
    return {name: f"{module}:{function}" for function, names in table.items() for name in names}


def _reductions() -> dict[str, str]:
    return _served_by("reduce", {
        "sum_all": ("sum", "sum.out"),
        "sum_dim": ("sum.dim_IntList", "sum.IntList_out"),
        "nansum": ("nansum", "nansum.out"),
        "mean_all": ("mean", "mean.dtype_out"),
        "mean_dim": ("mean.dim", "mean.out"),
        "prod_all": ("prod", "prod.out"),
        "prod_dim": ("prod.dim_int", "prod.int_out"),
        "amax": ("amax", "amax.out"),
        "amin": ("amin", "amin.out"),
        "aminmax": ("aminmax", "aminmax.out"),
        "max_all": ("max", "max.unary_out"),
        "min_all": ("min", "min.unary_out"),
        "all_dims": ("all", "all.all_out", "all.dim", "all.out", "all.dims", "all.dims_out"),
        "any_dims": ("any", "any.all_out", "any.dim", "any.out", "any.dims", "any.dims_out"),
        "count_nonzero": ("count_nonzero", "count_nonzero.out", "count_nonzero.dim_IntList",
                          "count_nonzero.dim_IntList_out"),
    })


def _arg_reductions() -> dict[str, str]:
    return _served_by("argmax", {
        "argmax": ("argmax", "argmax.out"),
        "argmin": ("argmin", "argmin.out"),
        "max_dim": ("max.dim", "max.dim_max"),
        "min_dim": ("min.dim", "min.dim_min"),
    })


def _statistics() -> dict[str, str]:
    return {
        **_served_by("var_mean", {
            "var": ("var.correction", "var.correction_out"),
            "std": ("std.correction", "std.correction_out"),
            "var_mean": ("var_mean.correction", "var_mean.correction_out"),
            "std_mean": ("std_mean.correction", "std_mean.correction_out"),
        }),
        **_served_by("norm", {
            "vector_norm": ("linalg_vector_norm", "linalg_vector_norm.out"),
            "norm": ("norm.Scalar", "norm.Scalar_out", "norm.ScalarOpt_dim", "norm.out", "norm.ScalarOpt_dim_dtype",
                     "norm.dtype_out"),
            "norm_all": ("norm.ScalarOpt_dtype", "norm.ScalarOpt_dtype_out"),
            "dist": ("dist", "dist.out"),
            "logsumexp": ("logsumexp", "logsumexp.out"),
        }),
    }


def _softmax() -> dict[str, str]:
    return _served_by("softmax", {
        "softmax": ("_softmax", "_softmax.out"),
        "log_softmax": ("_log_softmax", "_log_softmax.out"),
        "safe_softmax": ("_safe_softmax",),
        "softmax_backward": ("_softmax_backward_data", "_softmax_backward_data.out"),
        "log_softmax_backward": ("_log_softmax_backward_data", "_log_softmax_backward_data.out"),
    })


def _losses() -> dict[str, str]:
    return {
        **_served_by("nll_loss", {
            "nll_loss_forward": ("nll_loss_forward", "nll_loss_forward.output"),
            "nll_loss_backward": ("nll_loss_backward", "nll_loss_backward.grad_input"),
            "nll_loss2d_forward": ("nll_loss2d_forward", "nll_loss2d_forward.output"),
            "nll_loss2d_backward": ("nll_loss2d_backward", "nll_loss2d_backward.grad_input"),
        }),
        **_served_by("mse_loss", {
            "mse_loss": ("mse_loss", "mse_loss.out"),
            "mse_loss_backward": ("mse_loss_backward", "mse_loss_backward.grad_input"),
        }),
    }


def _running_extremum(name: str, extremum: str) -> lazy:
    """_cummax_helper / _cummin_helper: ``scan.running_extremum_into`` of ``scan.MAX`` or ``scan.MIN``."""

    def make(running_extremum_into: Callable) -> Callable:
        from gems_reduction import scan

        return running_extremum_into(getattr(scan, extremum))

    return _served_lazily(name, "gems_reduction.scan:running_extremum_into", make)


def _scans() -> dict[str, str | lazy]:
    return {
        **_served_by("scan", {
            "cumsum": ("cumsum", "cumsum.out"),
            "cumprod": ("cumprod", "cumprod.out"),
            "cummax": ("cummax", "cummax.out"),
            "cummin": ("cummin", "cummin.out"),
        }),
        "_cummax_helper": _running_extremum("_cummax_helper", "MAX"),
        "_cummin_helper": _running_extremum("_cummin_helper", "MIN"),
        **_served_by("scan", {"logcumsumexp": ("logcumsumexp", "logcumsumexp.out", "_logcumsumexp",
                                               "_logcumsumexp.out")}),
    }


def _selection() -> dict[str, str]:
    return _served_by("sort", {
        "sort": ("sort", "sort.values"),
        "sort_stable": ("sort.stable", "sort.values_stable"),
        "topk": ("topk", "topk.values"),
        "kthvalue": ("kthvalue", "kthvalue.values"),
        "median": ("median", "median.out"),
        "median_dim": ("median.dim", "median.dim_values"),
        "nanmedian": ("nanmedian", "nanmedian.out"),
        "nanmedian_dim": ("nanmedian.dim", "nanmedian.dim_values"),
        "mode": ("mode", "mode.values"),
    })


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
