"""Convert a folder or ZIP of images into a training ZIP (uncompressed PNGs + dataset.json).

    python dataset_tool.py --source photos/ --dest data/faces256.zip --resolution 256
    python dataset_tool.py --source utkface64.zip --dest utkface64-webp.zip --format webp
"""
import click

from dnnlib.util import cli_main
from training.dataset import convert_dataset


@click.command()
@click.option("--source", required=True, metavar="PATH", help="Folder or ZIP of images (dataset.json labels are carried over)")
@click.option("--dest", required=True, metavar="ZIP", help="Output training ZIP")
@click.option("--resolution", type=int, default=None, help="Output side in pixels (power of two); default: keep")
@click.option("--transform", type=click.Choice(["center-crop", "none"]), default="center-crop", show_default=True,
              help="center-crop: crop the largest centred square before resizing; none: images must be square")
@click.option("--max-images", type=int, default=None, help="Stop after this many images")
@click.option("--format", "image_format", type=click.Choice(["png", "webp"]), default="png", show_default=True,
              help="png: uncompressed (fastest to read); webp: lossless, about 3/4 of the size")
@cli_main
def main(source, dest, resolution, transform, max_images, image_format):
    """Folder/ZIP of images -> training ZIP."""
    report = convert_dataset(source, dest, resolution=resolution, transform=transform,
                             max_images=max_images, image_format=image_format)
    print(f"wrote {report['written']} images of {report['resolution']}x{report['resolution']} to {dest}"
          f"{' with labels' if report['labels'] else ''}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} file(s):")
        for name, reason in report["skipped"]:
            print(f"  {name}: {reason}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
