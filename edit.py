"""Edit inverted images with their degradation kept, synthesize degradations, learn boundaries
(QC-StyleGAN Sec. 4.4-4.5; InterfaceGAN, SeFa, GANSpace directions).

    python edit.py --network QC.pt --inversions INV --sefa 0 --strengths -3,-1.5,0,1.5,3 --outdir OUT
    python edit.py --network QC.pt --input IMAGES --direction smile.npy --outdir OUT   # inverts first
    python edit.py --network ffhq_256x256.pkl --encoder ffhq_psp.pt --input IMAGES \
        --direction smiling_boundary.npy --mode set-distance --outdir OUT                # the release's edit
    python edit.py degradation --network QC.pt --source INV/a --reference INV/b --alphas 0,0.5,1 --outdir OUT
    python edit.py fit-boundary --network QC.pt --inversions INV --labels dataset.json --out smile.npy

``edit`` is the default command (``python edit.py --network ...`` runs it).

Exit status: 0 when something was edited (now or before); 1 for a bad option or when no --input
image could be read (reasons in OUTDIR/inversions/results.jsonl); 2 for a wrong --network /
--encoder file, e.g. a plain StyleGAN2 one (nothing is written).
"""
from __future__ import annotations

import os

import click

from dnnlib.util import UserError, cli_main, parse_range
from apps.degradation_synthesis import synthesize_degradations
from apps.directions import fit_boundary_on_latents, pick_direction, read_labels, save_boundary
from apps.editing import EDIT_MODES, OFFICIAL_DISTANCES, EditOptions, edit_folder
from apps.invert_folder import InvertOptions
from apps.latents import latents_from_images, load_latents
from inversion.cli_options import inversion_options
from inversion.config import InversionConfig
from inversion.models import load_models
from inversion.pretrained import resolve_direction

DEFAULT_STRENGTHS = "-3,-1.5,0,1.5,3"


class DefaultGroup(click.Group):
    """A group whose first argument may be an option of the default command ``edit``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["edit"] + list(args)
        elif not args:
            args = ["edit"]
        return super().parse_args(ctx, args)


def _floats(spec: str, what: str):
    try:
        vals = [float(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got '{spec}'") from None
    if not vals:
        raise UserError(f"{what} is empty")
    return vals


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Semantic editing, degradation synthesis and boundary learning with QC-StyleGAN."""


@cli.command("edit")
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--inversions", default=None, type=click.Path(), help="invert.py output folder (or one image's folder), the official release's pSp output folder (latent/ + org/), or seeds:RANGE.")
@click.option("--input", "input_path", default=None, type=click.Path(), help="Images to invert first (instead of --inversions).")
@click.option("--encoder", default=None, help="Encoder checkpoint for --input [default: the shipped encoder with the shipped model].")
@click.option("--direction", default=None, help="Boundary / direction .npy ([1, w_dim], [w_dim] or [num_ws, w_dim]), or 'gender' (the shipped model's boundary).")
@click.option("--sefa", type=click.IntRange(min=0), default=None, help="Use the K-th SeFa direction.")
@click.option("--ganspace", type=click.IntRange(min=0), default=None, help="Use the K-th GANSpace component.")
@click.option("--layers", default=None, help="w rows to edit, e.g. '0-5' [default: all].")
@click.option("--mode", type=click.Choice(EDIT_MODES), default="add", show_default=True,
              help="add: w + αΔw; set-distance: the official release's edit, w + (d - w·n) n puts w at signed distance d "
                   "from the boundary (n: the direction, e.g. the release's smiling_boundary.npy).")
@click.option("--strengths", default=None,
              help=f"Comma list: α (add) [default: {DEFAULT_STRENGTHS}] or distances d (set-distance) [default: the "
                   f"release's linspace(-3, 3, 10)].")
@click.option("--outdir", required=True, type=click.Path())
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--align", type=click.Choice(["auto", "dlib", "none"]), default="auto", show_default=True,
              help="--input whole photos: edit each face and paste it back into OUTDIR/photos/ (auto: inputs that are not R x R crops).")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Faces per photo, largest first [default: all].")
