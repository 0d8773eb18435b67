"""Convert a folder or ZIP of images into a training ZIP (uncompressed PNGs + dataset.json).

    python dataset_tool.py --source photos/ --dest data/faces256.zip --resolution 256
"""
import sys

import click

from dnnlib.util import UserError


@click.command()
@click.option("--source", required=True, metavar="PATH", help="Folder or ZIP of images (dataset.json labels are carried over)")
@click.option("--dest", required=True, metavar="ZIP", help="Output training ZIP")
@click.option("--resolution", type=int, default=None, help="Output side in pixels (power of two); default: keep")
@click.option("--transform", type=click.Choice(["center-crop", "none"]), default="center-crop", show_default=True,
              help="center-crop: crop the largest centred square before resizing; none: images must be square")
@click.option("--max-images", type=int, default=None, help="Stop after this many images")
def main(source, dest, resolution, transform, max_images):
    """Folder/ZIP of images -> training ZIP."""
    from training.dataset import convert_dataset
    try:
        report = convert_dataset(source, dest, resolution=resolution, transform=transform,
                                 max_images=max_images)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {report['written']} images of {report['resolution']}x{report['resolution']} to {dest}"
          f"{' with labels' if report['labels'] else ''}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} file(s):")
        for name, reason in report["skipped"]:
            print(f"  {name}: {reason}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
