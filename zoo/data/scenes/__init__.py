"""NeRF scenes as datasets: cameras, the Blender and LLFF folder formats, a procedural scene.

Train examples are single rays drawn across all training images; eval examples
are whole views. Registered in :mod:`zoo.data.pipeline` as ``blender`` and
``llff``; the model side lives in :mod:`zoo.nerf`.
"""
