"""Convert an official StyleGAN2-ADA / QC-StyleGAN file to our checkpoint format.

    python convert_network.py network-snapshot-025000.pkl ffhq256.pt
    python convert_network.py G_teacher_FFHQ.pth.tar teacher.pt
    python convert_network.py stylegan2-ffhq-256.pkl qc-init.pt --widen-q-dim 16
    python convert_network.py runs/.../network-snapshot-000100.pt release.pt --only G_ema --note kimg=100
    python convert_network.py release.pt release-aligned.pt --face-template my-model-face.json
    python convert_network.py runs/.../network-snapshot-000030.pt pretrained/qc-faces64-campaign.pt \
        --slim-base pretrained/qc-faces64.pt      # a resumable run for git (pretrained/README.md)

The result loads with ``torch.load(weights_only=True)``; official pickles are read through the
restricted unpickler and never execute code.
"""
import click

from dnnlib.util import UserError, cli_main
from faces.templates import TEMPLATE_KEY, load_template
from training.checkpoint import convert_network, slim_checkpoint


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src")
@click.argument("dst")
@click.option("--widen-q-dim", type=int, default=None,
              help="Widen a plain StyleGAN2 generator into a QC generator with this q_dim (renders the same at q=0)")
@click.option("--only", default=None, metavar="LIST",
              help="Keep only these networks, e.g. G_ema (a small release file) [default: all]")
@click.option("--note", "notes", multiple=True, metavar="KEY=VALUE", help="Add KEY=VALUE to the file's metadata (repeatable)")
@click.option("--face-template", default=None, metavar="JSON",
              help="Store this face template (python -m faces.templates) in the metadata, for restore/edit/invert --align")
@click.option("--slim-base", default=None, metavar="FILE",
              help="Write a slim resumable copy of the training snapshot SRC: G and G_ema as their differences from FILE's "
                   "G_ema (FILE must lie beside DST), D_degraded in bfloat16, training state without optimiser moments")
@cli_main
def main(src, dst, widen_q_dim, only, notes, face_template, slim_base):
    """Convert SRC (official .pkl, teacher .pth.tar, or ours) to DST in our format."""
    if slim_base:
        if widen_q_dim or notes or face_template:
            raise UserError("--slim-base takes no other option but --only")
        sizes = slim_checkpoint(src, dst, slim_base, **({"only": [k.strip() for k in only.split(",")]} if only else {}))
        click.echo(f"wrote {dst}: " + ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in sizes.items()))
        return
    keep = [k.strip() for k in only.split(",") if k.strip()] if only else None
    meta = {}
    for note in notes:
        key, sep, value = note.partition("=")
        if not sep or not key:
            raise UserError(f"--note must be KEY=VALUE, got '{note}'")
        meta[key] = value
    if face_template:
        meta[TEMPLATE_KEY] = load_template(face_template)
    written = convert_network(src, dst, widen_q_dim=widen_q_dim, only=keep, metadata=meta)
    click.echo(f"wrote {dst}: " + ", ".join(f"{k} ({v})" for k, v in written.items()))


if __name__ == "__main__":
    main()
