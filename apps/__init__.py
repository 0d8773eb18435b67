"""The applications over inversion (Sec. 4.3-4.5): restoration (``restore``, ``fidelity``:
``--fidelity auto``), editing (``editing``, ``directions``, ``linear``), degradation synthesis,
transfer and interpolation (``degradation_synthesis``), whole photos (``photos``), the latents
every application renders (``latents``), ``invert.py run``'s folder job (``invert_folder``) and
the folder jobs' shared layout (``store``). Every application is called the same way,
``app(models, input, outdir, options)``: ``invert_folder`` / ``InvertOptions``, ``restore_folder`` /
``RestoreOptions``, ``edit_folder`` / ``EditOptions`` (``models``: ``inversion.models.Models``;
each options dataclass holds its ``InversionConfig``). Imports ``inversion``, ``faces``,
``metrics`` and below; the CLIs (restore.py, edit.py, invert.py, demo.py) and ``explorer`` sit
above.
"""
