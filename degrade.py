"""Degrade real images with a named or custom pipeline (QC-StyleGAN degradations, Sec. 4).

    python degrade.py --input DIR_OR_FILE --outdir DIR --pipeline paper --seed 0 [--copies N]

Writes PNGs under the same relative paths, ``degradations.jsonl`` (file, seed, record) and
``degrade_options.json``; existing outputs are skipped, so rerunning resumes.
"""
from __future__ import annotations

import click

from degradations.folder import degrade_folder
from dnnlib.util import cli_main


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--input", "input_path", required=True, type=click.Path(), help="Image file or folder (searched recursively).")
@click.option("--outdir", required=True, type=click.Path(), help="Output folder (must differ from --input).")
@click.option("--pipeline", default="paper", show_default=True,
              help="Preset (paper, blur, superres, noise, jpeg, multiple) or a JSON spec file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed; each output's seed derives from it.")
@click.option("--copies", type=click.IntRange(min=1), default=1, show_default=True,
              help="Degraded copies per input (NAME_0.png, NAME_1.png, ...).")
@click.option("--resolution", type=click.IntRange(min=1), default=None,
              help="Resolution the ranges are set for [default: each image's min(H, W)].")
@click.option("--mode", type=click.Choice(["relative", "absolute"]), default=None,
              help="Range scaling [default: relative below 256, absolute at 256 and above].")
@click.option("--dry-run", is_flag=True, help="List what would be done and stop.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_main
def main(input_path, outdir, pipeline, seed, copies, resolution, mode, dry_run, quiet):
    """Degrade images for restoration test sets and degraded-image evaluation."""
    summary = degrade_folder(input_path, outdir, pipeline=pipeline, seed=seed, copies=copies,
                             resolution=resolution, mode=mode, progress=not quiet, dry_run=dry_run)
    click.echo(f"{summary['written']} written, {summary['skipped']} already there, "
               f"{summary['failed']} unreadable (of {summary['outputs']} outputs)")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
