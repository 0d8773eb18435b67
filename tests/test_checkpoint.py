"""Checkpoint loading: the restricted unpickler, our format, teacher state_dicts, widening."""
import io
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import assert_close_scaled, shared_path
from dnnlib.util import UserError
from torch_utils.safe_pickle import load_pickle
from training.checkpoint import (infer_generator_kwargs, load_network, save_checkpoint,
                                 WIDEN_RESIDUAL_GAIN, widen_generator)
from training.networks import Generator


def _tiny_generator(q_dim=0, c_dim=0, arch="skip"):
    torch.manual_seed(1)
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=3, q_dim=q_dim,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture=arch,
                                           conv_clamp=256, num_fp16_res=4)).eval()


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("open('/tmp/qc_pwned_eval', 'w').write('x')",))


@pytest.mark.parametrize("payload,global_name", [
    (lambda marker: {"G": _Evil(f"touch {marker}")}, "system"),
    (lambda marker: {"G": _EvalEvil()}, "builtins.eval"),
])
def test_malicious_pickle_refused_and_nothing_runs(tmp_path, payload, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(UserError) as info:
        load_network(str(path))
    assert global_name in str(info.value) and "allow-list" in str(info.value)
    assert not marker.exists() and not os.path.exists("/tmp/qc_pwned_eval")


def test_persistent_record_source_is_never_executed(tmp_path, monkeypatch):
    """Re-pickle the fixture with a module_src that would create a file if executed."""
    import sys
    import types
    from torch_utils.safe_pickle import ModuleRecord
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('x')\n"
    records = load_pickle(shared_path("fixtures", "qc_stylegan", "network.pkl"))

    fake = types.ModuleType("torch_utils.persistence")     # only so that pickle can name the hook
    def _reconstruct_persistent_obj(meta):                  # noqa: E306
        raise AssertionError("never called while dumping")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, ModuleRecord):
                meta = dict(type="class", version=6, module_src=src, class_name=obj.class_name, state=obj.state)
                return _reconstruct_persistent_obj, (meta,)
            return NotImplemented

    buf = io.BytesIO()
    Pickler(buf).dump(records)
    path = tmp_path / "with_src.pkl"
    path.write_bytes(buf.getvalue())
    assert src.encode() in buf.getvalue()
    nets = load_network(str(path))
    e = torch.load(shared_path("fixtures", "qc_stylegan", "expected.pt"), weights_only=True)
    assert_close_scaled(nets["G"].synthesis(e["ws"], q=e["q"]), e["img_degraded"])   # conftest: across CPU kernels
    assert not marker.exists()


def test_numpy1_scalar_spelling_is_accepted():
    blob = pickle.dumps(np.float64(0.25), protocol=3)    # GLOBAL opcodes name modules as text
    new_name = b"numpy._core.multiarray\n"
    blob = blob.replace(new_name, b"numpy.core.multiarray\n")  # the numpy 1.x spelling users have
    assert b"numpy.core.multiarray" in blob and new_name not in blob
    assert load_pickle(io.BytesIO(blob)) == 0.25


@pytest.mark.parametrize("cut", [10, 1000, 100000])
def test_truncated_pickle_gives_clear_error(tmp_path, cut):
    data = open(shared_path("fixtures", "stylegan2_ada", "network.pkl"), "rb").read()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:cut])
    with pytest.raises(UserError, match="corrupt|truncated"):
        load_network(str(path))


@pytest.mark.parametrize("content", [b"", b"hello world, not a network", b"PK\x03\x04garbage"])
def test_garbage_files_give_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError):
        load_network(str(path))


def test_wrong_kind_of_torch_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save({"optimizer": {"lr": 0.1}}, path)
    with pytest.raises(UserError, match="not a network file"):
        load_network(str(path))


def test_missing_file():
    with pytest.raises(UserError, match="not found"):
        load_network("/nonexistent/network.pkl")


def test_our_format_round_trip_with_weights_only(tmp_path):
    G = _tiny_generator(q_dim=4)
    path = tmp_path / "ck.pt"
    state = {"cur_nimg": 1234, "rng": torch.get_rng_state(), "opt": {"step": torch.tensor(3.0)}}
    save_checkpoint(str(path), {"G": G, "G_ema": G}, training_state=state, metadata={"note": "x"})
    raw = torch.load(path, weights_only=True)       # readable without unpickling code
    assert raw["format"] == "qc-stylegan-checkpoint" and raw["version"] == 1
    nets = load_network(str(path))
    z, q = torch.randn(2, 8), torch.randn(2, 4)
    torch.testing.assert_close(nets["G_ema"](z, q=q), G(z, q=q), rtol=0, atol=0)
    assert nets["training_state"]["cur_nimg"] == 1234 and nets["metadata"]["note"] == "x"
    assert not any(f.endswith(".tmp") for f in os.listdir(tmp_path))   # atomic write left nothing


def test_newer_format_version_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": "qc-stylegan-checkpoint", "version": 99, "networks": {}}, path)
    with pytest.raises(UserError, match="newer"):
        load_network(str(path))


