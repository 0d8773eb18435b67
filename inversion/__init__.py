"""pSp-style w/q encoders, encoder training and PTI inversion for QC-StyleGAN.

Library API (applications such as restore.py and edit.py build on exactly this)::

    from inversion import invert_images, load_inversion, apply_delta, InversionResult, InversionConfig
    results = invert_images(G, images_uint8_hwc_list, encoder=None, config=InversionConfig(),
                            device=None, progress=True, on_result=None)   # -> list[InversionResult]
        # images: uint8 [H, W, 3] arrays of any size (resized to the model's, Lanczos)
        # encoder: an InversionEncoder (stage 1 = its prediction) or None (stage 1 = optimisation)
        # config: every setting (inversion/config.py; presets: resolve_config('official')), e.g.
        #   w_steps (None: 0 with an encoder, 300 without), pti_steps (0 = no tuning, delta None),
        #   batch_size (images inverted together, each with its own tuned weights; None: by device);
        #   keywords such as pti_steps=0 replace config fields
        # on_result(i, result) runs as soon as image i is finished
    InversionResult: w [num_ws, w_dim] tensor, q [q_dim] tensor, delta (dict of tuned tensors,
                     compact; see inversion/delta.py) or None, stats (InversionStats: typed fields,
                     .record() = result.json), reconstruction and sharp (uint8 [R, R, C] renders
                     of the tuned generator), name
    res = load_inversion(DIR / name)       # reads what `invert.py run` (save_inversion) wrote
    G_tuned = apply_delta(G, res.delta)    # a copy of G with the tuned tensors applied
    img_degraded = G_tuned.synthesis(res.w[None], res.q[None], noise_mode='const')
    img_sharp = G_tuned.synthesis(res.w[None], None, noise_mode='const')

    from .encoders import load_encoder   # encoder checkpoints (weights_only format)

Modules: ``models`` (``load_models``: the generator of a file, the encoder and the device, for
every CLI), ``encoders`` (ResNet w/q encoders, checkpoints), ``official_psp`` (the official
release's encoder files), ``encoder_training`` (encoder training), ``objectives`` (L2 + LPIPS or
the no-download fallback), ``config`` (``InversionConfig`` and presets), ``cli_options`` (the
CLIs' inversion options), ``pti`` (stage 1 optimisation, stage 2 pivotal tuning), ``delta``
(compact per-image deltas), ``api`` (the functions above), ``official_outputs`` (the official
pipeline's output folders). The applications built on it live in ``apps/``.
"""

from .api import InversionResult, InversionStats, invert_images, load_inversion, save_inversion  # noqa: F401
from .delta import apply_delta  # noqa: F401
from .config import InversionConfig, resolve_config  # noqa: F401
from .pti import PTIOptions, TuneResult  # noqa: F401
