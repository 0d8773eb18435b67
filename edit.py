"""Edit inverted images with their degradation kept, synthesize degradations, learn boundaries
(QC-StyleGAN Sec. 4.4-4.5; InterfaceGAN, SeFa, GANSpace directions).

    python edit.py --network QC.pt --inversions INV --sefa 0 --strengths -3,-1.5,0,1.5,3 --outdir OUT
    python edit.py --network QC.pt --input IMAGES --direction smile.npy --outdir OUT   # inverts first
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


def _load_G(network, device, require_qc=True, with_meta=False):
    """G (``load_generator``'s rule) on ``device``; with ``with_meta``, also the file's metadata and
    source (for the face template), the file read once."""
    from training.checkpoint import load_network, pick_generator
    from inversion.pretrained import resolve_network
    path = resolve_network(network)
    nets = load_network(path, device="cpu")
    G = pick_generator(nets, path, require_qc=require_qc).to(device)
    return (G, {k: nets.get(k) for k in ("metadata", "source")}) if with_meta else G


def _latents_from_images(G, input_path, outdir, encoder, pti_steps, w_steps, device, batch_size=None,
                         faces=None):
    """Invert the images under ``input_path`` into ``outdir/inversions`` with the resumable folder
    loop of ``invert.py run`` (each image written when it is finished; reused on a rerun;
    unreadable files reported in its results.jsonl), ``batch_size`` at a time (default: by device).
    ``faces`` (a function returning the face pipeline, called after the encoder file is checked):
    each face of a whole photo is inverted aligned, as ``<name>_<k>``."""
    from inversion.api import DEFAULT_PTI_STEPS
    from inversion.applications.latents import load_latents
    from inversion.folder import invert_folder
    E = None
    if encoder:         # already resolved by the caller (resolve_encoder)
        from inversion.encoders import load_encoder
        E = load_encoder(encoder, device=device, generator=G)
    inv_dir = os.path.join(outdir, "inversions")
    invert_folder(G, input_path, inv_dir, encoder=E, pti_steps=DEFAULT_PTI_STEPS if pti_steps is None else pti_steps,
                  w_steps=w_steps, device=device, batch=batch_size, face_pipeline=faces() if faces else None)
    return load_latents(G, inv_dir, device=device)


def _direction(G, direction, sefa, ganspace, layers, device):
    from inversion.applications.directions import get_direction
    given = [(k, v) for k, v in (("boundary", direction), ("sefa", sefa), ("ganspace", ganspace)) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --direction FILE, --sefa K, --ganspace K")
    kind, arg = given[0]
    d = get_direction(G, kind, arg, layers=layers, device=device)
    info = {"kind": kind, "arg": os.path.abspath(arg) if kind == "boundary" else int(arg),
            "layers": layers if layers is not None else "all"}
    return d, info


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Semantic editing, degradation synthesis and boundary learning with QC-StyleGAN."""


@cli.command("edit")
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--inversions", default=None, type=click.Path(), help="invert.py output folder (or one image's folder), or seeds:RANGE.")
@click.option("--input", "input_path", default=None, type=click.Path(), help="Images to invert first (instead of --inversions).")
@click.option("--encoder", default=None, help="Encoder checkpoint for --input [default: the shipped encoder with the shipped model].")
@click.option("--pti-steps", type=click.IntRange(min=0), default=None, help="PTI steps for --input [default: the inversion default].")
@click.option("--w-steps", type=click.IntRange(min=0), default=None, help="Stage-1 steps for --input [default: the inversion default].")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=None, help="--input: Images inverted together (stage 1 and PTI, each with its own tuned weights) [default: 8 on CPU, 32 on CUDA].")
@click.option("--direction", default=None, help="Boundary / direction .npy ([1, w_dim], [w_dim] or [num_ws, w_dim]), or 'gender' (the shipped model's boundary).")
@click.option("--sefa", type=click.IntRange(min=0), default=None, help="Use the K-th SeFa direction.")
@click.option("--ganspace", type=click.IntRange(min=0), default=None, help="Use the K-th GANSpace component.")
@click.option("--layers", default=None, help="w rows to edit, e.g. '0-5' [default: all].")
@click.option("--strengths", default=DEFAULT_STRENGTHS, show_default=True, help="Comma list of strengths α.")
@click.option("--outdir", required=True, type=click.Path())
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--align", type=click.Choice(["auto", "dlib", "none"]), default="auto", show_default=True,
              help="--input whole photos: edit each face and paste it back into OUTDIR/photos/ (auto: inputs that are not R x R crops).")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Faces per photo, largest first [default: all].")