@pytest.mark.parametrize("q_dim,arch,c_dim", [(0, "skip", 0), (4, "skip", 0), (0, "resnet", 3), (0, "orig", 0)])
def test_teacher_state_dict_architecture_inferred(tmp_path, q_dim, arch, c_dim):
    G = _tiny_generator(q_dim=q_dim, c_dim=c_dim, arch=arch)
    kwargs = infer_generator_kwargs(G.state_dict())
    assert kwargs["q_dim"] == q_dim and kwargs["synthesis_kwargs"]["architecture"] == arch
    assert kwargs["synthesis_kwargs"]["channel_base"] == 128 and kwargs["c_dim"] == c_dim
    path = tmp_path / "G_teacher_test.pth.tar"
    torch.save(G.state_dict(), path)
    nets = load_network(str(path))
    z = torch.randn(2, 8)
    c = torch.eye(c_dim)[:2] if c_dim else None
    torch.testing.assert_close(nets["G"](z, c), G(z, c), rtol=0, atol=0)


def test_widen_stock_generator_renders_stock_image_at_q0():
    G = _tiny_generator(q_dim=0)
    G_qc = widen_generator(G, q_dim=4)
    b16 = G_qc.synthesis.b16
    assert G_qc.q_dim == 4 and b16.conv1.weight.shape[0] == b16.out_channels + 4 * 16
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(G_qc(z), G(z), rtol=0, atol=0)
        torch.testing.assert_close(G_qc(z, q=torch.zeros(3, 4)), G(z), rtol=1e-6, atol=1e-6)
        assert (G_qc(z, q=torch.randn(3, 4)) - G(z)).abs().max() > 1e-4
    # The fresh residual starts small (WIDEN_RESIDUAL_GAIN): the last convq layer is the scaled copy
    # of what the same seed gives at gain 1; the layers before it are untouched.
    full = widen_generator(G, q_dim=4, residual_gain=1.0)
    torch.testing.assert_close(b16.convq[-1].weight, full.synthesis.b16.convq[-1].weight * WIDEN_RESIDUAL_GAIN)
    torch.testing.assert_close(b16.convq[0].weight, full.synthesis.b16.convq[0].weight, rtol=0, atol=0)


def test_widen_official_pickle_generator():
    G = load_network(shared_path("fixtures", "stylegan2_ada", "network.pkl"))["G_ema"]
    G_qc = widen_generator(G, q_dim=16)
    z, c = torch.randn(2, 64), torch.eye(4)[:2]
    with torch.no_grad():
        torch.testing.assert_close(G_qc(z, c), G(z, c), rtol=0, atol=0)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    G = _tiny_generator()
    state = G.state_dict()
    state["synthesis.b8.conv0.weight"] = torch.zeros(16, 16, 5, 5)
    path = tmp_path / "bad_teacher.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        load_network(str(path))
    msg = str(info.value)
    assert "synthesis.b8.conv0.weight" in msg and "(16, 16, 5, 5)" in msg and "(16, 16, 3, 3)" in msg


def test_convert_network_cli(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    src = shared_path("fixtures", "stylegan2_ada", "network.pkl")
    dst = tmp_path / "converted.pt"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "convert_network.py"), src, str(dst),
                          "--widen-q-dim", "8"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    raw = torch.load(dst, weights_only=True)
    assert set(raw["networks"]) == {"G", "G_ema", "D"} and raw["metadata"]["source"] == "official-pickle"
    nets = load_network(str(dst))
    ref = load_network(src)["G_ema"]
    assert nets["G_ema"].q_dim == 8
    z, c = torch.randn(2, 64), torch.eye(4)[:2]
    torch.testing.assert_close(nets["G_ema"](z, c), ref(z, c), rtol=0, atol=0)


def test_convert_network_only_keeps_the_named_networks(tmp_path):
    from training.checkpoint import convert_network
    src = shared_path("fixtures", "qc_stylegan", "network.pkl")
    dst = tmp_path / "release.pt"
    assert convert_network(src, str(dst), only=["G_ema"], metadata={"kimg": "12"}) == {"G_ema": "Generator"}
    raw = torch.load(dst, weights_only=True)
    assert set(raw["networks"]) == {"G_ema"} and raw["training_state"] is None
    assert raw["metadata"]["kimg"] == "12"
    z = torch.randn(1, 64)
    torch.testing.assert_close(load_network(str(dst))["G_ema"](z, None), load_network(src)["G_ema"](z, None),
                               rtol=0, atol=0)
    with pytest.raises(UserError, match="has no G_teacher"):
        convert_network(src, str(tmp_path / "x.pt"), only=["G_teacher"])


def test_atomic_write_gives_umask_mode(tmp_path):
    from dnnlib.util import atomic_write
    old = os.umask(0o022)
    try:
        with atomic_write(str(tmp_path / "f.txt"), "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "f.txt").st_mode & 0o777) == 0o644
