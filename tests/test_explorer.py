"""The explorer (explore.py): HTTP endpoints against a server started in-process on port 0, the
library under them, and the CLI. Images are compared with generate.py's and restore.py's files
byte for byte: the explorer calls their library functions, it does not render on its own."""
import inspect
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, shared_path
from dnnlib import image_io
from explorer import jobs as jobs_module
from explorer.server import STATIC_DIR, make_server
from _explorer import PTI_STEPS, running_server
from explorer.session import Superseded, ViewParams, build_explorer, parse_view
from dnnlib.util import UserError
from training.generation import seed_to_q



def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _post(url, data):
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


def _png(server, kind, query):
    status, headers, body = _get(server.url + f"image/{kind}.png?{query}")
    assert status == 200, body
    assert headers["Content-Type"] == "image/png"
    return body


def _decode(png):
    import io
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)))


# ---------------------------------------------------------------------------------------------
# Acceptance: the endpoint's images are generate.py's, byte for byte.

@pytest.mark.parametrize("network", ["shipped", "official-pickle"])
def test_images_are_generate_py_byte_for_byte(tmp_path, network, server):
    net = None if network == "shipped" else shared_path("fixtures", "qc_stylegan", "network.pkl")
    srv = server if net is None else make_server(build_explorer(net, dtype="float32"), 0)
    if net is not None:
        srv.start_background()
    try:
        args = ["--network", net] if net else []
        res = _run("generate.py", *args, "--seeds", "7", "--trunc", "0.7", "--q-scale", "1.5", "--dtype", "float32",
                   "--outdir", str(tmp_path))
        assert res.returncode == 0, res.stderr
        sharp = (tmp_path / "seed0007.png").read_bytes()
        degraded = (tmp_path / "seed0007_degraded.png").read_bytes()
        assert _png(srv, "sharp", "src=seed:7&trunc=0.7&scale=0") == sharp             # q scale 0
        assert _png(srv, "sharp", "src=seed:7&trunc=0.7&scale=1.5&q_seed=3") == sharp   # q never changes it
        assert _png(srv, "degraded", "src=seed:7&trunc=0.7&scale=1.5") == degraded
        assert _png(srv, "degraded", "src=seed:7&trunc=0.7&scale=1") != degraded
    finally:
        if net is not None:
            srv.shutdown()
            srv.close()


def test_server_dtype_is_generate_py_dtype():
    import generate
    from explorer.session import Explorer
    option = {p.name: p for p in generate.main.params}["dtype"]
    sig = inspect.signature(Explorer.__init__).parameters["dtype"]
    import explore
    mine = {p.name: p for p in explore.main.params}["dtype"]
    assert mine.default == option.default == sig.default == "auto"
    assert list(mine.type.choices) == list(option.type.choices)


# ---------------------------------------------------------------------------------------------
# The views: q scale, dimensions, transfer, interpolation, edits.

def test_views_q_controls_transfer_and_edits(server):
    sharp = _png(server, "sharp", "src=seed:3")
    deg = _png(server, "degraded", "src=seed:3")
    assert deg != sharp
    # Eq. 10: scale 0 is the sharp image (within a grey level: the degraded head adds r2 = 0)
    zero = _decode(_png(server, "degraded", "src=seed:3&scale=0")).astype(int)
    assert np.abs(zero - _decode(sharp)).max() <= 1
    # one dimension moved: only the degraded image changes
    q = seed_to_q(3, 16)[0].copy()
    q[5] += 2.0
    moved = _png(server, "degraded", "src=seed:3&q=" + ",".join(f"{v:.6f}" for v in q))
    assert moved != deg
    # transfer (alpha 1) = rendering with the reference's q; alpha 0 = the image's own q
    assert _png(server, "degraded", "src=seed:3&ref=seed:5&alpha=1") == _png(server, "degraded", "src=seed:3&q_seed=5")
    assert _png(server, "degraded", "src=seed:3&ref=seed:5&alpha=0") == deg
    half = _png(server, "degraded", "src=seed:3&ref=seed:5&alpha=0.5")
    assert half not in (deg, _png(server, "degraded", "src=seed:3&q_seed=5"))
    # edit along the shipped gender boundary: the sharp image changes; strength 0 is no edit
    assert _png(server, "sharp", "src=seed:3&direction=gender&strength=3") != sharp
    assert _png(server, "sharp", "src=seed:3&direction=gender&strength=0") == sharp
    status, _, body = _get(server.url + "api/q?src=seed:3")
    assert status == 200 and np.allclose(json.loads(body)["q"], seed_to_q(3, 16)[0])


@pytest.mark.parametrize("query, needle", [
    ("src=seed:x", "integer seed"), ("src=seed:3&scale=abc", "scale must be a number"),
    ("src=seed:3&scale=inf", "scale must be in"), ("src=seed:3&q=1,2", "16 finite numbers"),
    ("src=seed:3&alpha=2&ref=seed:1", "alpha must be in"), ("src=upload:nope", "no restored upload"),
    ("src=seed:3&direction=smile&strength=1", "unknown direction"), ("src=file:/etc/passwd", "a source is"),
])
def test_bad_parameters_answer_400_with_a_message(server, query, needle):
    status, _, body = _get(server.url + "image/degraded.png?" + query)
    assert status == 400 and needle in json.loads(body)["error"]


def test_page_is_served_from_the_package_and_loads_nothing_from_outside(server):
    status, headers, html = _get(server.url)
    assert status == 200 and b"QC-StyleGAN explorer" in html
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in os.listdir(STATIC_DIR):
        status, _, body = _get(server.url + "static/" + name)
        assert status == 200
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", body), name      # no outside URL at all
    assert _get(server.url + "static/../session.py")[0] == 404
    assert _get(server.url + "nope")[0] == 404
    # a page elsewhere reaching us through DNS rebinding carries another Host header
    assert _get(server.url + "api/info", {"Host": "evil.example:80"})[0] == 403
    assert server.server_address[0] == "127.0.0.1"


