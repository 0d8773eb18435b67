"""training.options: the typed option groups, their rules, defaults written once, presets and the
flat form of training_options.json and snapshots (old files still load and start runs)."""
import contextlib
import dataclasses
import inspect
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from dnnlib.util import UserError
from training import options as topts
from training.augment import AdaController, AugmentPipe
from training.launch import launch, resolve_options, run_description
from training.loss import QCLoss, phase_table
from training.options import (AugmentOptions, ComputeOptions, DataOptions, GeneratorOptions, LossOptions,
                              RunOptions, ScheduleOptions, TrainingOptions)
from training.training_loop import Trainer, training_loop

from conftest import shared_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained")
# Keys a flat preset held before presets named only their changes (every configs/*.json had all).
OLD_PRESET_KEYS = ("z_dim", "w_dim", "channel_max", "conv_clamp", "num_fp16_res", "tick_kimg", "snap", "aug",
                   "augpipe", "target", "ada_interval", "ada_kimg", "q_dim", "kd_weight", "pl_weight",
                   "pl_batch_shrink", "pl_decay", "style_mixing", "r1_interval", "pl_interval", "train_blocks",
                   "kimg", "batch", "mbstd_group", "channel_base", "lr", "gamma", "ema_kimg", "ema_rampup", "map")
