"""Training speed: sec/kimg of a preset on the current device, on a generated dataset.

    python benchmarks/bench_train.py --cfg faces64 --res 64 --batch 16 --q-dim 0,16 --steps 4
    python benchmarks/bench_train.py --cfg faces64 --res 64 --batch 16 --q-dim 0,16 --profile \\
        --baseline /tmp/old-checkout            # the same runs with another checkout's code, side by side
    python benchmarks/bench_train.py --cfg paper256 --res 256 --batch 4 --steps 2 --profile

Each run builds the options with ``training.launch.resolve_options`` and steps a
``training.training_loop.Trainer``, exactly as ``train.py`` does: QC runs (q_dim > 0) resume a
random stock generator (it also becomes the teacher), so the default fine-tune (top three
blocks, mapping frozen), both discriminators, distillation and lazy R1 / path length are timed.
Data loading runs in-process (``--workers 0``) so that it shows in the profile.

The figure is the *amortised* step: the timed steps start at step 0, where every phase runs, and
a lazy phase (interval k) counts 1/k of its measured time per step, so a few steps give the cost
of a long run. ``--profile`` prints the per-section table (exclusive times; see
``torch_utils/profiling.py``). ``--baseline DIR`` times the same runs with the code in DIR (for
example a checkout of main), alternating with this checkout's code in one session; the ratios
of one session are what to compare on a shared machine (``--clock cpu`` counts the process's
CPU seconds instead of wall time, steadier under load). ``--json FILE`` writes all results.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.environ.get("QC_BENCH_CODE") or ROOT          # --baseline runs set it for a child process
sys.path.insert(0, CODE)

import click  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402


def make_dataset(root: str, res: int, count: int = 64) -> str:
    from training.dataset import convert_dataset
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:res, 0:res]
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    for i in range(count):
        img = np.zeros((res, res, 3), np.uint8) + rng.randint(0, 80, 3).astype(np.uint8)
        (cx, cy), r = rng.uniform(0.25, 0.75, 2) * res, rng.uniform(0.1, 0.4) * res
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(os.path.join(root, "src", f"{i:04d}.png"))
    path = os.path.join(root, f"bench{res}.zip")
    convert_dataset(os.path.join(root, "src"), path, progress=False)
    return path


def _profiling():
    """This checkout's torch_utils/profiling.py (also when timing older code without it)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_bench_profiling", os.path.join(ROOT, "torch_utils", "profiling.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preset_q_dim(cfg: str) -> int:
    """The preset's q_dim, with this checkout's options or an older one's (``--baseline``)."""
    try:
        from training.options import load_preset        # presets name what differs from the defaults
    except ImportError:                                 # older code: every preset names every option
        from training.launch import load_config
        return load_config(cfg)["q_dim"]
    return load_preset(cfg).get("q_dim")


def flat_options(opts) -> dict:
    """Option name -> value: this checkout's ``TrainingOptions`` or an older checkout's flat dict."""
    return opts.to_flat() if hasattr(opts, "to_flat") else dict(opts)


def build_trainer(cli: dict, root: str):
    """A Trainer for ``cli`` as train.py builds it (QC: resuming a random stock generator)."""
    from training import checkpoint as ckpt
    from training.dataset import ImageDataset
    from training.launch import resolve_options
    from training.training_loop import Trainer, build_networks
    q_dim = cli["q_dim"] if cli.get("q_dim") is not None else preset_q_dim(cli["cfg"])
    opts = resolve_options(dict(cli, q_dim=0, train_blocks=None))     # the stock network's options
    if q_dim > 0:             # a random stock generator: the start point and the teacher
        torch.manual_seed(0)
        nets = build_networks(opts, ImageDataset(flat_options(opts)["data"]))
        stock = os.path.join(root, "stock.pt")
        ckpt.save_checkpoint(stock, nets={"G": nets["G"], "D": nets["D"]})
        opts = resolve_options(dict(cli, resume=stock))
    return Trainer(os.path.join(root, "run"), opts), opts


def measure(cli: dict, steps: int, warmup: int, root: str, clock: str = "wall") -> dict:
    """Amortised sec/kimg and the per-section table of one configuration."""
    PhaseTimer = _profiling().PhaseTimer
    trainer, opts = build_trainer(cli, root)
    flat = flat_options(opts)
    timer = PhaseTimer(trainer.device, clock=clock)
    if hasattr(trainer, "timer"):           # this checkout: sections inside the step
        trainer.timer = trainer.loss.timer = timer
    else:                                   # older code: time whole phases from outside
        accumulate = trainer.loss.accumulate

        def timed(phase, *args, **kwargs):
            with timer(phase):
                return accumulate(phase, *args, **kwargs)
        trainer.loss.accumulate = timed
    it = trainer.data_iterator()
    for _ in range(warmup):
        trainer.step(it)
    trainer.batch_idx = 0                   # the timed steps start where every phase runs
    timer.reset()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.step(it)
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    intervals = {p.name: p.interval for p in trainer.phases}
    per_step = {}
    for key, sec in timer.seconds.items():
        top = key.split(" / ")[0]
        runs = timer.calls.get(top, 0) if intervals.get(top, 1) > 1 else steps
        per_step[key] = sec / max(runs, 1) / intervals.get(top, 1)
    untimed = (wall if clock == "wall" else cpu) - sum(timer.seconds.values())
    per_step["(untimed)"] = untimed / steps
    step_sec = sum(per_step.values())
    return {"cfg": cli["cfg"], "q_dim": trainer.G.q_dim, "batch": flat["batch"], "precision": flat["precision"],
            "train_blocks": trainer.train_blocks, "device": str(trainer.device), "threads": torch.get_num_threads(),
            "steps": steps, "wall_sec_per_step": wall / steps, "cpu_sec_per_step": cpu / steps,
            "clock": clock, "step_sec": step_sec, "load_average": os.getloadavg()[0],
            "sec_per_kimg": step_sec / flat["batch"] * 1000, "sections_sec": per_step, "code": CODE,
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}


