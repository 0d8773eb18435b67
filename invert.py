"""Invert images into a QC-StyleGAN (encoder or optimisation, then PTI), and train the encoders.

Examples:
    python invert.py run --input photos/ --outdir out/inv            # the shipped model and encoder
    python invert.py run --network qc-ffhq256.pt --encoder enc/encoder.pt --input photos/ --outdir out/inv
    python invert.py run --network qc-ffhq256.pt --input face.png --outdir out/inv --w-steps 300 --pti-steps 350
    python invert.py train-encoder --network qc-ffhq256.pt --mode synthetic --outdir enc --steps 100000
    python invert.py train-encoder --network qc-ffhq256.pt --data ffhq256.zip --mode mixed --outdir enc
    python invert.py export-encoder enc/encoder.pt release-encoder.pt --half

Exit status of `run`: 0 when at least one image was inverted (now or before); 1 for a bad option
or when no input could be read (reasons in DIR/results.jsonl); 2 for a wrong --network /
--encoder file (nothing is written).
"""
from __future__ import annotations

import click

import json
import os

from dnnlib.util import UserError, cli_main
from inversion.cli_options import inversion_options
from inversion.encoders import export_encoder
from apps.invert_folder import InvertOptions, invert_folder
from inversion.models import load_models
from inversion.encoder_training import DEFAULTS as ENC, train_encoder
from torch_utils.misc import AUTOCAST_PRECISIONS
from training.dataset import ImageDataset


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Inversion: `run` inverts images, `train-encoder` trains the w/q encoders."""


@main.command("run")
@click.option("--network", "network_path", default=None, help="Generator file (our .pt, official .pkl, ...) [default: the shipped model]")
@click.option("--encoder", "encoder_path", default=None, help="Encoder checkpoint from train-encoder [default: the shipped encoder with the shipped model, else optimise w, q]")
@click.option("--input", "input_path", required=True, help="Image file or folder (searched recursively)")
@click.option("--outdir", required=True, help="Output folder: DIR/<name>/ per image and DIR/results.jsonl")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--align", type=click.Choice(["auto", "dlib", "none"]), default="auto", show_default=True,
              help="Whole photos: invert each face, aligned, into DIR/<name>_<k>/ with face.json (auto: inputs that are not R x R crops)")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Faces per photo, largest first [default: all]")
@click.option("--min-face", type=click.IntRange(min=1), default=16, show_default=True, help="Skip faces smaller than this (px)")
@cli_main
@inversion_options
def run(network_path, encoder_path, input_path, outdir, device, align, max_faces, min_face, inversion):
    """Invert images: DIR/<name>/{w.npy, q.npy, delta.pt, reconstruction.png, sharp.png, result.json}."""
    models = load_models(network_path, encoder_path, device, require_qc=False)
    faces = models.face_pipeline(align, max_faces, min_face)             # after every file check
    counts = invert_folder(models, input_path, outdir, InvertOptions(inversion=inversion, face_pipeline=faces))
    click.echo(f"inverted {counts['done']}, skipped {counts['skipped']} (done before), failed {counts['failed']} -> {outdir}")


@main.command("train-encoder")
@click.option("--network", "network_path", required=True, help="Generator file (frozen during training)")
@click.option("--data", default=None, help="Sharp real images (ZIP or folder, dataset_tool.py layout); needed for real/mixed")
@click.option("--outdir", required=True, help="Run folder (running again resumes from DIR/encoder.pt)")
@click.option("--mode", type=click.Choice(["synthetic", "real", "mixed"]), default=None, help="[default: real with --data, else synthetic]")
@click.option("--synthetic-frac", type=float, default=ENC.synthetic_frac, show_default=True, help="mixed: share of synthetic rows")
@click.option("--steps", type=int, default=ENC.steps, show_default=True, help="Total optimisation steps")
@click.option("--batch", type=int, default=ENC.batch, show_default=True)
@click.option("--lr", type=float, default=ENC.lr, show_default=True)
@click.option("--w-space", type=click.Choice(["w+", "w"]), default="w+" if ENC.w_plus else "w", show_default=True, help="One w per layer or one for all")
@click.option("--depth", type=click.Choice(["18", "34"]), default=str(ENC.depth), show_default=True, help="ResNet depth")
@click.option("--width", type=int, default=ENC.width, show_default=True, help="Backbone width (64 = torchvision)")
@click.option("--backbone-weights", default=None, help="torchvision resnet18/34 weights file for both backbones")
@click.option("--init", "init", default=None, help="Encoder file to start a new run from (its architecture and weights; e.g. the shipped encoder for a new generator of the same shapes)")
@click.option("--degradations", default=ENC.degradations, show_default=True, help="Pipeline for real rows (preset name or JSON spec)")
@click.option("--clean-frac", type=float, default=ENC.clean_frac, show_default=True, help="Real rows: share left sharp (the input is its own target)")
@click.option("--clean-q-weight", type=float, default=ENC.clean_q_weight, show_default=True,
              help="Weight of MSE(q, 0) on the rows --clean-frac leaves sharp (a sharp face's q is 0)")
@click.option("--q-readout-weight", type=float, default=ENC.q_readout_weight, show_default=True,
              help="Real rows: weight of MSE(A q, severity), a linear map A from q to the row's degradation (blur, noise, JPEG, downscale)")
@click.option("--l2-weight", type=float, default=ENC.l2_weight, show_default=True)
@click.option("--lpips-weight", type=float, default=ENC.lpips_weight, show_default=True)
@click.option("--w-norm-weight", type=float, default=ENC.w_norm_weight, show_default=True, help="||w - w_avg||^2 regulariser (real rows)")
@click.option("--latent-weight", type=float, default=ENC.latent_weight, show_default=True, help="MSE to the known (w, q) (synthetic rows)")
@click.option("--perceptual", type=click.Choice(["auto", "lpips", "lpips-random", "fallback"]), default=ENC.perceptual, show_default=True)
@click.option("--q-scale", default=",".join(f"{v:g}" for v in ENC.q_scale), show_default=True, metavar="LO,HI",
              help="Synthetic rows: q = k * N(0, I) with k ~ U(LO, HI) per row; 0,1 spans sharp to fully degraded renders")
@click.option("--log-steps", type=int, default=ENC.log_steps, show_default=True, help="Steps per stats.jsonl line")
@click.option("--snap-steps", type=int, default=ENC.snap_steps, show_default=True, help="Steps per snapshot and validation image")
@click.option("--seed", type=int, default=ENC.seed, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--precision", type=click.Choice(AUTOCAST_PRECISIONS), default=ENC.precision, show_default=True,
              help="auto: bf16 autocast where the CPU computes bf16 natively (AMX, AVX-512 BF16) or the GPU supports it, else fp32")
@click.option("--dry-run", is_flag=True, help="Print the resolved options and exit")
@cli_main
def train_encoder_cmd(network_path, data, outdir, mode, synthetic_frac, steps, batch, lr, w_space, depth, width,
                      backbone_weights, init, degradations, clean_frac, clean_q_weight, q_readout_weight, l2_weight, lpips_weight, w_norm_weight, latent_weight, perceptual,
                      q_scale, log_steps, snap_steps, seed, device, precision, dry_run):
    """Train the content (w) and quality (q) encoders for one generator."""
    mode = mode or ("real" if data else "synthetic")
    if mode != "synthetic" and not data:
        raise UserError(f"--mode {mode} needs --data")
    if min(steps, batch, log_steps, snap_steps) < 1:
        raise UserError("--steps, --batch, --log-steps and --snap-steps must be >= 1")
    if not 0 <= synthetic_frac <= 1:
        raise UserError("--synthetic-frac must be in [0, 1]")
    if not 0 <= clean_frac <= 1:
        raise UserError("--clean-frac must be in [0, 1]")
    if clean_q_weight < 0:
        raise UserError("--clean-q-weight must be >= 0")
    if q_readout_weight < 0:
        raise UserError("--q-readout-weight must be >= 0")
    try:
        q_scale = tuple(float(v) for v in q_scale.split(","))
    except ValueError:
        raise UserError(f"--q-scale must be LO,HI (two numbers), got '{q_scale}'") from None
    if len(q_scale) != 2 or not 0 <= q_scale[0] <= q_scale[1]:
        raise UserError(f"--q-scale must be LO,HI with 0 <= LO <= HI, got '{','.join(f'{v:g}' for v in q_scale)}'")
    opts = dict(mode=mode, synthetic_frac=synthetic_frac, steps=steps, batch=batch, lr=lr, w_plus=(w_space == "w+"),
                depth=int(depth), width=width, backbone_weights=backbone_weights, init=init, degradations=degradations, clean_frac=clean_frac, clean_q_weight=clean_q_weight, q_readout_weight=q_readout_weight,
                l2_weight=l2_weight, lpips_weight=lpips_weight, w_norm_weight=w_norm_weight, latent_weight=latent_weight,
                perceptual=perceptual, q_scale=q_scale, log_steps=log_steps, snap_steps=snap_steps, seed=seed,
                precision=precision)
    if dry_run:
        click.echo(json.dumps({"network": network_path, "data": data, "outdir": outdir, **opts}, indent=2))
        return
    models = load_models(network_path, device=device, require_qc=False, with_encoder=False)
    opts["device"] = str(models.device)
    dataset = ImageDataset(data) if data else None
    out = train_encoder(outdir, models.G, opts, dataset,
                        progress_fn=lambda s: click.echo(f"step {s['step']:<7d} loss {s['loss']:<9.4f} "
                                                         f"sec/step {s['sec_per_step']:.3f}"))
    if out.stopped:
        click.echo(f"stopped by {out.stopped} at step {out.step}; run the same command again to resume")
    click.echo(f"encoder: {out.encoder} (step {out.step}, precision {out.trainer.precision})")


@main.command("export-encoder")
@click.argument("src")
@click.argument("dst")
@click.option("--half", is_flag=True, help="Store the weights as float16 (half the size; loads as float32)")
@cli_main
def export_encoder_cmd(src, dst, half):
    """Write a release copy of encoder SRC to DST (no optimiser state)."""
    size = export_encoder(src, dst, half=half, metadata={"exported_from": os.path.basename(src)})
    click.echo(f"wrote {dst} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
