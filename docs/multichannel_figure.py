#!/usr/bin/env python
"""Make the picture of docs/prediction_and_export.md's "Multi-channel images" section: a
two-channel OME-TIFF built from a grayscale nuclei image plus a made-up second channel, the
channel tools/predict.py --channel picks, and the tool's own overlay of its result.

    .venv/bin/python docs/multichannel_figure.py --nuclei-image NUCLEI.png --work /tmp/mc \\
        --figure docs/multichannel_example.png -- --config-file CONFIG.yaml MODEL.WEIGHTS W.pth

Everything after ``--`` names the model, as for tools/predict.py (``--config-file`` and its
``KEY VALUE`` overrides). Writes ``WORK/two_channel.ome.tif`` (16-bit; channel 0
"membrane", channel 1 "DAPI"), runs ``tools/predict.py --channel DAPI`` into
``WORK/predictions`` and draws the three panels.
"""

import argparse
import os
import subprocess
import sys

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_channel_stack(nuclei: np.ndarray) -> np.ndarray:
    """(2, H, W) uint16 from an (H, W) uint8 nuclei image: channel 0 a made-up membrane
    stain (a blurred halo around the nuclei, dark inside them, plus noise), channel 1 the
    nuclei, both scaled to 14 bits."""
    halo = cv2.GaussianBlur(nuclei.astype(np.float32), (0, 0), 6) * 4.0 - nuclei * 1.5
    noise = np.random.default_rng(0).normal(20, 6, nuclei.shape)
    membrane = np.clip(halo + noise, 0, 255)
    return (np.stack([membrane, nuclei.astype(np.float32)]) * 64).astype(np.uint16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nuclei-image", required=True, help="a grayscale fluorescence nuclei image"
    )
    parser.add_argument("--work", required=True, help="folder for the OME-TIFF and the predictions")
    parser.add_argument("--figure", default=os.path.join(REPO, "docs", "multichannel_example.png"))
    parser.add_argument(
        "model", nargs=argparse.REMAINDER, help="-- then tools/predict.py's model arguments"
    )
    args = parser.parse_args(argv)
    model = args.model[1:] if args.model[:1] == ["--"] else args.model

    nuclei = cv2.imread(args.nuclei_image, cv2.IMREAD_GRAYSCALE)
    if nuclei is None:
        parser.error(f"cannot read {args.nuclei_image}")
    stack = two_channel_stack(nuclei)
    os.makedirs(args.work, exist_ok=True)
    image = os.path.join(args.work, "two_channel.ome.tif")
    tifffile.imwrite(
        image, stack, metadata={"axes": "CYX", "Channel": {"Name": ["membrane", "DAPI"]}}
    )
    out = os.path.join(args.work, "predictions")
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "predict.py"),
        "--input",
        image,
        "--output",
        out,
        "--overwrite",
        "--channel",
        "DAPI",
        *model,
    ]
    subprocess.run(command, check=True)

    def stretch(plane):
        plane = plane.astype(np.float64)
        return (plane - plane.min()) / max(plane.max() - plane.min(), 1)

    membrane, dapi = stretch(stack[0]), stretch(stack[1])
    composite = np.clip(np.dstack([membrane, dapi, membrane]), 0, 1)  # magenta + green
    overlay = cv2.imread(os.path.join(out, "overlays", "two_channel.ome.png"))[:, :, ::-1]
    labels = cv2.imread(os.path.join(out, "labels", "two_channel.ome.png"), cv2.IMREAD_UNCHANGED)
    panels = [
        (composite, "two-channel OME-TIFF\n0 'membrane' (magenta), 1 'DAPI' (green)"),
        (dapi, "--channel DAPI\n(read as a grayscale image)"),
        (overlay, f"result: {int(labels.max())} nuclei\n(overlays/two_channel.ome.png)"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=90)
    for axis, (picture, title) in zip(axes, panels):
        axis.imshow(picture, cmap="gray", interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.figure)
    print(f"{args.figure}: {os.path.getsize(args.figure) // 1024} KB, {int(labels.max())} nuclei")
    return 0


if __name__ == "__main__":
    sys.exit(main())
