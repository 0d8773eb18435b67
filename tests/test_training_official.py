"""Training from the official files in ../shared/fixtures: a StyleGAN2-ADA pickle (stock ->
QC, becomes the teacher, D from the file, D_degraded a copy), and an official QC-StyleGAN pickle
with a G_teacher-style state_dict as --teacher."""
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch

from training import checkpoint as ckpt
from training.dataset import convert_dataset
from training.launch import resolve_options
from training.training_loop import training_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(os.path.dirname(ROOT), "shared", "fixtures")
pytestmark = pytest.mark.skipif(not os.path.isdir(FIX), reason="../shared/fixtures absent")




def _data32(root, labels):
    rng = np.random.RandomState(1)
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    for i in range(8):
        PIL.Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(os.path.join(root, "src", f"{i}.png"))
    if labels:
        with open(os.path.join(root, "src", "dataset.json"), "w") as f:
            json.dump({"labels": [[f"{i}.png", i % 4] for i in range(8)]}, f)
    path = os.path.join(root, "d32.zip")
    convert_dataset(os.path.join(root, "src"), path, progress=False)
    return path


def _opts(**kw):
    cli = dict(cfg="smoke", workers=0, device="cpu", batch=4, mbstd_group=4, kimg=0.008, tick_kimg=0.008, snap=1,
               precision="fp32")   # fp32 pinned: "auto" follows the CPU (bf16 on AMX)
    cli.update(kw)
    return resolve_options(cli)


def test_resume_stock_stylegan2_ada_pickle(tmp_path):
    data = _data32(str(tmp_path), labels=True)
    out = training_loop(str(tmp_path / "run"), _opts(data=data, cond=True, q_dim=16,
                                                    resume=os.path.join(FIX, "stylegan2_ada", "network.pkl")))
    t = out["trainer"]
    assert t.G.q_dim == 16 and t.teacher.q_dim == 0 and t.train_blocks == 3
    weights = torch.load(os.path.join(FIX, "stylegan2_ada", "weights.pt"), weights_only=True)
    # The teacher is the stock generator, untouched; the frozen mapping network equals it too.
    torch.testing.assert_close(t.teacher.state_dict()["synthesis.b32.conv1.weight"],
                               weights["G"]["synthesis.b32.conv1.weight"])
    torch.testing.assert_close(t.G.state_dict()["mapping.fc0.weight"], weights["G"]["mapping.fc0.weight"])
    # D_degraded started as a copy of the stock D and then trained apart from D.
    assert not torch.equal(t.D.state_dict()["b32.conv0.weight"], weights["D"]["b32.conv0.weight"])
    assert not torch.equal(t.D.state_dict()["b32.conv0.weight"], t.D_degraded.state_dict()["b32.conv0.weight"])
    saved = ckpt.load_network(out["snapshot"])
    assert {"G", "G_ema", "D", "D_degraded", "G_teacher"} <= set(saved)


def test_official_qc_pickle_with_teacher_state_dict(tmp_path):
    data = _data32(str(tmp_path), labels=False)
    weights = torch.load(os.path.join(FIX, "stylegan2_ada", "weights.pt"), weights_only=True)
    teacher_file = str(tmp_path / "G_teacher_test.pth.tar")
    torch.save(weights["G"], teacher_file)          # the official teacher files are bare state_dicts
    out = training_loop(str(tmp_path / "run"), _opts(data=data, resume=os.path.join(FIX, "qc_stylegan", "network.pkl"),
                                                    teacher=teacher_file, q_dim=16, train_blocks="all"))
    t = out["trainer"]
    assert t.G.q_dim == 16 and t.teacher is not None and t.train_blocks == "all"
    assert out["kimg"] == 0.008 and os.path.isfile(out["snapshot"])
