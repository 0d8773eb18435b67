"""2 ranks with gloo on CPU via torchrun: gradients all-reduced, parameters identical afterwards."""
import os
import subprocess
import sys

import torch

from training import checkpoint as ckpt

from _training_data import make_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What every rank script starts with: this checkout first on sys.path, one thread, the gloo group.
RANK_PREAMBLE = f"""
import os, signal, sys, torch
sys.path.insert(0, {ROOT!r})
torch.set_num_threads(1)
from torch_utils import distributed as dist
from training.launch import launch, resolve_options, run_description
from training.training_loop import training_loop
dist.init_from_env('cpu')
"""


def test_two_ranks_gloo_keep_identical_parameters(tmp_path):
    """torchrun with 2 CPU processes, 3 steps: both ranks end with the same G, D, D_degraded, G_ema."""
    blobs = make_blobs(tmp_path / "data")
    script = tmp_path / "ranks.py"
    script.write_text(RANK_PREAMBLE + f"""
opts = resolve_options(dict(data={blobs.data!r}, cfg='smoke', resume={blobs.stock!r}, workers=0, device='cpu',
                            kimg=0.024, tick_kimg=0.024, snap=0, gpus=2, precision='fp32'))   # fp32: CPU-independent
out = training_loop({str(tmp_path / 'run')!r}, opts)
t = out['trainer']
flat = {{k: torch.cat([p.detach().flatten() for p in net.parameters()])
        for k, net in dict(G=t.G, D=t.D, Dd=t.D_degraded, G_ema=t.G_ema).items()}}
torch.save(flat, os.path.join({str(tmp_path)!r}, f'params{{dist.get_rank()}}.pt'))
dist.destroy()
""")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(29500 + os.getpid() % 1000), str(script)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "params0.pt"), torch.load(tmp_path / "params1.pt")
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    # And they trained: D moved away from the stock D both ranks started from.
    stock_d = torch.cat([p.flatten() for p in ckpt.load_network(blobs.stock)["D"].parameters()])
    assert not torch.equal(p0["D"], stock_d)


def test_two_ranks_stop_together_and_resume_bit_exact(tmp_path):
    """torchrun, 2 gloo ranks: (a) 6 steps uninterrupted; (b) the same run, rank 0 alone gets
    SIGTERM after the first tick: both ranks stop at the same (mid-tick) step with a snapshot;
    (c) ``--resume latest`` (launch) continues it. (c)'s final snapshot equals (a)'s bit for bit,
    networks and every rank's state (path-length means, ADA accumulator, w_avg, tick statistics),
    and the tick after the stop logs the same loss statistics as (a)."""
    blobs = make_blobs(tmp_path / "data")
    script = tmp_path / "resume.py"
    script.write_text(RANK_PREAMBLE + f"""
cli = dict(data={blobs.data!r}, cfg='smoke', init={blobs.stock!r}, resume='latest', workers=0, device='cpu',
           kimg=0.048, tick_kimg=0.016, snap=0, gpus=2, precision='fp32')   # fp32: CPU-independent
opts = resolve_options(cli)
a = training_loop({str(tmp_path / 'a')!r}, opts)
def stop_rank0(trainer):
    if dist.get_rank() == 0 and trainer.cur_tick == 1:
        os.kill(os.getpid(), signal.SIGTERM)
b_dir = os.path.join({str(tmp_path / 'b')!r}, '00000-' + run_description(opts))
b = training_loop(b_dir, resolve_options(cli), progress_fn=stop_rank0)
print(f"rank {{dist.get_rank()}} stopped={{b['stopped']}} kimg={{b['kimg']}}", flush=True)
launch(resolve_options(cli), {str(tmp_path / 'b')!r})
""")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(29500 + (os.getpid() + 7) % 1000), str(script)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # Rank 0 had the signal, rank 1 did not: both stopped after step 3 (0.024 kimg).
    assert "rank 0 stopped=SIGTERM kimg=0.024" in res.stdout
    assert "rank 1 stopped=a stop signal on rank 0 kimg=0.024" in res.stdout
    from test_training_resume import assert_same_snapshot
    from dnnlib.util import read_jsonl
    (run_b,) = [d for d in (tmp_path / "b").iterdir() if d.is_dir()]
    assert sorted(f.name for f in run_b.glob("network-snapshot-*.pt")) == [
        "network-snapshot-000000.024.pt", "network-snapshot-000000.048.pt"]
    state = torch.load(run_b / "network-snapshot-000000.024.pt", weights_only=True)["training_state"]
    assert state["world_size"] == 2 and state["ranks"][0]["stats"]            # mid-tick: partial statistics kept
    pl = [r["pl_mean"]["sharp"] for r in state["ranks"]]
    assert not torch.equal(pl[0], pl[1])                                        # really per rank
    assert_same_snapshot(tmp_path / "a" / "network-snapshot-000000.048.pt", run_b / "network-snapshot-000000.048.pt")
    stats_a = read_jsonl(str(tmp_path / "a" / "stats.jsonl"))
    stats_b = read_jsonl(str(run_b / "stats.jsonl"))
    assert [s["Progress/kimg"] for s in stats_b] == [s["Progress/kimg"] for s in stats_a] == [0.016, 0.032, 0.048]
    for sa, sb in zip(stats_a, stats_b):
        for key in (k for k in sa if k.startswith("Loss/")):
            assert sa[key] == sb[key], key
