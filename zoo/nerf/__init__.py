"""NeRF (survey chapter 5; Mildenhall et al. 2020): cameras, scenes, loaders and the model.

Data side: `cameras` (pinhole rays, NDC rays, orbit poses), `scene` (a procedural scene written
as a Blender folder), `blender` and `llff` (the two standard scene formats, registered as the
"blender" and "llff" datasets in `zoo.data`). Model side: the positional encoding, the MLP
field, ray sampling, the volume-rendering quadrature of eq. 5.4 and the objective.
"""
