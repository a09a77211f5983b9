"""A well-formed family: serves aten::special_entr (functional) with a pointwise_dynamic kernel, and
a fused function. The test plugins use ops that none of the real families serve."""

import flag_gems
from gems_test_plugins import active


def _ops():
    import triton
    import triton.language as tl

    @flag_gems.pointwise_dynamic(promotion_methods=[(0, "INT_TO_FLOAT")])
    @triton.jit
    def entr_kernel(x):
        return tl.where(x > 0, -x * tl.log(x), tl.where(x == 0, 0.0, -float("inf")))

    return [flag_gems.OpImpl("special_entr", lambda x: entr_kernel(x))]


def twice(x):
    """A fused public function of the test family."""
    return x * 2


@flag_gems.hookimpl
def gems_family():
    if not active():
        return None
    return flag_gems.Family(name="test_good", version="1.2.3", ops=_ops, fused={"test_twice": twice})
