"""Encoder-training speed (``invert.py train-encoder``): seconds per step at each precision, side by side.

    python benchmarks/bench_encoder_train.py                          # the shipped generator, synthetic rows
    python benchmarks/bench_encoder_train.py --network ../runs/enc/G.pt --mode synthetic,mixed \\
        --precision fp32,bf16 --batch 16 --steps 4 --rounds 2 --threads 1 --json enc.json

Each configuration builds an ``inversion.encoder_training.EncoderTrainer`` as ``train-encoder``
does (the shipped encoder as ``--init`` when the shipped model is timed, else a fresh ResNet-18
pair) and times ``train_step`` after one warm-up step. The precisions alternate within a round and
the rounds repeat, so that a noisy machine disturbs both alike; the summary keeps each one's best
round. ``--clock cpu`` counts the process's CPU seconds (steadier beside background jobs).
Mixed rows need ``--data`` (sharp images; default: the UTKFace set under ../shared when present).
"""
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import click  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = os.path.join(ROOT, "..", "shared", "datasets", "utkface64.zip")


def time_steps(trainer, steps: int, clock: str) -> float:
    """Seconds per ``train_step`` over ``steps`` steps (after the caller's warm-up)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    start = now()
    for _ in range(steps):
        trainer.train_step()
    return (now() - start) / steps


@click.command()
@click.option("--network", default=None, help="Generator file [default: the shipped model]")
@click.option("--data", default=None, help="Sharp images for mixed rows [default: ../shared's UTKFace when present]")
@click.option("--mode", default="synthetic", show_default=True, help="Comma-separated: synthetic, real, mixed")
@click.option("--precision", default="fp32,bf16", show_default=True, help="Comma-separated: auto, fp32, bf16")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=3, show_default=True, help="Timed steps per configuration and round")
@click.option("--rounds", type=int, default=2, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True)
@click.option("--json", "json_path", default=None, metavar="FILE", help="Write all results as JSON")
def main(network, data, mode, precision, batch, steps, rounds, threads, clock, json_path):
    from inversion.encoder_training import EncoderTrainer
    from inversion.pretrained import DEFAULT_ENCODER, DEFAULT_NETWORK
    from torch_utils.misc import cpu_bf16_features, resolve_autocast_precision
    from training.checkpoint import load_generator
    from training.dataset import ImageDataset

    torch.set_num_threads(threads)
    G = load_generator(network or DEFAULT_NETWORK)
    init = DEFAULT_ENCODER if network is None else None
    modes = mode.split(",")
    dataset = None
    if any(m != "synthetic" for m in modes):
        data = data or (SHARED_DATA if os.path.isfile(SHARED_DATA) else None)
        if data is None:
            raise click.UsageError("--mode real/mixed needs --data")
        dataset = ImageDataset(data)
    cap = cpu_bf16_features()["capability"]
    results = []
    with tempfile.TemporaryDirectory() as root:
        trainers = {}
        for m in modes:
            for p in precision.split(","):
                resolved = resolve_autocast_precision(p, "cpu")
                opts = dict(mode=m, batch=batch, lr=1e-3, init=init, precision=p, perceptual="fallback")
                tr = EncoderTrainer(os.path.join(root, f"{m}-{p}"), G, opts, dataset if m != "synthetic" else None)
                tr.train_step()                                   # warm-up (kernel selection, allocations)
                trainers[(m, p)] = (tr, resolved)
        for rnd in range(rounds):
            keys = list(trainers) if rnd % 2 == 0 else list(trainers)[::-1]
            for m, p in keys:
                tr, resolved = trainers[(m, p)]
                sec = time_steps(tr, steps, clock)
                results.append(dict(mode=m, precision=p, resolved=resolved, round=rnd, sec_per_step=sec,
                                    batch=batch, threads=threads, clock=clock, cpu_capability=cap,
                                    load_average=os.getloadavg()[0]))
                print(f"[round {rnd}] mode={m} precision={p} ({resolved}) batch={batch} ({cap}, {threads} threads, "
                      f"load {os.getloadavg()[0]:.1f}): {sec:.3f} {clock}-sec/step", flush=True)
    print(f"\nsummary (best of {rounds} rounds, {clock}-sec/step):")
    for m in modes:
        best = {p: min(r["sec_per_step"] for r in results if r["mode"] == m and r["precision"] == p)
                for p in precision.split(",")}
        first = next(iter(best.values()))
        print(f"  {m}: " + ", ".join(f"{p} {s:.3f} ({first / s:.2f}x)" for p, s in best.items()))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