def test_latest_wins_a_superseded_render_is_dropped():
    ex = build_explorer(dtype="float32")
    view = ViewParams(src="seed:11", scale=0.7)
    older, newer = ex.ticket("degraded"), ex.ticket("degraded")
    with pytest.raises(Superseded):
        ex.image_png(view, "degraded", slot="degraded", ticket=older)
    assert ex.image_png(view, "degraded", slot="degraded", ticket=newer)[:4] == b"\x89PNG"
    assert ex.image_png(view, "degraded")[:4] == b"\x89PNG"                 # scripts: no slot, never dropped
    with pytest.raises(UserError):
        parse_view({"trunc": "nan"}, 16)


def test_render_is_fast_on_the_cpu(server):
    import time
    _png(server, "degraded", "src=seed:100")                                # warm up
    times = []
    for s in range(101, 106):
        t0 = time.perf_counter()
        _png(server, "degraded", f"src=seed:{s}&scale=1.3")
        times.append(time.perf_counter() - t0)
    # 64 x 64 pair, one thread: ~0.1 s on the 2-core AMD EPYC with other jobs on it
    assert sorted(times)[len(times) // 2] < 1.0, times


# ---------------------------------------------------------------------------------------------
# Restoration of uploads: restore.py's call and defaults, in the background.

def test_restore_defaults_are_restore_py_defaults():
    import restore
    params = {p.name: p.default for p in restore.main.params}
    for key, value in jobs_module.RESTORE_DEFAULTS.items():
        assert params[key] == value, key


def test_upload_restores_like_restore_py(tmp_path, server):
    face = tmp_path / "in" / "face.png"
    face.parent.mkdir()
    face.write_bytes(_png(server, "degraded", "src=seed:21&scale=1.5"))
    before = face.read_bytes()
    status, job = _post(server.url + "api/restore?name=my%20face.png", before)
    assert status == 202 and job["state"] in ("queued", "running")
    seen_progress = False
    while True:
        status, _, body = _get(server.url + f"api/restore/{job['id']}")
        info = json.loads(body)
        seen_progress |= info["steps"] > 0
        if info["state"] not in ("queued", "running"):
            break
    assert info["state"] == "done", info
    assert len(info["q"]) == 16 and info["src"] == "upload:" + job["id"]
    status, headers, restored = _get(server.url + info["result"] + "?download=1")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    # restore.py on the same file with the same options writes the same image
    res = _run("restore.py", "--input", str(face.parent), "--outdir", str(tmp_path / "out"), "--pti-steps",
               str(PTI_STEPS), "--quiet")
    assert res.returncode == 0, res.stderr
    want = image_io.read_image(str(tmp_path / "out" / "face.png"))
    assert np.abs(_decode(restored).astype(int) - want).max() <= 1      # float sums across processes
    assert face.read_bytes() == before                                  # the user's file untouched
    job_obj = server.jobs.get(job["id"])
    assert os.path.commonpath([job_obj.folder, server.jobs.root]) == server.jobs.root
    # the inverted upload is a source: its own q, transfer onto a seed, edits
    assert _png(server, "degraded", f"src=upload:{job['id']}")[:4] == b"\x89PNG"
    assert _png(server, "degraded", f"src=seed:3&ref=upload:{job['id']}&alpha=1") != _png(server, "degraded", "src=seed:3")
    assert any(u["src"] == info["src"] for u in json.loads(_get(server.url + "api/info")[2])["uploads"])


@pytest.mark.parametrize("name, data, needle", [
    ("notes.txt", b"hello", "not an image file name"),
    ("broken.png", b"\x89PNG not really", "cannot be read as an image"),
    ("empty.png", b"", "empty"),
])
def test_bad_uploads_get_a_message(server, name, data, needle):
    status, body = _post(server.url + f"api/restore?name={name}", data)
    assert status == 400 and needle in body["error"]


def test_whole_photo_upload_faces_found_and_pasted_back(server):
    pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()[:300, :300]
    status, job = _post(server.url + "api/restore?name=astronaut.png", image_io.encode_image(photo, ".png"))
    assert status == 202
    done = server.jobs.wait(job["id"])
    assert done.state == "done" and done.faces >= 1, done.message
    out = _decode(_get(server.url + f"api/restore/{job['id']}/result.png")[2])
    assert out.shape == photo.shape
    assert np.array_equal(out[-40:], photo[-40:])          # far from her face: the photo's own pixels


def test_explore_cli_serves_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "explore.py"), "--port", "0", "--dtype", "float32"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        status, _, body = _get(url + "api/info")
        assert status == 200 and json.loads(body)["q_dim"] == 16
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res = _run("explore.py", "--network", str(tmp_path / "missing.pt"))
    assert res.returncode != 0 and "error" in res.stderr


def test_named_q_directions_beside_the_network(tmp_path):
    from explorer.session import load_q_directions
    net = tmp_path / "net.pt"
    assert load_q_directions(str(net), 4) == {}                              # the shipped card defines none
    (tmp_path / "net-q-directions.json").write_text(json.dumps({"blur": [1, 0, 0, 0], "noise": [0, 2.5, 0, 0]}))
    assert load_q_directions(str(net), 4) == {"blur": [1.0, 0.0, 0.0, 0.0], "noise": [0.0, 2.5, 0.0, 0.0]}
    (tmp_path / "net-q-directions.json").write_text(json.dumps({"blur": [1, 0]}))
    with pytest.raises(UserError, match="list of 4 numbers"):
        load_q_directions(str(net), 4)
