#!/usr/bin/env python
"""
Put a trained model into the model zoo (maskrcnnpp/model_zoo/): the weights in float16, the
config reduced to what differs from maskrcnnpp's defaults, and the catalogue line to paste.

    python tools/package_zoo_model.py --run-dir output/shipped/mask_rcnnpp_nuclei \
        --name mask_rcnnpp_nuclei

Reads RUN_DIR/config.yaml and RUN_DIR/model_final.pth; writes
maskrcnnpp/model_zoo/configs/NAME.yaml and maskrcnnpp/model_zoo/weights/NAME.pth and prints
the ``ZooModel(...)`` entry for maskrcnnpp/model_zoo/catalog.py (its SHA-256).
"""

import argparse
import hashlib
import os
import sys

import torch
from detectron2.config import CfgNode, get_cfg

import maskrcnnpp  # noqa: F401
from maskrcnnpp.config import add_maskrcnnpp_config
from maskrcnnpp.model_zoo.model_zoo import SCHEME
from maskrcnnpp.utils.atomic_io import atomic_open

ZOO = os.path.join(os.path.dirname(os.path.abspath(maskrcnnpp.__file__)), "model_zoo")
# Keys of a training run that say nothing about the model.
RUN_ONLY = (
    "OUTPUT_DIR",
    "SEED",
    "DATASETS",
    "SOLVER",
    "DATALOADER",
    "CUDNN_BENCHMARK",
    "VIS_PERIOD",
)


def _plain(value):
    """Tuples as lists (a dumped config reads back lists where the defaults hold tuples)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _differences(cfg: CfgNode, default: CfgNode) -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, CfgNode):
            sub = _differences(value, default[key])
            if sub:
                out[key] = sub
        elif _plain(value) != _plain(default[key]):
            out[key] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run-dir", required=True, help="training output folder")
    parser.add_argument("--name", required=True, help="the model's zoo name")
    args = parser.parse_args(argv)

    default = get_cfg()
    add_maskrcnnpp_config(default)
    cfg = default.clone()
    cfg.merge_from_file(os.path.join(args.run_dir, "config.yaml"))
    cfg.MODEL.WEIGHTS = SCHEME + args.name
    cfg.MODEL.DEVICE = "cpu"
    model_keys = {k: v for k, v in _differences(cfg, default).items() if k not in RUN_ONLY}
    model_keys["VERSION"] = cfg.VERSION  # Detectron2 warns about a config without it

    state = torch.load(
        os.path.join(args.run_dir, "model_final.pth"), map_location="cpu", weights_only=False
    )
    # Float16 halves the file; a tensor with values beyond its range (the stem's BatchNorm
    # running variance of 0-255 pixels) stays float32.
    half_max = torch.finfo(torch.float16).max
    half = {
        key: value.half()
        if value.is_floating_point() and float(value.abs().max()) < half_max / 2
        else value
        for key, value in ((k, torch.as_tensor(v)) for k, v in state["model"].items())
    }
    weights = os.path.join(ZOO, "weights", f"{args.name}.pth")
    with atomic_open(weights, "wb") as f:
        torch.save({"model": half}, f)
    config = os.path.join(ZOO, "configs", f"{args.name}.yaml")
    with atomic_open(config, "w") as f:
        f.write(
            f"# The shipped model {args.name!r}: the keys of its architecture and of prediction that\n"
            "# differ from maskrcnnpp's defaults. Its recipe and card: docs/models.md.\n"
        )
        f.write(CfgNode(model_keys).dump())
    with open(weights, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    print(f"{weights}: {os.path.getsize(weights) / 2**20:.1f} MiB")
    print(f'ZooModel(name="{args.name}", sha256="{sha256}", summary="..."),')
    return 0


if __name__ == "__main__":
    sys.exit(main())
