"""Clear errors naming the thing at fault, and bad training data reported and skipped.

Covered elsewhere, not repeated here: an unknown config key / override, a type mismatch and a
missing _BASE_ (tests/config/test_configs.py); a DSB2018 split that is registered but not prepared
(tests/data/test_dsb2018.py::test_loading_unprepared_split_says_what_to_run); non-contiguous,
missing or empty nested FPN IN_FEATURES and an unregistered BOTTOM_UP at build time
(tests/modeling/test_nested_fpn.py); unreadable image files (tests/data/test_dsb2018.py, read_image_rgb).
"""

import logging
import os
import pathlib
import struct
import zlib

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from maskrcnnpp.config import check_datasets_registered, setup_cfg
from maskrcnnpp.config.checks import check_frozen_parameters_have_weights
from maskrcnnpp.data.build import build_nuclei_mapper
from maskrcnnpp.data.image_io import ImageReadError
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
from maskrcnnpp.engine import NucleiTrainer

REPO = pathlib.Path(__file__).resolve().parents[2]
NESTED = REPO / "configs" / "quick" / "mask_rcnn_NestedFPN.yaml"
VGG_NESTED = REPO / "configs" / "quick" / "mask_rcnn_VGG_NestedFPN.yaml"
# a narrow Mask R-CNN++ on the fixture's 64 px images as they are: one training step takes well under a second
TINY = [
    "MODEL.VGG.STAGE_CHANNELS",
    "[8, 16, 16, 32, 32, 32]",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "INPUT.SCALE_FACTOR_TRAIN",
    "(1.0, 1.0)",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "1",
]


# ------------------------------------------------------------------------------------------
# Registry names: backbone, meta-architecture, UNet++ encoder, nested FPN bottom-up, heads
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value,suggestion,also_listed",
    [
        (
            "MODEL.BACKBONE.NAME",
            "build_resnet_nested_fpn",
            "build_resnet_nested_fpn_backbone",
            ["build_nested_fpn_backbone", "build_resnet_fpn_backbone", "build_vgg_backbone"],
        ),
        (
            "MODEL.META_ARCHITECTURE",
            "GeneralisedRCNN",
            "GeneralizedRCNN",
            ["SemanticUNetPlusPlus", "RetinaNet"],
        ),
        ("MODEL.UNETPP.ENCODER", "build_vgg", "build_vgg_backbone", ["build_resnet_backbone"]),
        (
            "MODEL.NESTED_FPN.BOTTOM_UP",
            "resnet",
            None,
            ["build_resnet_backbone", "build_vgg_backbone"],
        ),
        ("MODEL.ROI_HEADS.NAME", "StandardROIHead", "StandardROIHeads", ["CascadeROIHeads"]),
        ("MODEL.ROI_MASK_HEAD.NAME", "MaskHead", None, ["MaskRCNNConvUpsampleHead"]),
    ],
)
def test_unknown_registry_name_lists_the_registered_ones(key, value, suggestion, also_listed):
    with pytest.raises(ValueError) as error:
        setup_cfg(str(NESTED), [key, value])
    message = str(error.value)
    assert f"{key} = '{value}'" in message
    assert str(NESTED) in message  # where the config came from
    if suggestion:
        assert f"Did you mean '{suggestion}'?" in message
    for name in also_listed:
        assert name in message.split("Registered:")[1]


def test_unknown_backbone_in_yaml_names_the_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(f'_BASE_: "{NESTED}"\nMODEL:\n  BACKBONE:\n    NAME: "build_nested_fpn"\n')
    with pytest.raises(
        ValueError, match=r"MODEL\.BACKBONE\.NAME = 'build_nested_fpn' \(set in .*typo\.yaml"
    ):
        setup_cfg(str(bad))


def test_registered_names_pass():
    cfg = setup_cfg(str(NESTED), ["MODEL.UNETPP.ENCODER", "build_resnet_encoder_backbone"])
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_nested_fpn_backbone"


