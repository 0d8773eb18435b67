"""Train QC-StyleGAN (or a plain StyleGAN2-ADA teacher with --q-dim 0).

Examples:

    # QC fine-tuning from a stock StyleGAN2-ADA generator (it also becomes the teacher)
    python train.py --outdir runs --data data/ffhq256.zip --cfg paper256 --gpus 8 \\
        --resume stylegan2-ffhq256.pkl --mirror 1

    # a plain StyleGAN2-ADA from scratch (e.g. a teacher for a new dataset)
    python train.py --outdir runs --data data/faces64.zip --cfg auto --q-dim 0 --kimg 5000

    # multi-node: one process per GPU started by torchrun
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        train.py --outdir runs --data ... --cfg paper256 --resume ...

    # preemptible clusters: the same command again continues the run (SIGTERM/SIGUSR1 -> snapshot,
    # exit 0; see docs/preemption.md for a SLURM script)
    torchrun --nproc-per-node 8 train.py --outdir runs --data ... --cfg paper256 --init stock.pkl --resume latest

``--resume latest`` continues the newest complete snapshot of this run's folder (or starts it);
``--resume FILE`` continues a snapshot or starts from an official or stock file.
"""
import click

from dnnlib.util import cli_main
from training.options import DEFAULT_PRESET, FINE_TUNE_BLOCKS, default_text as d   # no torch: --help stays fast


@click.command(context_settings=dict(show_default=True))
@click.option("--outdir", required=True, metavar="DIR", help="Where run directories are created")
@click.option("--data", required=True, metavar="PATH", help="Training data: ZIP or folder (see dataset_tool.py)")
@click.option("--cfg", default=DEFAULT_PRESET, help="Preset in configs/ (paper256, paper512, church256, stylegan2, auto, smoke) or a JSON path")
@click.option("--gpus", type=int, default=None, help=f"Processes (GPUs) on this machine [default: {d('gpus')}; torchrun sets it]")
@click.option("--batch", type=int, default=None, help="Total batch size [default: preset]")
@click.option("--batch-gpu", type=int, default=None, help="Images per process per pass (gradient accumulation) [default: batch/gpus]")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of images [default: preset]")
@click.option("--tick", "tick_kimg", type=float, default=None, help="kimg per progress tick [default: preset]")
@click.option("--snap", type=int, default=None, help="Snapshot every N ticks (0 = only at the end) [default: preset]")
@click.option("--resume", default=None, metavar="FILE|latest|DIR", help="Our snapshot (continues the run), a StyleGAN2-ADA or QC-StyleGAN pickle, or a generator state_dict; 'latest' (or 'auto'): continue the newest complete snapshot of this run's folder, or start it; DIR: that run folder's newest snapshot")
@click.option("--init", default=None, metavar="FILE", help="With --resume latest: what a fresh start loads (the forms --resume FILE takes)")
@click.option("--teacher", default=None, metavar="FILE", help="Distillation teacher [default: the stock generator of --resume]")
@click.option("--q-dim", type=int, default=None, help=f"Quality code size; 0 = plain StyleGAN2-ADA [default: preset, {d('q_dim')}]")
@click.option("--kd-weight", type=float, default=None, help=f"lambda_KD, weight of the distillation loss [default: preset, {d('kd_weight')}]")
@click.option("--train-blocks", default=None, help=f"Synthesis blocks G trains, from the top: N, 'all', or 'degrad' (only the DegradBlocks: q = 0 stays the teacher) [default: {FINE_TUNE_BLOCKS} when fine-tuning a stock model, else all]")
@click.option("--gamma", type=float, default=None, help="R1 weight [default: preset]")
@click.option("--lr", type=float, default=None, help="Learning rate of G and D [default: preset]")
@click.option("--degraded-reals", type=bool, default=None, help=f"Plain runs: D sees reals through the degradation pipeline (the Table 1 baseline) [default: {d('degraded_reals')}]")
@click.option("--mirror", type=bool, default=None, help=f"Add x-flipped copies of the data [default: {d('mirror')}]")
@click.option("--cond", type=bool, default=None, help=f"Class-conditional, labels from dataset.json [default: {d('cond')}]")
@click.option("--max-size", type=int, default=None, help="Use at most this many images")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), default=None, help=f"Augmentation mode [default: {d('aug')}]")
@click.option("--augpipe", default=None, help=f"ADA pipeline (blit, geom, color, filter, noise, cutout, bg, bgc, bgcf, bgcfn, bgcfnc) [default: {d('augpipe')}]")
@click.option("--p", "aug_p", type=float, default=None, help=f"Augmentation probability for --aug fixed [default: {d('aug_p')}]")
@click.option("--target", type=float, default=None, help=f"ADA target for E[sign(D(real))] [default: {d('target')}]")
@click.option("--metrics", default=None, help="Comma-separated metrics at each snapshot, or 'none' [default: none]")
@click.option("--inception", default=None, help="Inception weights for FID/KID (see calc_metrics.py) [default: the cache]")
@click.option("--seed", type=int, default=None, help=f"Random seed [default: {d('seed')}]")
@click.option("--workers", type=int, default=None, help=f"Data loader processes per rank [default: {d('workers')}]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help=f"[default: {d('device')}]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help=f"auto: fp16 blocks on CUDA, bf16 on CPUs with AMX / AVX-512 BF16, else fp32; fp16: float16 in the preset's highest-resolution blocks (CUDA); bf16: bfloat16 autocast [default: {d('precision')}]")
@click.option("--dry-run", is_flag=True, help="Print the resolved options and the run directory, then exit")
@cli_main
def main(outdir, dry_run, **cli):
    """Train a QC-StyleGAN or StyleGAN2-ADA generator."""
    # Here, not at the top: torch + training import in 5-10 s (2-core AMD EPYC), --help in 0.3 s.
    from metrics.training_metrics import TRAINING_METRICS
    from training.launch import launch, resolve_options
    opts = resolve_options(cli, metric_runner=TRAINING_METRICS)     # training never imports metrics: handed over here
    run_dir = launch(opts, outdir, dry_run=dry_run, metric_runner=TRAINING_METRICS)
    if run_dir:
        print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
