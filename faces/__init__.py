"""Whole photos: face detection and landmarks (dlib, the optional ``faces`` extra), alignment to a
model's template, and paste-back (docs/faces.md).

Modules: ``detection`` (``FaceDetector``), ``alignment`` (similarity transform, crop, paste-back),
``templates`` (per-network templates; ``python -m faces.templates`` estimates one), ``pipeline``
(``FacePipeline`` and the helpers restore / edit / invert call). Imports only ``dnnlib``; dlib
is imported when a detector is built. Detection measured on composites of held-out faces lives
in ``evaluation.composites``.
"""
