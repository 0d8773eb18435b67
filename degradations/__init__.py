"""Seeded, batched, real image degradations (blur, noise, low resolution, JPEG) as used to train
and evaluate QC-StyleGAN (Sec. 4). A library of its own: imports only ``torch_utils``/``dnnlib``.

    from degradations import build_pipeline
    pipe = build_pipeline('paper', resolution=64)
    y, records = pipe(x, generator=torch.Generator().manual_seed(0))   # x: [N,3,H,W] in [0,255]
    y2 = pipe.replay(x, records)
    img2, record = pipe.apply_numpy(img_uint8_hwc, seed)                # per image, OpenCV
"""
from .registry import OPS, Op, Param, Sampler, register_op  # noqa: F401
from .pipeline import Pipeline, build_pipeline, list_pipelines, load_spec  # noqa: F401
from .presets import PRESETS  # noqa: F401
