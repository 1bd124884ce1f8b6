"""NeRF (survey chapter 5; Mildenhall et al. 2020): the model side.

`encoding` (positional encoding), `field` (the MLP), `sampling` (stratified and
inverse-CDF samples), `volume` (the quadrature of eq. 5.4), `objective` (one
player over ray batches; held-out views rendered in chunks) and `render` (the
CLI). Cameras, the Blender/LLFF loaders and the procedural scene are datasets:
see :mod:`zoo.data.scenes`.
"""
