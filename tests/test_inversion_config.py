"""The one inversion config (``inversion.config``) and its shared CLI options
(``inversion.cli_options``): defaults in one place, presets, override beats preset, one-line
validation errors, and the same options with the same defaults in every CLI that inverts."""
import dataclasses

import click
import pytest
from click.testing import CliRunner

from dnnlib.util import UserError
from inversion.cli_options import SETTINGS, inversion_options
from inversion.config import FIELDS, OFFICIAL, PRESETS, InversionConfig, resolve_config, split_overrides
from inversion.pti import PTIOptions

import demo
import edit
import invert
import restore

# The official QC-StyleGAN restoration PTI (issue 30's facts), as this project's settings.
OFFICIAL_EXPECTED = dict(w_steps=None, pti_steps=500, pti_lr=3e-4, lpips_threshold=0.002, perceptual="lpips",
                         l2_weight=1.0, perceptual_weight=1.0, degrad_weight=1000.0, locality_weight=0.0,
                         tune_blocks=None)
INVERTING_COMMANDS = {"invert.py run": invert.main.commands["run"], "restore.py": restore.main,
                      "edit.py edit": edit.cli.commands["edit"]}


def test_ours_is_the_defaults_and_pti_options_is_the_same_class():
    assert resolve_config("ours") == InversionConfig()
    assert PTIOptions is InversionConfig
    c = InversionConfig()
    assert (c.pti_steps, c.pti_lr, c.lpips_threshold, c.degrad_weight, c.w_lr, c.q_lr) == (350, 3e-4, 0.0, 1000.0,
                                                                                         5e-3, 3e-2)


def test_official_preset_resolves_to_the_official_settings():
    c = resolve_config("official")
    for name, value in OFFICIAL_EXPECTED.items():
        assert getattr(c, name) == value, name
    assert c.stage1_steps(with_encoder=True) == 0          # no stage-1 optimisation with an encoder
    assert set(OFFICIAL) <= set(FIELDS)


def test_override_beats_preset_and_none_means_unset():
    c = resolve_config("official", pti_steps=20, lpips_threshold=None, batch_size=2)
    assert c.pti_steps == 20 and c.lpips_threshold == 0.002 and c.batch_size == 2
    assert resolve_config("ours", base=InversionConfig(pti_lr=1e-3)).pti_lr == 1e-3


@pytest.mark.parametrize("changes, flag", [
    (dict(pti_lr=0.0), "--pti-lr"), (dict(pti_steps=-1), "--pti-steps"), (dict(w_steps=1.5), "--w-steps"),
    (dict(batch_size=0), "--batch"), (dict(tune_blocks=0), "--tune-blocks"), (dict(perceptual="vgg"), "--perceptual"),
    (dict(lr_rampup=2.0), "--lr-rampup"), (dict(degrad_weight=-1.0), "--degrad-weight"),
])
def test_validation_errors_are_one_line_naming_the_option(changes, flag):
    with pytest.raises(UserError) as exc:
        InversionConfig(**changes)
    assert str(exc.value).startswith(flag) and "\n" not in str(exc.value)


def test_unknown_setting_and_preset_are_clear():
    with pytest.raises(UserError, match="unknown inversion setting.*pti_step"):
        InversionConfig().replace(pti_step=3)
    with pytest.raises(UserError, match="unknown inversion preset 'paper'"):
        resolve_config("paper")
    with pytest.raises(UserError, match="delta encoding"):
        InversionConfig(delta_encoding="lowrank:0")


def test_config_is_frozen_and_helpers():
    c = InversionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pti_steps = 3
    assert c.stage1_steps(True) == 0 and c.stage1_steps(False) == 300
    assert c.batch_for("cpu") == 8 and c.replace(batch_size=3).batch_for("cpu") == 3
    inv, rest = split_overrides({"pti_steps": 1, "gt": "x"})
    assert inv == {"pti_steps": 1} and rest == {"gt": "x"}
    assert list(c.record()) == list(FIELDS)


def test_app_options_replace_own_fields_and_inversion_settings():
    """Every application's options (AppOptions) change the same way: own fields and inversion
    settings by name, validated; the original is left as it was."""
    from apps.editing import EditOptions
    from apps.invert_folder import InvertOptions
    from apps.restore import RestoreOptions
    base = RestoreOptions(gt="clean/")
    opts = base.replace(pti_steps=2, compare=True)
    assert (opts.inversion.pti_steps, opts.compare, opts.gt) == (2, True, "clean/")
    assert base.inversion == InversionConfig() and base.compare is False
    assert InvertOptions().replace(batch_size=3).inversion.batch_size == 3
    assert EditOptions(direction=None, strengths=[1.0]).replace(mode="set-distance").mode == "set-distance"
    with pytest.raises(UserError, match="--pti-steps"):
        base.replace(pti_steps=-1)


def _inversion_params(command: click.Command) -> dict:
    names = set(SETTINGS) | {"preset"}
    return {p.name: (tuple(p.opts), p.default, str(p.type), p.is_flag if isinstance(p, click.Option) else None,
                     p.help) for p in command.params if p.name in names}


def test_the_three_clis_expose_the_same_inversion_options_with_the_same_defaults():
    params = {name: _inversion_params(cmd) for name, cmd in INVERTING_COMMANDS.items()}
    first = params["invert.py run"]
    assert set(first) == set(SETTINGS) | {"preset"}
    for name, p in params.items():
        assert p == first, name
    assert first["preset"][1] == "ours"
    assert all(v[1] is None for k, v in first.items() if k != "preset")     # unset: the preset decides
    assert "official: 500" in first["pti_steps"][4] and "350" in first["pti_steps"][4]
    # demo.py: the same options, only its default preset differs.
    d = _inversion_params(demo.main)
    assert {k: v for k, v in d.items() if k != "preset"} == {k: v for k, v in first.items() if k != "preset"}
    assert d["preset"][1] == "demo" and "demo" in PRESETS


def test_decorator_hands_over_one_config():
    got = {}

    @click.command()
    @inversion_options
    def cmd(inversion):
        got["c"] = inversion

    r = CliRunner().invoke(cmd, ["--preset", "official", "--pti-steps", "7", "--w-plus", "--delta", "lowrank:4"])
    assert r.exit_code == 0, r.output
    assert got["c"] == resolve_config("official", pti_steps=7, w_plus=True, delta_encoding="lowrank:4")
    r = CliRunner().invoke(cmd, [])
    assert r.exit_code == 0 and got["c"] == InversionConfig()


def test_bad_option_is_a_one_line_error_with_exit_1(tmp_path):
    r = CliRunner().invoke(invert.main, ["run", "--input", str(tmp_path), "--outdir", str(tmp_path / "o"),
                                         "--pti-lr", "-1"])
    assert r.exit_code == 1 and "error: --pti-lr must be > 0, got -1.0" in r.output
