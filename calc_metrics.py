"""Compute metrics of a trained generator, or compare two image folders.

Generator metrics (FID/KID/SWD, sharp and degraded; see metrics/metric_main.py):

    python calc_metrics.py --network out/run/network-snapshot-000400.pkl \
        --metrics fid50k_full,fid50k_degraded_full,swd16k --data ../shared/datasets/utkface64.zip

appends one line per metric to ``metric-<name>.jsonl`` beside the network (or in --outdir).

Image folders (PSNR/SSIM/LPIPS against ground truth, NIQE without):

    python calc_metrics.py compare --pred out/restored --gt data/clean --metrics psnr,ssim,lpips,niqe

Exit status: 0 done (unreadable files of `compare` get an ``error`` line and are left out); 1 bad
option or nothing comparable; 2 a wrong --network file. Without --metrics, `compare` skips LPIPS
with a note when its weights are absent.
"""
from __future__ import annotations

import os

import click

from dnnlib.util import cli_main
from metrics.compare import compare_folders, format_table
from metrics.network_metrics import run_generator_metrics
from torch_utils.misc import resolve_device
from inversion.pretrained import default_network_path


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", metavar="FILE", help="Network file (our checkpoint or an official pickle) [default: the shipped model].")
@click.option("--metrics", default="fid50k_full", show_default=True, metavar="LIST",
              help="Comma-separated metric names, e.g. fid50k_full,fid50k_degraded_full,kid50k_full,swd16k "
                   "(counted variants like fid2k_full, swd2k_degraded also work).")
@click.option("--data", metavar="DATA", help="Real images (ZIP or folder) at the generator's resolution.")
@click.option("--inception", metavar="FILE",
              help="Inception-v3 weights: inception-2015-12-05.pt (TorchScript) or the pytorch-fid / "
                   "torch-fidelity .pth; default: the usual cache locations. 'random' = tiny test net (debug).")
@click.option("--inception-resize", type=click.Choice(["auto", "tf1", "torch"]), default="auto", show_default=True,
              help="Resize to 299 for state-dict Inception files (auto: as the publishing tool does).")
@click.option("--outdir", metavar="DIR", help="Where metric-<name>.jsonl goes (default: beside the network; out/metrics for the shipped model).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--cache-dir", metavar="DIR", help="Real-statistics cache (default: ~/.cache/qc-stylegan/gan-metrics).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of z, q, labels and noise.")
@click.option("--degradation", default="paper", show_default=True, help="Degradation pipeline for *_degraded metrics.")
@click.option("--degrade-seed", type=int, default=0, show_default=True, help="Seed of the real-image degradations.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
@cli_main
def main(ctx, network, metrics, data, inception, inception_resize, outdir, device, cache_dir, seed,
         degradation, degrade_seed, quiet):
    """Generator metrics (default command) or `compare` for image folders."""
    if ctx.invoked_subcommand is not None:
        return
    if not network:
        network = default_network_path(announce=True)
        outdir = outdir or os.path.join("out", "metrics")      # never write into pretrained/
    run_generator_metrics(network, metrics, data=data, inception=inception, inception_resize=inception_resize,
                          outdir=outdir, device=device, cache_dir=cache_dir, seed=seed,
                          degradation=degradation, degrade_seed=degrade_seed, progress=not quiet,
                          echo=click.echo)


@main.command("compare")
@click.option("--pred", required=True, metavar="DIR", help="Folder of result images.")
@click.option("--gt", metavar="DIR", help="Folder of ground-truth images (same relative paths).")
@click.option("--metrics", "metric_list", metavar="LIST",
              help="Some of psnr,ssim,lpips,niqe [default: all four with --gt, niqe without].")
@click.option("--out", metavar="FILE.json", help="Summary JSON; per-image lines go to FILE.jsonl "
                                                 "[default: <pred>-metrics.json beside the folder].")
@click.option("--channel", type=click.Choice(["rgb", "y"]), default="rgb", show_default=True,
              help="PSNR/SSIM on RGB or on the Y channel of YCbCr.")
@click.option("--crop-border", type=int, default=0, show_default=True, help="Pixels dropped on each side.")
@click.option("--lpips-net", type=click.Choice(["alex", "vgg"]), default="alex", show_default=True)
@click.option("--lpips-random", is_flag=True, help="Debug/tests only: random LPIPS backbone (not LPIPS).")
@click.option("--device", default="auto", show_default=True, help="Device for LPIPS.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_main
def compare(pred, gt, metric_list, out, channel, crop_border, lpips_net, lpips_random, device, quiet):
    """Compare --pred against --gt by relative path (PSNR, SSIM, LPIPS, NIQE)."""
    res = compare_folders(pred, gt, metrics=metric_list, channel=channel, crop_border=crop_border,
                          lpips_net=lpips_net, lpips_backbone="random" if lpips_random else "imagenet",
                          device=resolve_device(device), out=out, progress=not quiet)
    click.echo(format_table(res["summary"]))
    if res["errors"]:
        click.echo(f"warning: {len(res['errors'])} file(s) could not be compared, e.g. {res['errors'][0]['error']} "
                   f"(each has an 'error' line in {res['per_image']})", err=True)
    if res["unmatched"]:
        click.echo(f"warning: {len(res['unmatched'])} file(s) without ground truth skipped, "
                   f"e.g. {res['unmatched'][0]}", err=True)
    click.echo(f"summary -> {res['out']}\nper image -> {res['per_image']}")


if __name__ == "__main__":
    main()