def profile_table(result: dict) -> str:
    total = result["step_sec"]
    lines = ["| section | ms / step | share |", "| --- | ---: | ---: |"]
    for name, sec in sorted(result["sections_sec"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {1000 * sec:.1f} | {100 * sec / total:.1f}% |")
    lines.append(f"| **amortised step** | **{1000 * total:.1f}** | 100% |")
    return "\n".join(lines)


def run_child(code: str, cli: dict, steps: int, warmup: int, threads, clock: str) -> dict:
    """``measure`` in a fresh process with the code of checkout ``code``."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        args = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(dict(cli=cli, steps=steps, warmup=warmup,
                                                                                   threads=threads, clock=clock, out=out.name))]
        env = dict(os.environ, QC_BENCH_CODE=code, PYTHONPATH=code)
        subprocess.run(args, check=True, env=env)
        return json.load(out)            # the child wrote the file this handle has open


@click.command()
@click.option("--cfg", default="smoke", show_default=True, help="Preset name")
@click.option("--res", type=int, default=16, show_default=True, help="Resolution of the generated dataset")
@click.option("--precision", default="auto", show_default=True, help="Comma-separated: auto,fp32,bf16,fp16")
@click.option("--batch", type=int, default=None, help="Override the preset's batch")
@click.option("--q-dim", default=None, help="Comma-separated q_dim values; 0 = plain StyleGAN2-ADA [default: preset]")
@click.option("--train-blocks", default=None, help="As train.py [default: train.py's (3 for the QC fine-tune)]")
@click.option("--steps", type=int, default=4, show_default=True, help="Timed steps, from step 0 (all phases run there)")
@click.option("--warmup", type=int, default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
@click.option("--profile", is_flag=True, help="Print the per-section table of each run")
@click.option("--baseline", default=None, metavar="DIR", help="Also time the runs with the code of this checkout")
@click.option("--rounds", type=int, default=1, show_default=True, help="Repeat baseline/current alternation")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="cpu: the process's CPU seconds (all threads), steadier on a shared machine")
@click.option("--json", "json_path", default=None, metavar="FILE", help="Write all results as JSON")
@click.option("--_child", "child", default=None, hidden=True)
def main(cfg, res, precision, batch, q_dim, train_blocks, steps, warmup, device, threads, profile, baseline,
         rounds, clock, json_path, child):
    if child:
        job = json.loads(child)
        if job["threads"]:
            torch.set_num_threads(job["threads"])
        with tempfile.TemporaryDirectory() as root:
            result = measure(job["cli"], job["steps"], job["warmup"], root, job["clock"])
        with open(job["out"], "w") as f:
            json.dump(result, f)
        return
    results = []
    with tempfile.TemporaryDirectory() as root:
        data = make_dataset(root, res)
        codes = ([("baseline", os.path.abspath(baseline))] if baseline else []) + [("current", ROOT)]
        for qd in (q_dim.split(",") if q_dim else [None]):
            for prec in precision.split(","):
                # 'auto' is decided here, once, so that older code (no 'auto') times the same thing.
                from torch_utils.misc import resolve_device, resolve_precision
                prec = resolve_precision(prec, resolve_device(device))["precision"]
                cli = dict(data=data, cfg=cfg, precision=prec, device=device, workers=0)
                if batch:
                    cli["batch"] = batch
                if qd is not None:
                    cli["q_dim"] = int(qd)
                if train_blocks:
                    cli["train_blocks"] = train_blocks
                for rnd in range(rounds):
                    order = codes if rnd % 2 == 0 else codes[::-1]
                    for label, code in order:
                        r = run_child(code, cli, steps, warmup, threads, clock)
                        r["label"], r["round"] = label, rnd
                        results.append(r)
                        print(f"[{label}] cfg={cfg} res={res} q_dim={r['q_dim']} batch={r['batch']} "
                              f"precision={r['precision']} train_blocks={r['train_blocks']} device={r['device']} "
                              f"({r['cpu_capability']}, {r['threads']} threads, load {r['load_average']:.1f}): "
                              f"{r['sec_per_kimg']:.1f} {clock}-sec/kimg (amortised step {r['step_sec']:.2f} s; "
                              f"{r['wall_sec_per_step']:.2f} wall-s and {r['cpu_sec_per_step']:.2f} cpu-s per step "
                              f"over {steps} steps)", flush=True)
                        if profile:
                            print(profile_table(r), flush=True)
    if baseline:
        print(f"\nsummary (best of rounds, {clock}-sec/kimg):")
        keys = sorted({(r["q_dim"], r["precision"]) for r in results})
        for qd, prec in keys:
            best = {lab: min(r["sec_per_kimg"] for r in results if r["label"] == lab and r["q_dim"] == qd
                             and r["precision"] == prec) for lab, _ in codes}
            print(f"  q_dim={qd} {prec}: baseline {best['baseline']:.1f}, current {best['current']:.1f}, "
                  f"speed-up {best['baseline'] / best['current']:.2f}x")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
