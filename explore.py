"""A local page to explore a QC-StyleGAN: the sharp and degraded image of a seed side by side,
q's scale (Eq. 10) and its 16 dimensions, degradation transfer / interpolation (Sec. 4.4), edits
with the degradation kept (Sec. 4.5) and restoration of an uploaded face or photo (Sec. 4.3).

    python explore.py [--network FILE] [--encoder FILE] [--port N]     # then open the printed URL

Serves on 127.0.0.1 only; the page and everything it loads come from the ``explorer`` package.
Every image of the page is also an HTTP endpoint (docs/explorer.md). Ctrl-C stops it.

Exit status: 0 stopped by the user; 1 a bad option or a port in use; 2 a wrong --network /
--encoder file.
"""
from __future__ import annotations

import signal

import click

from dnnlib.util import UserError, cli_main
from explorer.server import make_server, parse_directions
from explorer.session import build_explorer
from training.generation import DTYPES


def _stop(signum, frame):
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="Network file: our .pt, an official .pkl, or a teacher .pth.tar [default: the shipped model]")
@click.option("--encoder", default=None, help="Encoder for restoring uploads [default: the shipped encoder with the shipped model, else optimisation from w_avg]")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port on 127.0.0.1 (0: any free port)")
@click.option("--direction", "directions", multiple=True, help="Edit direction NAME=FILE.npy or FILE.npy (repeatable; the shipped model brings 'gender')")
@click.option("--dtype", type=click.Choice(["auto"] + list(DTYPES)), default="auto", show_default=True,
              help="As generate.py: auto = bfloat16 where the CPU has it natively (AMX / AVX-512 BF16), else float32")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--pti-steps", type=click.IntRange(min=0), default=None, help="Restoring uploads: PTI steps [default: restore.py's]")
@click.option("--w-steps", type=click.IntRange(min=0), default=None, help="Restoring uploads: stage-1 steps [default: restore.py's]")
@click.option("--verbose", is_flag=True, help="Log every request on stderr")
@cli_main
def main(network, encoder, port, directions, dtype, device, pti_steps, w_steps, verbose):
    """Serve the explorer page on http://127.0.0.1:PORT/."""
    explorer = build_explorer(network, encoder, device, dtype, parse_directions(directions))
    try:
        server = make_server(explorer, port, pti_steps=pti_steps, w_steps=w_steps, quiet=not verbose)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); try --port 0") from None
    signal.signal(signal.SIGTERM, _stop)                   # a kill ends like Ctrl-C: uploads deleted
    click.echo(f"explorer: {server.url}  (network {explorer.info()['network']}, {explorer.dtype}; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.close()


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
