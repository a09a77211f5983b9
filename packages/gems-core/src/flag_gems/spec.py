"""What a family hands to core: plain data, no registration of its own."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OpImpl:
    """One ATen overload served by a family.

    ``aten`` is the overload name as ATen spells it ("add.Tensor", "abs", "abs.out"); a bare name means
    the default overload. ``fn`` takes the overload's arguments exactly as ATen passes them; a
    :class:`lazy` ``fn`` leaves its module unimported until the op's first call.

    With ``autograd=False`` (the usual case) ``fn`` is registered on the device's backend key (CUDA, or
    CPU on the interpreter), below autograd, and ATen's derivative formulas still apply. With
    ``autograd=True`` ``fn`` is registered on the device's Autograd key: it must be differentiable on its
    own (a ``torch.autograd.Function``). That is the only way to serve a CompositeImplicitAutograd op.

    On a GPU core replays a signature's calls from C++ once one was recorded launching only through
    ``flag_gems.launch``, on its tensors and memory it allocated (see ``flag_gems.native``).
    ``replay=False`` keeps every call in ``fn``: for a kernel whose work a recording cannot see (memory
    written by other means than the dispatcher or flag_gems.launch, state that changes between calls of
    one signature).
    """

    aten: str
    fn: Callable
    autograd: bool = False
    replay: bool = True


OpsSource = Iterable[OpImpl] | Callable[[], Iterable[OpImpl]]


@dataclass(frozen=True)
class Family:
    """A family's declaration, returned by its ``gems_family`` hook.

    ``ops`` may be a callable, so that kernels are imported only when the family is loaded.
    ``fused`` maps public names (``flag_gems.<name>``) to functions. ``requires_core`` is a version
    specifier that gems-core must satisfy (">=0.1,<0.2"). Of two families serving one overload the one
    with the higher ``priority`` wins, then the one whose name sorts first.
    """

    name: str
    version: str
    ops: OpsSource = ()
    fused: Mapping[str, Callable] = field(default_factory=dict)
    requires_core: str = ""
    priority: int = 0
    description: str = ""


class lazy:
    """The function ``"module:attribute"``, imported at its first call.

    A family that declares ``OpImpl("mm", lazy("gems_blas.mm:mm"))`` is enabled without importing its
    kernel modules: Triton's import and the ``@triton.jit`` decoration of a module's kernels are paid
    when one of its ops is first called, and not at all for ops that never are. ``make``, if given,
    turns the imported function into the one called (a wrapper with dtype checks or a fallback), once.
    """

    def __init__(self, target: str, make: Callable[[Callable], Callable] | None = None) -> None:
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise ValueError(f"lazy() wants 'module:attribute', got {target!r}")
        self.target = target
        self.make = make
        self.__name__ = attribute
        self.__module__ = module  # like the function's: coverage tells a family's code by it
        self.loaded: Callable | None = None

    def load(self) -> Callable:
        """Import the function (once), made by ``make`` where given, and return it."""
        if self.loaded is None:
            module, _, attribute = self.target.partition(":")
            fn = getattr(importlib.import_module(module), attribute)
            self.loaded = fn if self.make is None else self.make(fn)
        return self.loaded

    def __call__(self, *args, **kwargs):
        fn = self.loaded
        if fn is None:
            fn = self.load()
        return fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"