# Options the first training_options.json files lacked (added since; the defaults fill them).
LATER_KEYS = ("init", "inception", "degraded_reals", "precision_info", "auto_resume")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eight 16x16 RGB images in a folder: enough for options, a step of the smoke preset."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.RandomState(0)
    for i in range(8):
        PIL.Image.fromarray(rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return str(root)


def _cli(folder, **kw):
    cli = dict(data=folder, cfg="smoke", q_dim=0, device="cpu", precision="fp32", workers=0)
    cli.update(kw)
    return cli


def _flat(**changes):
    """A valid flat dict (the smoke preset on some data) with ``changes``."""
    values = {**topts.default_flat(), **topts.load_preset("smoke").values, "data": "x.zip", "q_dim": 0}
    values.update(changes)
    return values


# ---------------------------------------------------------------------------------------------
# Each group checks its own values, with the messages train.py has always given.

@pytest.mark.parametrize("group, values, message", [
    (AugmentOptions, dict(aug="sometimes"), "--aug must be ada, noaug or fixed, got sometimes"),
    (ScheduleOptions, dict(kimg=0), "--kimg must be positive"),
    (GeneratorOptions, dict(q_dim=-1), "--q-dim must be >= 0"),
    (GeneratorOptions, dict(train_blocks="top"), "--train-blocks must be 'all', 'degrad' or a number, got top"),
    (GeneratorOptions, dict(train_blocks="degrad", q_dim=0), "--train-blocks degrad trains the DegradBlocks"),
    (DataOptions, dict(path=None), "--data is required"),
    (ComputeOptions, dict(gpus=0), "--gpus must be >= 1, got 0"),
    (RunOptions, dict(metrics="fid50k_full"), "metrics must be a list of metric names"),
])
def test_each_group_checks_its_values(group, values, message):
    with pytest.raises(UserError, match=re.escape(message)):
        group(**values)
    flat = {flat: values[name] for flat, name in group.flat_fields() if name in values}
    with pytest.raises(UserError, match=re.escape(message)):
        TrainingOptions.from_flat(_flat(**flat))          # the same rule when all options are built


@pytest.mark.parametrize("changes, message", [
    (dict(batch=6, gpus=4), "--batch 6 must be a positive multiple of --gpus 4"),
    (dict(batch=None), "--batch None must be a positive multiple of --gpus 1"),
    (dict(degraded_reals=True, q_dim=16), "--degraded-reals is for plain runs"),
    (dict(gamma_typo=1.0), "unknown training option.s.: gamma_typo"),
])
def test_rules_across_groups_and_unknown_names(changes, message):
    with pytest.raises(UserError, match=message):
        TrainingOptions.from_flat(_flat(**changes))


def test_values_are_normalised_once():
    assert GeneratorOptions(train_blocks="3").train_blocks == 3          # the command line gives a string
    assert GeneratorOptions(train_blocks="degrad").train_blocks == "degrad"
    assert RunOptions(metrics=["swd2k"]).metrics == ("swd2k",)
    opts = TrainingOptions.from_flat(_flat(train_blocks=None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.schedule.batch = 3                                           # changes go through replace()
    assert opts.replace(batch=4).schedule.batch == 4 and opts.schedule.batch == 8
    with pytest.raises(UserError, match="--kimg must be positive"):
        opts.replace(kimg=-1)                                             # a change is checked too


# ---------------------------------------------------------------------------------------------
# Defaults: written once, in the groups' fields.

def test_every_option_has_one_flat_name_in_one_group():
    names = [flat for _group, cls in topts.GROUPS for flat, _field in cls.flat_fields()]
    assert len(names) == len(set(names)) == len(topts.OPTIONS)
    assert set(topts.default_flat()) == set(topts.OPTIONS)


@pytest.mark.parametrize("name", topts.list_presets())
def test_presets_name_only_what_they_change(name):
    """A value a preset repeats from the defaults would be a second place for that default."""
    preset = topts.load_preset(name)
    defaults = topts.default_flat()
    repeated = {k: v for k, v in preset.values.items() if v == defaults[k]}
    assert not repeated, f"configs/{name}.json repeats defaults: {repeated}"
    assert preset.name == name and preset.description


def test_building_blocks_take_their_defaults_from_the_groups():
    """QCLoss, the phase table and ADA default to the groups' values (no second copy to drift)."""
    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    loss, aug = LossOptions(), AugmentOptions()
    qc = defaults(QCLoss.__init__)
    assert (qc["r1_gamma"], qc["style_mixing"], qc["pl_weight"], qc["pl_batch_shrink"], qc["pl_decay"],
            qc["kd_weight"]) == (loss.gamma, loss.style_mixing, loss.pl_weight, loss.pl_batch_shrink,
                                 loss.pl_decay, loss.kd_weight)
    table = defaults(phase_table)
    assert (table["r1_interval"], table["pl_interval"]) == (loss.r1_interval, loss.pl_interval)
    ada = defaults(AdaController.__init__)
    assert (ada["target"], ada["interval"], ada["speed_kimg"]) == (aug.target, aug.ada_interval, aug.ada_kimg)
    assert defaults(AugmentPipe.__init__)["spec"] == aug.augpipe


def test_train_py_help_shows_the_groups_defaults():
    from click.testing import CliRunner
    import train
    text = " ".join(CliRunner().invoke(train.main, ["--help"]).output.split())
    for flag, name in (("--seed", "seed"), ("--workers", "workers"), ("--p", "aug_p"), ("--target", "target"),
                       ("--augpipe", "augpipe"), ("--mirror", "mirror"), ("--q-dim", "q_dim"),
                       ("--kd-weight", "kd_weight"), ("--gpus", "gpus"), ("--device", "device")):
        start = text.index("[default: ", text.index(flag + " "))
        shown = text[start:text.index("]", start)]
        assert topts.default_text(name) in shown, (flag, shown)
    assert f"[default:{topts.FINE_TUNE_BLOCKS}whenfine-tuning" in text.replace(" ", "")   # wrapped at '-'


def test_options_module_imports_without_torch():
    """train.py reads its help defaults from training.options: --help must not import torch."""
    code = "import sys, training.options; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


# ---------------------------------------------------------------------------------------------
# Presets and the command line: defaults < preset < command line.

def test_command_line_beats_preset_beats_defaults(folder):
    opts = resolve_options(_cli(folder, batch=4))
    assert opts.schedule.batch == 4                      # command line over smoke's 8
    assert opts.loss.gamma == 0.1                        # smoke's, over the default 10
    assert opts.loss.kd_weight == LossOptions.kd_weight  # smoke names none: the default
    auto = resolve_options(_cli(folder, cfg="auto", lr=0.001))
    assert auto.schedule.lr == 0.001                     # command line over auto's computed 0.0025
    assert auto.schedule.batch == topts.auto_values(16, 1)["batch"] and auto.generator.map == 2
    assert resolve_options(_cli(folder, cfg="stylegan2")).to_flat() == resolve_options(
        _cli(folder, cfg="church256")).replace(cfg="stylegan2").to_flat()      # both are config F


def test_old_full_preset_file_still_works(folder, tmp_path):
    """A user's --cfg file in the old form (every option named, as configs/ had them) gives the
    options of the preset it copies; unknown names and broken files are one-line errors."""
    faces = topts.load_preset("faces64")
    old = dict(name="faces64", description="copied", **{k: faces.get(k) for k in OLD_PRESET_KEYS})
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(old))
    mine = resolve_options(_cli(folder, cfg=str(path))).to_flat()
    shipped = resolve_options(_cli(folder, cfg="faces64")).to_flat()
    assert mine.pop("cfg") == str(path) and shipped.pop("cfg") == "faces64"   # the folder name: as --cfg said
    assert mine == shipped
    path.write_text(json.dumps(dict(old, generator={"z_dim": 64})))
    with pytest.raises(UserError, match="unknown option.s. generator"):
        resolve_options(_cli(folder, cfg=str(path)))
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_options(_cli(folder, cfg=str(path)))


# ---------------------------------------------------------------------------------------------
# The flat form: training_options.json and snapshots, old ones included.

def test_flat_form_round_trips_and_dry_run_prints_groups(folder, tmp_path):
    opts = resolve_options(_cli(folder))
    assert TrainingOptions.from_flat(opts.to_flat()) == opts
    assert json.loads(json.dumps(opts.to_flat())) == opts.to_flat()       # plain JSON
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        launch(opts, str(tmp_path / "runs"), dry_run=True)
    text = buf.getvalue()
    grouped = json.loads(text[:text.rindex("run directory would be")])
    assert list(grouped) == [g for g, _cls in topts.GROUPS] and grouped["run"]["cfg"] == "smoke"
    assert grouped["data"]["path"] == folder and not os.path.exists(tmp_path / "runs")


def test_options_of_an_older_run_load_and_train(folder, tmp_path):
    """training_options.json of an older version (without the options added since) loads with the
    defaults for the rest, names the same run folder, and training_loop accepts the flat dict."""
    opts = resolve_options(_cli(folder, kimg=0.008, tick_kimg=0.008, snap=1))
    old = {k: v for k, v in opts.to_flat().items() if k not in LATER_KEYS}
    loaded = TrainingOptions.from_flat(old)
    assert run_description(loaded) == run_description(opts)
    assert loaded.replace(precision_info=opts.compute.precision_info) == opts
    out = training_loop(str(tmp_path / "run"), old)
    recorded = torch.load(out["snapshot"], weights_only=True)["metadata"]["training_options"]
    assert recorded == loaded.to_flat() and set(recorded) == set(opts.to_flat())   # every option, flat


@pytest.mark.parametrize("name", ["qc-faces64.pt", "qc-faces64-campaign.pt"])
def test_shipped_files_options_load_and_init_a_run(name, tmp_path):
    """The options recorded in the shipped files load as they are; each file starts a run with
    --init (the campaign's command, model card) and the run continues the file's state."""
    path = os.path.join(PRETRAINED, name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} not shipped")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    record = raw["metadata"]["training_options"]
    recorded = TrainingOptions.from_flat(record)
    assert recorded.to_flat() == record
    assert run_description(recorded) == "utkface64-faces64-gpus1-batch16-q16-kd0-ada0.6"
    data = shared_path("datasets", "utkface64-mini.zip")
    opts = resolve_options(dict(data=data, cfg="faces64", mirror=True, batch=16, device="cpu", precision="fp32",
                                workers=0, train_blocks="degrad", resume="latest", init=path,
                                teacher=os.path.join(PRETRAINED, "stylegan2-faces64.pt")))
    assert opts.run.resume == path and opts.run.auto_resume == "latest" and opts.loss.kd_weight == 0
    trainer = Trainer(str(tmp_path / "run"), opts)
    state = raw.get("training_state")
    assert trainer.cur_nimg == (int(state["cur_nimg"]) if state else 0)
    assert trainer.train_blocks == "degrad" and trainer.G.q_dim == 16
