"""The explorer server both explorer test modules run (tests/test_explorer.py, ..._browser.py)."""
import contextlib

from explorer.server import make_server
from explorer.session import build_explorer

PTI_STEPS = 3          # restoration of uploads in seconds (restore.py --pti-steps, same meaning)


@contextlib.contextmanager
def running_server():
    """The shipped model, float32, on a free port of 127.0.0.1, restoring uploads with few PTI steps."""
    srv = make_server(build_explorer(dtype="float32"), 0, pti_steps=PTI_STEPS)
    srv.start_background()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.close()
