"""The interactive explorer (``explore.py``): a local page that shows what the quality code q of
QC-StyleGAN does (Nguyen et al., NeurIPS 2022; Eq. 10 scale, Sec. 4.4-4.5 degradation synthesis
and editing, Sec. 4.3 restoration).

Layers inside the package, imports pointing down:
  ``server``  the HTTP layer (standard library ``http.server``): routes, query parsing, static files;
  ``jobs``    restoration of uploads in a background thread (``restore_folder``, as ``restore.py``);
  ``session`` the state and rendering (``Explorer``): testable without HTTP.
"""