@click.option("--min-face", type=click.IntRange(min=1), default=16, show_default=True, help="Skip faces smaller than this (px).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_main
def edit_cmd(network, inversions, input_path, encoder, pti_steps, w_steps, batch_size, direction, sefa, ganspace,
             layers, strengths, outdir, device, align, max_faces, min_face, quiet):
    """Edit images along a direction: G(w + αΔw, q) (degradation kept) and G(w + αΔw, 0)."""
    import torch
    from inversion.applications.editing import edit_latents
    from inversion.applications.latents import load_latents
    from inversion.pretrained import resolve_direction, resolve_encoder
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (inversions is None) == (input_path is None):
        raise UserError("give exactly one of --inversions DIR or --input DIR")
    strengths = _floats(strengths, "--strengths")
    G, meta = _load_G(network, device, with_meta=True)
    layers = parse_range(layers) if layers is not None else None
    d, info = _direction(G, resolve_direction(direction), sefa, ganspace, layers, device)
    pasted = 0
    if input_path is not None:
        from faces.pipeline import build_face_pipeline
        from inversion.pretrained import resolve_network
        net_path = resolve_network(network, announce=False)
        def faces():
            return build_face_pipeline(align, G, net_path, meta, max_faces=max_faces,
                                       min_face=min_face)
        latents = _latents_from_images(G, input_path, outdir, resolve_encoder(encoder, network), pti_steps,
                                       w_steps, device, batch_size, faces)
    else:
        latents = load_latents(G, inversions, device=device)
    summary = edit_latents(G, latents, d, strengths, outdir, device=device, direction_info=info, progress=not quiet)
    if input_path is not None:
        from dnnlib.image_io import list_sources
        from inversion.applications.photos import paste_edits
        pasted = paste_edits(os.path.join(outdir, "inversions"), outdir, list_sources(input_path, outdir)[0], strengths)
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
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--quiet", is_flag=True)
@cli_main
def degradation_cmd(network, source, reference, alphas, q_seeds, scales, outdir, device, quiet):
    """Keep w, change q: novel (--q-seeds), transfer (--reference), interpolate (--reference --alphas), scale."""
    import torch
    from inversion.applications.degradation_synthesis import synthesize_folder
    from inversion.applications.latents import load_latents
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    picked = [k for k, v in (("alphas", alphas), ("q-seeds", q_seeds), ("scales", scales)) if v is not None]
    if len(picked) > 1:
        raise UserError(f"give only one of --alphas, --q-seeds, --scales (got {', '.join(picked)})")
    G = _load_G(network, device)
    ref = None
    if reference is not None:
        refs = load_latents(G, reference, device=device)
        if len(refs) != 1:
            raise UserError(f"--reference must be one image, found {len(refs)} under {reference}")
        ref = refs[0]
    if alphas is not None:
        mode, values, seeds = "interpolate", _floats(alphas, "--alphas"), ()
    elif q_seeds is not None:
        mode, values, seeds = "novel", (), parse_range(q_seeds)
    elif scales is not None:
        mode, values, seeds = "scale", _floats(scales, "--scales"), ()
    elif ref is not None:
        mode, values, seeds = "transfer", (), ()
    else:
        raise UserError("say what to do: --reference (transfer), --reference --alphas, --q-seeds or --scales")
    sources = load_latents(G, source, device=device)
    summary = synthesize_folder(G, sources, mode, outdir, values=values, reference=ref, seeds=seeds,
                                device=device, progress=not quiet)
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
@click.option("--device", default=None)
@cli_main
def fit_boundary_cmd(network, inversions, input_path, encoder, w_steps, labels, attribute, threshold,
                     test_fraction, seed, out, device):
    """Learn an InterfaceGAN boundary from labelled images (linear classifier on w)."""
    import numpy as np
    import torch
    from inversion.applications.directions import fit_boundary, read_labels, save_boundary
    from inversion.applications.latents import load_latents
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (inversions is None) == (input_path is None):
        raise UserError("give exactly one of --inversions DIR or --input DIR")
    label_map = read_labels(labels, attribute, threshold)
    by_stem = {os.path.splitext(k)[0]: v for k, v in label_map.items()}
    G = _load_G(network, device, require_qc=False)
    if input_path is not None:
        outdir = os.path.splitext(out)[0] + "-inversions-root"
        from inversion.pretrained import resolve_encoder
        latents = _latents_from_images(G, input_path, outdir, resolve_encoder(encoder, network), 0, w_steps, device)
    else:
        latents = load_latents(G, inversions, device=device)
    ws, ys, missing = [], [], []
    for lat in latents:
        if lat.name in by_stem:
            ws.append(lat.w.numpy())
            ys.append(by_stem[lat.name])
        else:
            missing.append(lat.name)
    if missing:
        click.echo(f"{len(missing)} images have no label (e.g. {missing[0]}); left out", err=True)
    if len(ws) < 4:
        raise UserError(f"only {len(ws)} labelled images matched the labels file; need at least 4")
    result = fit_boundary(np.stack(ws), ys, test_fraction=test_fraction, seed=seed)
    path = save_boundary(out, result, {"labels": os.path.abspath(labels), "attribute": attribute,
                                       "threshold": threshold, "images": len(ws)})
    click.echo(f"test accuracy {100 * result['test_accuracy']:.1f} % (train {100 * result['train_accuracy']:.1f} %, "
               f"chance {100 * result['chance']:.1f} %) -> {path}")


if __name__ == "__main__":
    cli()  # pylint: disable=no-value-for-parameter
