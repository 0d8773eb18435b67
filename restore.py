"""Blind restoration of a folder with QC-StyleGAN (Sec. 4.3): invert (encoder + PTI), render
G_θ(w, 0), resize back to each input's size.

    python restore.py --network QC.pt [--encoder E.pt] --input DIR_OR_FILE --outdir DIR \
        [--inversions INV] [--gt GT] [--compare]

Writes the restored PNGs under the inputs' relative paths, ``restore.jsonl`` (per image) and,
with ``--gt``, ``restore-summary.json``. Rerunning the same command skips finished images.

Exit status: 0 when at least one image was restored (now or before); 1 for a bad option, a
missing path, or when no input could be read (each unreadable file has an ``error`` line in
restore.jsonl); 2 for a wrong --network / --encoder file (nothing is written).

Whole photos (``--align auto|dlib``): every face is detected, aligned, restored and pasted back;
``faces/<name>_<k>.png`` = aligned input | restored (docs/faces.md). ``--fidelity auto`` (default)
keeps as much of the input as the model's degradation estimate says (a sharp input is left as it
is); ``--fidelity F`` keeps F of it everywhere; ``--fidelity 0`` is the paper's G(w, 0).
"""
from __future__ import annotations

import click

from dnnlib.util import UserError, cli_main
from apps.fidelity import check_fidelity, load_curve
from apps.restore import RestoreOptions, restore_folder
from inversion.cli_options import inversion_options
from inversion.models import load_models
from metrics.compare import format_table


class FidelityType(click.ParamType):
    """``--fidelity``: 'auto' or a number in [0, 1] (a bad value is click's usage error, exit 2)."""
    name = "auto|F"

    def convert(self, value, param, ctx):
        try:
            return check_fidelity(value)
        except UserError as exc:
            self.fail(str(exc).replace("--fidelity ", ""), param, ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--encoder", default=None, help="Encoder checkpoint (w, q start) [default: the shipped encoder with the shipped model, else optimisation from w_avg].")
@click.option("--input", "input_path", required=True, type=click.Path(), help="Image file or folder (recursive).")
@click.option("--outdir", required=True, type=click.Path(), help="Output folder (must differ from --input).")
@click.option("--inversions", default=None, type=click.Path(), help="Reuse an invert.py run folder (DIR/<name>/), or start PTI from the official release's pSp outputs (DIR/latent/ + DIR/org/; use --input DIR/org).")
@click.option("--keep-inversions", is_flag=True, help="Save new inversions under OUTDIR/inversions (for edit.py).")
@click.option("--gt", default=None, type=click.Path(), help="Ground-truth folder (same relative paths) for metrics.")
@click.option("--metrics", default=None, help="With --gt: comma list of psnr, ssim, lpips, niqe [default: all; lpips skipped with a note when its weights are absent].")
@click.option("--lpips-backbone", type=click.Choice(["imagenet", "random"]), default="imagenet", show_default=True,
              help="'random' is for debugging only: its numbers are not LPIPS.")
@click.option("--compare", is_flag=True, help="Also write OUTDIR/compare/<name>.png: input | restored (| gt).")
@click.option("--fidelity", type=FidelityType(), default="auto", show_default=True,
              help="Share of the input kept: 'auto' = per image from the model's estimate of the input's degradation "
                   "(a sharp input is left as it is; the curve beside the network, <stem>-fidelity.json); a number f in "
                   "[0, 1] for every image: input + (1 - f)(restored - input), detail above the model's resolution "
                   "kept; 0 = the paper's restoration G(w, 0).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--align", type=click.Choice(["auto", "dlib", "none"]), default="auto", show_default=True,
              help="Whole photos: detect, align, restore and paste back each face (auto: inputs that are not "
                   "R x R crops; none: every input is an aligned crop).")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Faces per photo, largest first [default: all].")
@click.option("--min-face", type=click.IntRange(min=1), default=16, show_default=True, help="Skip faces smaller than this (px, detector box).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_main
@inversion_options
def main(network, encoder, input_path, outdir, inversions, keep_inversions, gt, metrics, lpips_backbone, compare,
         fidelity, device, align, max_faces, min_face, quiet, inversion):
    """Restore degraded images: G(w, 0) of their QC-StyleGAN inversion."""
    if metrics is not None and gt is None:
        raise UserError("--metrics needs --gt")
    models = load_models(network, encoder, device)                 # every file checked before anything runs
    curve = load_curve(models.network, log=lambda m: click.echo(m, err=True))[0] if fidelity == "auto" else None
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    opts = RestoreOptions(inversions=inversions, gt=gt, compare=compare, keep_inversions=keep_inversions, metrics=names,
                          lpips_backbone=lpips_backbone, inversion=inversion, fidelity=fidelity, fidelity_curve=curve,
                          progress=not quiet, face_pipeline=models.face_pipeline(align, max_faces, min_face))
    s = restore_folder(models, input_path, outdir, opts)
    click.echo(f"{s['written']} restored ({s['reused']} from --inversions), {s['skipped']} already there, "
               f"{s['failed']} unreadable (of {s['inputs']})"
               + (f"; {s['faces']} faces pasted back, {s['no_face']} photos without a face" if s["faces"] or s["no_face"] else ""))
    for kind, table in (s.get("metrics") or {}).items():
        click.echo(f"{kind}:\n{format_table(table)}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
