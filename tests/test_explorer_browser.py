"""The explorer page in a real browser: headless Chromium (Debian's ``chromium``, no browser
download) driven by Playwright. Skips with the reason where either is absent; ``.ci/run``
installs chromium. Every request the page makes is routed through the test, which lets only
``http://127.0.0.1:PORT/`` through and fails on anything else (nothing outside is contacted).

``QC_EXPLORER_SCREENSHOTS=DIR`` also saves the README's screenshots there.
"""
import os
import urllib.request

import pytest

from _explorer import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not os.path.isfile(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


def _src(page, slot):
    return page.eval_on_selector(f"#img-{slot}", "el => el.src")


def test_page_q_control_and_upload_in_chromium(server, tmp_path):
    base = server.url
    face = tmp_path / "degraded-face.png"
    with urllib.request.urlopen(base + "image/degraded.png?src=seed:21&scale=1.5") as r:
        face.write_bytes(r.read())
    shots = os.environ.get("QC_EXPLORER_SCREENSHOTS")
    outside, seen = [], []

    def gate(route):
        url = route.request.url
        seen.append(url)
        if url.startswith(base):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1120, "height": 860})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", gate)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base)
            page.wait_for_function("() => document.getElementById('img-degraded').dataset.url")
            page.wait_for_function("() => document.getElementById('img-sharp').naturalWidth > 0")
            assert "qc-faces64.pt" in page.inner_text("#model")
            sharp_src, deg_src = _src(page, "sharp"), _src(page, "degraded")
            sharp_px = page.locator("#img-sharp").screenshot()
            deg_px = page.locator("#img-degraded").screenshot()

            # move one q dimension: the degraded image changes, the sharp one stays
            page.eval_on_selector("#q5", "el => { el.value = 2.5; el.dispatchEvent(new Event('input')); }")
            page.wait_for_function("() => (document.getElementById('img-degraded').dataset.url || '').includes('q=')")
            page.wait_for_function(f"() => document.getElementById('img-degraded').src !== {deg_src!r}")
            page.wait_for_function("() => document.getElementById('img-degraded').complete")
            assert page.locator("#img-degraded").screenshot() != deg_px
            assert _src(page, "sharp") == sharp_src
            assert page.locator("#img-sharp").screenshot() == sharp_px
            # q scale 0 (Eq. 10): the degraded view is the sharp image
            page.eval_on_selector("#scale", "el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
            page.wait_for_function("() => /scale=0(&|$)/.test(document.getElementById('img-degraded').dataset.url)")
            page.eval_on_selector("#scale", "el => { el.value = 1.5; el.dispatchEvent(new Event('input')); }")
            page.wait_for_function("() => (document.getElementById('img-degraded').dataset.url || '').includes('scale=1.5')")

            # upload a degraded face: progress, then the restored face, its q and a download link
            page.set_input_files("#file", str(face))
            page.wait_for_function("() => document.getElementById('job-input').naturalWidth > 0")
            page.wait_for_function("() => document.getElementById('job-result').naturalWidth > 0")
            assert "estimated q" in page.inner_text("#job-q")
            assert "done" in page.inner_text("#job-status")
            href = page.get_attribute("#job-download", "href")
            assert href and href.endswith("result.png?download=1")
            page.wait_for_function("() => Array.from(document.getElementById('src').options).some(o => o.value.startsWith('upload:'))")
            if shots:                              # a calmer view for the README: seed 2, its own q, scale 1
                page.fill("#seed", "2")
                page.dispatch_event("#seed", "input")
                page.eval_on_selector("#scale", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
                page.wait_for_function("() => /src=seed%3A2&trunc=1&scale=1(&|$)/.test("
                                       "document.getElementById('img-degraded').dataset.url)")
                page.wait_for_timeout(500)
                os.makedirs(shots, exist_ok=True)
                page.screenshot(path=os.path.join(shots, "explorer.png"))
            # a bad file gets a message
            bad = tmp_path / "broken.png"
            bad.write_bytes(b"not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("() => document.getElementById('job-status').textContent.includes('cannot be read')")
            assert errors == []
        finally:
            browser.close()
    assert seen and outside == [], outside
    assert all(u.startswith(base) for u in seen)
