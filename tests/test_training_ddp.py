"""2 ranks with gloo on CPU via torchrun: gradients all-reduced, parameters identical afterwards."""
import os
import subprocess
import sys

import torch

from training import checkpoint as ckpt

from _training_data import make_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_ranks_gloo_keep_identical_parameters(tmp_path):
    """torchrun with 2 CPU processes, 3 steps: both ranks end with the same G, D, D_degraded, G_ema."""
    blobs = make_blobs(tmp_path / "data")
    script = tmp_path / "ranks.py"
    script.write_text(f"""
import os, sys, torch
sys.path.insert(0, {ROOT!r})
torch.set_num_threads(1)
from torch_utils import distributed as dist
from training.launch import resolve_options
from training.training_loop import training_loop
dist.init_from_env('cpu')
opts = resolve_options(dict(data={blobs.data!r}, cfg='smoke', resume={blobs.stock!r}, workers=0, device='cpu',
                            kimg=0.024, tick_kimg=0.024, snap=0, gpus=2))
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
