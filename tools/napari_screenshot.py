#!/usr/bin/env python
"""
The napari screenshot of docs/viewers.md, made headless: an image opened in napari, the
"Segment nuclei" widget docked beside it, run, and the labels layer it added.

    xvfb-run -a .venv/bin/python tools/napari_screenshot.py --model NAME \
        --input IMAGE --output docs/napari_segment_nuclei.png [--channel K] [--score-thresh S]

or ``--config-file FILE --weights FILE`` instead of ``--model``. napari's canvas is drawn with
OpenGL into an X window: ``xvfb-run`` (Debian package xvfb) gives a virtual display where
there is none, and Qt's X platform plugin needs the libxcb packages of docs/viewers.md. The
PNG is the napari window at --size (default 1400x700), written atomically.

Exit status: 0 written; 1 the segmentation failed (the reason on stderr); 2 nothing could run
(bad arguments, no model).
"""

import argparse
import os
import sys
import time

from maskrcnnpp.utils.known_warnings import filter_known_warnings

filter_known_warnings()  # before Detectron2's imports, which emit some of them

# Qt's X platform where there is a display (xvfb-run's): its offscreen platform draws the
# widgets but not the OpenGL canvas
os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")

import napari
from napari._qt.dialogs.qt_notification import NapariQtNotification

from maskrcnnpp.model_zoo import list_models
from maskrcnnpp.napari.widget import CONFIG_AND_WEIGHTS, SegmentNucleiWidget
from maskrcnnpp.utils.atomic_io import atomic_write_png


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Screenshot of napari's Segment nuclei widget at work."
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="NAME", help="a shipped model (maskrcnnpp.model_zoo)")
    model.add_argument("--config-file", metavar="FILE", help="a model config (with --weights)")
    parser.add_argument("--weights", metavar="FILE", help="the weights of --config-file")
    parser.add_argument("--input", required=True, metavar="IMAGE", help="the image to segment")
    parser.add_argument("--output", required=True, metavar="PNG", help="the screenshot file")
    parser.add_argument(
        "--channel",
        type=int,
        default=None,
        metavar="K",
        help="channel of a stack or colour of an RGB image",
    )
    parser.add_argument(
        "--score-thresh", type=float, default=0.5, metavar="S", help="score threshold (default 0.5)"
    )
    parser.add_argument("--size", default="1400x700", metavar="WxH", help="window size in pixels")
    args = parser.parse_args(argv)
    if args.config_file and not args.weights:
        parser.error("--config-file needs --weights")
    try:
        args.size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(args.size) == 2 and min(args.size) > 0
    except (ValueError, AssertionError):
        parser.error(f"--size {args.size!r}: give WIDTHxHEIGHT, e.g. 1400x700")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.input):
        print(f"error: --input {args.input}: no such file", file=sys.stderr)
        return 2
    if args.model and args.model not in list_models():
        print(
            f"error: --model {args.model!r} is not a shipped model "
            f"({', '.join(list_models()) or 'none shipped'})",
            file=sys.stderr,
        )
        return 2
    viewer = napari.Viewer(show=True)  # a shown window: its canvas is drawn
    try:
        (layer,) = viewer.open(args.input)[:1]
        widget = SegmentNucleiWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name="Segment nuclei", area="right")
        dock.setMaximumWidth(430)  # the rest of the window for the canvas
        widget.image.value = layer
        if args.model:
            widget.model.value = args.model
        else:
            widget.model.value = CONFIG_AND_WEIGHTS
            widget.config_file.value, widget.weights.value = args.config_file, args.weights
        if args.channel is not None:
            widget.channel.value = args.channel
        widget.score_threshold.value = args.score_thresh
        if widget.run() is None:
            print(f"error: {widget.status.value}", file=sys.stderr)
            return 2
        while not widget.run_button.enabled:  # the worker thread re-enables it when done
            napari.qt.get_qapp().processEvents()
            time.sleep(0.05)
        napari.qt.get_qapp().processEvents()
        if widget.error is not None:
            print(f"error: {widget.status.value}", file=sys.stderr)
            return 1
        viewer.layers.selection.active = viewer.layers[-1]
        viewer.window.resize(*args.size)
        viewer.reset_view()
        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # notices (e.g. about the Qt backend) would cover the canvas
        napari.qt.get_qapp().processEvents()
        shot = viewer.screenshot(canvas_only=False, flash=False)
        atomic_write_png(args.output, shot[:, :, :3])
        status = widget.status.value  # read before the window (and the label) is closed
    finally:
        viewer.close()
    print(f"{args.output}: {status}, {os.path.getsize(args.output) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
