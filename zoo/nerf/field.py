"""The NeRF MLP F_Theta: (x, d) -> (sigma, c) (paper sec. 5.1 and fig. 7, appendix A).

Positions pass through ``depth`` ReLU layers of ``width`` units with the encoded
input concatenated again after layer ``skip`` (paper: "a skip connection that
concatenates this input to the fifth layer's activation"). A linear head gives
the density (ReLU, so sigma >= 0) and a ``width``-dim feature; the feature and
the encoded view direction pass through one ReLU layer of ``view_width`` units
and a sigmoid RGB head. The density depends on the position only, so geometry
is multi-view consistent while colour may vary with viewpoint (specularities).

Parameter count of the paper's net (L = 10 / 4, 8 x 256, skip after layer 5,
view layer 128), with ``P = 63`` and ``V = 27`` encoded inputs:
  trunk  63*256+256 + 6*(256*256+256) + (256+63)*256+256 = 493,056
  heads  sigma 256+1 + feature 256*256+256 = 66,049
  view   (256+27)*128+128 = 36,352;  rgb 128*3+3 = 387
  total  595,844 (per network; coarse + fine = 1,191,688).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nerf.encoding import encoded_size, positional_encoding

# The reference TF code's Dense layers: Glorot-uniform kernels, zero biases.
KERNEL_INIT = nnx.initializers.glorot_uniform()


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=KERNEL_INIT, rngs=rngs)


class NeRFMLP(nnx.Module):
    """F_Theta of the NeRF paper.

    Args:
      depth: hidden layers of the position trunk (paper 8).
      width: their units (paper 256).
      skip: 0-based index of the trunk layer whose activation is concatenated
        with the encoded position before the next layer (paper: the fifth layer,
        ``skip=4``); ``None`` for no skip. Needs ``0 <= skip < depth - 1``.
      pos_freqs: L for positions (paper 10).
      dir_freqs: L for view directions (paper 4).
      view_width: units of the view-dependent layer (paper 128 = width / 2).
    """

    def __init__(
        self,
        *,
        depth: int = 8,
        width: int = 256,
        skip: int | None = 4,
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        view_width: int = 128,
        rngs: nnx.Rngs,
    ):
        if depth < 1 or width < 1 or view_width < 1:
            raise ValueError(
                f"depth, width, view_width must be >= 1; got {depth, width, view_width}"
            )
        if skip is not None and not 0 <= skip < depth - 1:
            raise ValueError(
                f"skip={skip} must satisfy 0 <= skip < depth - 1 = {depth - 1} (the layer after "
                "the skip takes the concatenated input), or be None"
            )
        if pos_freqs < 0 or dir_freqs < 0:
            raise ValueError(f"pos_freqs and dir_freqs must be >= 0; got {pos_freqs, dir_freqs}")
        self.skip = skip
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        p_dim, v_dim = encoded_size(3, pos_freqs), encoded_size(3, dir_freqs)
        ins = [p_dim] + [width + (p_dim if i - 1 == skip else 0) for i in range(1, depth)]
        self.trunk = nnx.List([_linear(d, width, rngs) for d in ins])
        self.sigma_head = _linear(width, 1, rngs)
        self.feature = _linear(width, width, rngs)
        self.view = _linear(width + v_dim, view_width, rngs)
        self.rgb_head = _linear(view_width, 3, rngs)

    def __call__(self, positions: jax.Array, directions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``positions [..., 3]`` (world or NDC), ``directions [..., 3]`` (any length,
        broadcastable to positions) -> ``sigma [...] >= 0``, ``rgb [..., 3] in [0, 1]``."""
        x = positional_encoding(positions, self.pos_freqs)
        h = x
        for i, layer in enumerate(self.trunk):
            h = nnx.relu(layer(h))
            if i == self.skip:
                h = jnp.concatenate([x, h], axis=-1)
        sigma = nnx.relu(self.sigma_head(h)[..., 0])
        d = directions / jnp.maximum(jnp.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
        # Encode once per ray, then broadcast over the samples (directions [R, 1, 3]).
        enc_d = positional_encoding(d, self.dir_freqs)
        enc_d = jnp.broadcast_to(enc_d, (*h.shape[:-1], enc_d.shape[-1]))
        h = nnx.relu(self.view(jnp.concatenate([self.feature(h), enc_d], axis=-1)))
        return sigma, nnx.sigmoid(self.rgb_head(h))


class NeRF(nnx.Module):
    """The paper's two networks (sec. 5.2): ``coarse`` places the fine samples, ``fine``
    renders the image. One module, so that one player updates both (their losses add).

    ``fine=False`` keeps the coarse MLP only (every sample stratified; used when
    ``nerf.num_fine == 0``). The remaining keyword arguments go to both :class:`NeRFMLP`.
    """

    def __init__(self, *, fine: bool = True, rngs: nnx.Rngs, **mlp_kwargs):
        self.coarse = NeRFMLP(**mlp_kwargs, rngs=rngs)
        self.fine = NeRFMLP(**mlp_kwargs, rngs=rngs) if fine else None


def param_count(module: nnx.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