# ------------------------------------------------------------------------------------------
# Datasets that are not registered
# ------------------------------------------------------------------------------------------
def test_unregistered_dsb2018_split_says_how_to_prepare_it():
    cfg = setup_cfg(str(NESTED), ["DATASETS.TRAIN", "('dsb2018_trian',)"])
    with pytest.raises(ValueError) as error:
        check_datasets_registered(cfg)
    message = str(error.value)
    assert "DATASETS.TRAIN names dataset 'dsb2018_trian', which is not registered" in message
    assert "Did you mean 'dsb2018_train'?" in message
    assert "nuclei_synth_train" in message  # the registered ones are listed
    assert "python datasets/prepare_dsb2018.py --root <download> --out " in message
    assert "trian.txt" in message


def test_unregistered_own_dataset_says_how_to_register_it():
    cfg = setup_cfg(str(NESTED), ["DATASETS.TEST", "('my_cells_val',)"])
    check_datasets_registered(cfg, ("DATASETS.TRAIN",))  # only the keys asked for
    with pytest.raises(
        ValueError,
        match=r"(?s)DATASETS\.TEST names dataset 'my_cells_val'.*register_coco_instances\('my_cells_val'",
    ):
        check_datasets_registered(cfg)


def test_train_net_names_an_unregistered_dataset_and_exits_nonzero(run_script):
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        NESTED,
        "DATASETS.TRAIN",
        "('dsb2018_trian',)",
        timeout=120,
    )
    assert proc.returncode != 0
    assert "DATASETS.TRAIN names dataset 'dsb2018_trian', which is not registered" in proc.stderr
    assert "Did you mean 'dsb2018_train'?" in proc.stderr


# ------------------------------------------------------------------------------------------
# Frozen layers without weights: training from scratch with FREEZE_AT > 0 is refused
# ------------------------------------------------------------------------------------------
def test_training_from_scratch_with_frozen_stages_is_refused(tmp_path, run_script):
    """Detectron2's default FREEZE_AT 2 with no MODEL.WEIGHTS would train around a random stem
    and res2: the trainer refuses before building the data loader."""
    cfg = setup_cfg(str(NESTED), ["MODEL.BACKBONE.FREEZE_AT", "2", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(
        ValueError,
        match=r"MODEL\.WEIGHTS is empty .* frozen \(backbone\.bottom_up\.res2\.0, .*"
        r"backbone\.bottom_up\.stem\): they would stay random\. MODEL\.BACKBONE\.FREEZE_AT = 2",
    ):
        NucleiTrainer(cfg)
    assert not any(tmp_path.iterdir())
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        NESTED,
        "MODEL.BACKBONE.FREEZE_AT",
        "2",
        "OUTPUT_DIR",
        tmp_path / "run",
        timeout=120,
    )
    assert proc.returncode == 2 and "they would stay random" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "run" / "last_checkpoint").exists()
    # the shipped from-scratch configs train every stage; pretrained weights may be frozen
    model = build_model(setup_cfg(str(NESTED)))
    assert all(p.requires_grad for p in model.parameters())
    check_frozen_parameters_have_weights(
        setup_cfg(
            str(NESTED), ["MODEL.BACKBONE.FREEZE_AT", "2", "MODEL.WEIGHTS", "pretrained.pkl"]
        ),
        build_model(setup_cfg(str(NESTED), ["MODEL.BACKBONE.FREEZE_AT", "2"])),
    )


