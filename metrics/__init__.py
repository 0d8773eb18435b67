"""Metrics: generator metrics (FID, KID, SWD; registry in ``metrics.metric_main``) and image
metrics (PSNR, SSIM, LPIPS, NIQE; folder comparison in ``metrics.compare``)."""