@click.option("--min-face", type=click.IntRange(min=1), default=16, show_default=True, help="Skip faces smaller than this (px).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_main
@inversion_options
def edit_cmd(network, inversions, input_path, encoder, direction, sefa, ganspace, layers, mode, strengths, outdir,
             device, align, max_faces, min_face, quiet, inversion):
    """Edit images along a direction: G(w + αΔw, q) (degradation kept) and G(w + αΔw, 0).
    The inversion options apply to --input."""
    if (inversions is None) == (input_path is None):
        raise UserError("give exactly one of --inversions DIR or --input DIR")
    if strengths is not None:
        strengths = _floats(strengths, "--strengths")
    else:
        strengths = list(OFFICIAL_DISTANCES) if mode == "set-distance" else _floats(DEFAULT_STRENGTHS, "--strengths")
    models = load_models(network, encoder, device, with_encoder=input_path is not None)
    layers = parse_range(layers) if layers is not None else None
    d, info = pick_direction(models.G, resolve_direction(direction), sefa, ganspace, layers, models.device)
    faces = models.face_pipeline(align, max_faces, min_face) if input_path is not None else None
    summary = edit_folder(models, inversions if input_path is None else input_path, outdir,
                          EditOptions(direction=d, strengths=strengths, mode=mode, direction_info=info,
                                      from_inversions=input_path is None, inversion=inversion, face_pipeline=faces,
                                      progress=not quiet))
    pasted = summary["pasted"]
    click.echo(f"{summary['written']} edited, {summary['skipped']} already there (of {summary['images']}) -> {outdir}"
               + (f"; {pasted} photos with their faces pasted back -> {os.path.join(outdir, 'photos')}" if pasted else ""))


@cli.command("degradation")
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--source", required=True, help="invert.py output folder, one image's folder, or seeds:RANGE.")
@click.option("--reference", default=None, help="One image's inversion folder (or seeds:N) whose q is transferred.")
@click.option("--alphas", default=None, help="Interpolate q from the source's (0) to the reference's (1).")
@click.option("--q-seeds", default=None, help="Novel degradations: q from these seeds.")
@click.option("--scales", default=None, help="Scale the source's q by these factors.")
@click.option("--outdir", required=True, type=click.Path())
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--quiet", is_flag=True)
@cli_main
def degradation_cmd(network, source, reference, alphas, q_seeds, scales, outdir, device, quiet):
    """Keep w, change q: novel (--q-seeds), transfer (--reference), interpolate (--reference --alphas), scale."""
    models = load_models(network, device=device, with_encoder=False)
    mode, summary = synthesize_degradations(
        models, source, outdir, reference=reference,
        alphas=_floats(alphas, "--alphas") if alphas is not None else None,
        q_seeds=parse_range(q_seeds) if q_seeds is not None else None,
        scales=_floats(scales, "--scales") if scales is not None else None, progress=not quiet)
    click.echo(f"{mode}: {summary['renders']} renders of {summary['images']} images -> {outdir}")


@cli.command("fit-boundary")
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--inversions", default=None, type=click.Path(), help="invert.py output folder of the labelled images.")
@click.option("--input", "input_path", default=None, type=click.Path(), help="Labelled images to invert first.")
@click.option("--encoder", default=None, help="Encoder checkpoint for --input (fast: no PTI is needed for w) [default: the shipped one with the shipped model].")
@click.option("--w-steps", type=click.IntRange(min=0), default=None, help="Stage-1 steps for --input.")
@click.option("--labels", required=True, type=click.Path(), help="dataset.json ({'labels': [[file, label], ...]}) or file,label CSV.")
@click.option("--attribute", type=int, default=None, help="Entry of vector labels to use.")
@click.option("--threshold", type=float, default=None, help="Binarize numeric labels: label > threshold.")
@click.option("--test-fraction", type=click.FloatRange(0.05, 0.95), default=0.25, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Boundary .npy (accuracies go to the .json beside it).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@cli_main
def fit_boundary_cmd(network, inversions, input_path, encoder, w_steps, labels, attribute, threshold,
                     test_fraction, seed, out, device):
    """Learn an InterfaceGAN boundary from labelled images (linear classifier on w)."""
    if (inversions is None) == (input_path is None):
        raise UserError("give exactly one of --inversions DIR or --input DIR")
    label_map = read_labels(labels, attribute, threshold)
    models = load_models(network, encoder, device, require_qc=False, with_encoder=input_path is not None)
    if input_path is not None:
        inv_dir = os.path.join(os.path.splitext(out)[0] + "-inversions-root", "inversions")
        latents = latents_from_images(models, input_path, inv_dir,
                                      InvertOptions(inversion=InversionConfig(pti_steps=0, w_steps=w_steps)))
    else:
        latents = load_latents(models.G, inversions, device=models.device)
    result, count = fit_boundary_on_latents(latents, label_map, test_fraction=test_fraction, seed=seed,
                                            log=lambda msg: click.echo(msg, err=True))
    path = save_boundary(out, result, {"labels": os.path.abspath(labels), "attribute": attribute,
                                       "threshold": threshold, "images": count})
    click.echo(f"test accuracy {100 * result['test_accuracy']:.1f} % (train {100 * result['train_accuracy']:.1f} %, "
               f"chance {100 * result['chance']:.1f} %) -> {path}")


if __name__ == "__main__":
    cli()  # pylint: disable=no-value-for-parameter
