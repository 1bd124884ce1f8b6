"""Model FLOPs of a jaxpr: the multiply-adds of its matmuls and convolutions, times 2.

The count that MFU is conventionally reported against (PaLM, appendix B):
elementwise work (norms, activations, the optimizer) is left out, and every
``dot_general`` / ``conv_general_dilated`` counts its useful multiply-adds,
whatever kernel XLA or cuDNN later picks. Sub-jaxprs (pjit, custom_jvp/vjp,
remat) are walked; a ``scan`` body counts ``length`` times; of a ``cond`` the
costliest branch counts; a ``while`` body counts once (its trip count is not
static).
"""

from __future__ import annotations

import math


def _inner_jaxprs(value):
    """Jaxprs held by an equation parameter (a ClosedJaxpr, a Jaxpr, or a tuple of them)."""
    name = type(value).__name__
    if name == "ClosedJaxpr":
        return [value.jaxpr]
    if name == "Jaxpr":
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _inner_jaxprs(v)]
    return []


def _dot_flops(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> int:
    dims = eqn.params["dimension_numbers"]
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    in_features = rhs[dims.rhs_spec[1]]  # per feature group already
    window = math.prod(rhs[d] for d in dims.rhs_spec[2:])
    # A transposed convolution (lhs_dilation > 1, the input gradient of a
    # strided conv) only hits a real input on 1 / prod(dilation) of its taps.
    holes = math.prod(eqn.params.get("lhs_dilation") or (1,))
    return 2 * math.prod(out) * in_features * window // holes


def jaxpr_flops(jaxpr) -> int:
    """FLOPs (2 x multiply-adds) of the matmuls and convolutions of a (Closed)Jaxpr."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            total += max(jaxpr_flops(b) for b in eqn.params["branches"])
        else:
            inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _inner_jaxprs(v))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total