# ------------------------------------------------------------------------------------------
# Bad training images are reported and skipped; images without nuclei are negatives
# ------------------------------------------------------------------------------------------
def _png_with_zero_width():
    """A well-formed PNG signature + IHDR chunk declaring a 0 x 5 image."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _record(path, image_id, masks, size=64):
    annotations = []
    for mask in masks:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x, y, w, h = mask_util.toBbox(rle).tolist()
        annotations.append(
            {
                "bbox": [x, y, w, h],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "segmentation": rle,
                "iscrowd": 0,
            }
        )
    return {
        "file_name": str(path),
        "image_id": image_id,
        "height": size,
        "width": size,
        "annotations": annotations,
    }


@pytest.fixture
def dataset_with_bad_images(tmp_path):
    """nuclei: an image with nuclei; negative: one without; the others cannot be read."""
    records, good = [], {}
    for image_id, (name, num_nuclei) in enumerate((("nuclei.png", 12), ("negative.png", 0))):
        image, masks = generate_synthetic_nuclei_image(
            image_id, image_size=64, num_nuclei=num_nuclei
        )
        cv2.imwrite(str(tmp_path / name), image[:, :, ::-1])
        records.append(_record(tmp_path / name, image_id, masks))
        good[name] = len(masks)
    assert good["nuclei.png"] > 0 and good["negative.png"] == 0
    full = (tmp_path / "nuclei.png").read_bytes()
    bad = {
        "empty.png": b"",
        "truncated.png": full[: len(full) // 2],
        "zero_width.png": _png_with_zero_width(),
        "not_an_image.png": b"these are not pixels",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        records.append(_record(tmp_path / name, len(records), []))
    records.append(_record(tmp_path / "missing.png", len(records), []))
    name = "test_errors_bad_images"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["nucleus"])
    yield name, tmp_path, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_bad_training_images_are_reported_and_skipped(dataset_with_bad_images):
    name, folder, records = dataset_with_bad_images
    cfg = setup_cfg(str(VGG_NESTED), TINY + ["DATASETS.TRAIN", f"('{name}',)"])
    loader = NucleiTrainer.build_train_loader(cfg)  # what tools/train_net.py trains on
    collect = _Collect()
    logger = logging.getLogger("maskrcnnpp.data.instance_mapper")
    logger.addHandler(collect)
    try:
        # the training sampler's first epoch is a permutation: every record is mapped once
        batches = [batch for batch, _ in zip(loader, range(len(records)))]
    finally:
        logger.removeHandler(collect)
    seen = {os.path.basename(d["file_name"]) for batch in batches for d in batch}
    assert seen <= {"nuclei.png", "negative.png"} and seen
    reasons = {
        "empty.png": "file is empty (0 bytes)",
        "truncated.png": "not a decodable image",
        "zero_width.png": "not a decodable image",
        "not_an_image.png": "not a decodable image",
        "missing.png": "no such file",
    }
    for file_name, reason in reasons.items():
        reported = [m for m in collect.messages if str(folder / file_name) in m]
        assert len(reported) == 1, (file_name, collect.messages)  # once per file
        assert reason in reported[0] and "Skipping a training image" in reported[0]


def test_unreadable_test_image_is_an_error_naming_it(dataset_with_bad_images):
    _, folder, records = dataset_with_bad_images
    mapper = build_nuclei_mapper(setup_cfg(str(VGG_NESTED), TINY), is_train=False)
    assert mapper(records[0])["image"].shape[0] == 3
    with pytest.raises(ImageReadError, match=r"truncated\.png: not a decodable image"):
        mapper(records[3])


def test_image_without_nuclei_trains_as_a_negative(dataset_with_bad_images):
    _, _, records = dataset_with_bad_images
    negative = records[1]
    assert negative["annotations"] == []
    cfg = setup_cfg(str(VGG_NESTED), TINY)
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False  # the base config keeps negatives
    torch.manual_seed(0)
    model = build_model(cfg).train()
    inputs = build_nuclei_mapper(cfg, is_train=True)(negative)
    assert len(inputs["instances"]) == 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    with EventStorage():
        losses = model([inputs])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_cls"] > 0 and losses["loss_rpn_cls"] > 0  # everything is background
    assert losses["loss_mask"] == 0 and losses["loss_box_reg"] == 0  # nothing to fit
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
