"""Checks of the names a config gives to registered things (model parts, datasets), run before
anything is built, so that a typo fails at once with the key, the value and the choices.

Detectron2's registries answer an unknown name with ``KeyError: No object named 'X' found in
'BACKBONE' registry!``, which names neither the config key nor the registered names.
"""

import difflib
import os

from detectron2.data import DatasetCatalog
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
)

from ..data.pixel_scale import pixel_scale_problem
from ..utils.inference_precision import INFERENCE_PRECISIONS

# (config key, registry its value names). Keys absent from a config are skipped, and so are
# empty values (Detectron2's default MODEL.ROI_BOX_HEAD.NAME is "": unused by Res5ROIHeads).
_REGISTRY_KEYS = (
    ("MODEL.META_ARCHITECTURE", META_ARCH_REGISTRY),
    ("MODEL.BACKBONE.NAME", BACKBONE_REGISTRY),
    ("MODEL.NESTED_FPN.BOTTOM_UP", BACKBONE_REGISTRY),
    ("MODEL.UNETPP.ENCODER", BACKBONE_REGISTRY),
    ("MODEL.PROPOSAL_GENERATOR.NAME", PROPOSAL_GENERATOR_REGISTRY),
    ("MODEL.ROI_HEADS.NAME", ROI_HEADS_REGISTRY),
    ("MODEL.ROI_BOX_HEAD.NAME", ROI_BOX_HEAD_REGISTRY),
    ("MODEL.ROI_MASK_HEAD.NAME", ROI_MASK_HEAD_REGISTRY),
    ("MODEL.ROI_KEYPOINT_HEAD.NAME", ROI_KEYPOINT_HEAD_REGISTRY),
    ("MODEL.SEM_SEG_HEAD.NAME", SEM_SEG_HEADS_REGISTRY),
)


def _lookup(cfg, dotted_key):
    node = cfg
    for part in dotted_key.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def _did_you_mean(value, choices):
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_registered_names(cfg, *, source=None):
    """
    Check every config key that names a registry entry (meta-architecture, backbone, nested
    FPN bottom-up, UNet++ encoder, proposal generator, ROI heads, heads).

    Args:
        cfg (CfgNode): a merged config.
        source (str or None): where the config came from (a YAML path), for the message.

    Raises:
        ValueError: naming the key, its value, ``source``, and the registered names.
    """
    for key, registry in _REGISTRY_KEYS:
        value = _lookup(cfg, key)
        if not value or value in registry:
            continue
        registered = sorted(name for name, _ in registry)
        where = f" (set in {source} or on the command line)" if source else ""
        raise ValueError(
            f"{key} = '{value}'{where} is not in Detectron2's {registry._name} registry."
            f"{_did_you_mean(value, registered)} Registered: {', '.join(registered)}. "
            "Names defined in your own code are registered when the module defining them is "
            "imported, which must happen before the config is used."
        )


# Name prefixes of the datasets Detectron2 registers itself (detectron2/data/datasets/builtin.py).
_DETECTRON2_BUILTIN_PREFIXES = (
    "coco_",
    "keypoints_coco_",
    "lvis_",
    "cityscapes_",
    "voc_",
    "ade20k_",
)


def _registered_datasets_summary(registered):
    own = sorted(n for n in registered if not n.startswith(_DETECTRON2_BUILTIN_PREFIXES))
    builtin = len(registered) - len(own)
    return f"Registered datasets: {', '.join(own)}" + (
        f", and {builtin} of Detectron2's built-in ones (COCO, LVIS, Cityscapes, VOC, ADE20K)."
        if builtin
        else "."
    )


def _how_to_add_dataset(name):
    dsb_root = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "dsb2018"
    )
    if name.startswith("dsb2018_"):
        split = (
            name[len("dsb2018_sem_seg_") :]
            if name.startswith("dsb2018_sem_seg_")
            else name[len("dsb2018_") :]
        )
        return (
            f"DSB2018 splits are registered for every {dsb_root}/annotations/instances_<split>.json "
            f"(DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', '<unset: ./datasets>')}). "
            f"To get '{name}', put the image ids of split '{split}' in <download>/{split}.txt and run\n"
            f"    python datasets/prepare_dsb2018.py --root <download> --out {dsb_root}\n"
            "(see datasets/README.md)."
        )
    return (
        "Prepare DSB2018 with `python datasets/prepare_dsb2018.py --root <download>` "
        "(registers dsb2018_<split>; see datasets/README.md); a folder of images + label images "
        "with `python datasets/prepare_label_folder.py --images <folder> --labels <folder> "
        "--out OUT` and the config key DATASETS.LABEL_FOLDERS \"['NAME=OUT']\" (registers "
        "NAME_<split>; see docs/own_nuclei.md); or register your own COCO-format "
        "data before training, e.g. detectron2.data.datasets.register_coco_instances("
        f"'{name}', {{}}, 'instances.json', 'image_folder')."
    )


def check_datasets_registered(cfg, keys=("DATASETS.TRAIN", "DATASETS.TEST")):
    """
    Check that every dataset the config names is in Detectron2's ``DatasetCatalog``.

    Registration is cheap and reads no data; whether a registered dataset is prepared is
    checked when it is loaded (``maskrcnnpp.data.dsb2018`` then names the missing file and the
    command that prepares it).

    Raises:
        ValueError: naming the key, the dataset, the registered names and how to add it.
    """
    registered = DatasetCatalog.list()
    for key in keys:
        for name in _lookup(cfg, key) or ():
            if name in registered:
                continue
            raise ValueError(
                f"{key} names dataset '{name}', which is not registered.{_did_you_mean(name, registered)}\n"
                f"{_registered_datasets_summary(registered)}\n{_how_to_add_dataset(name)}"
            )


def check_datasets_ready(cfg, keys=("DATASETS.TRAIN", "DATASETS.TEST")):
    """
    Check, before the model is built, that every dataset the config names is prepared (loading
    it raises the loader's FileNotFoundError, which names the missing file and the command
    that prepares it) and that its image files are where its annotations say (images moved
    after the preparation). A dataset some of whose images are missing is trained on without
    them, each named when it is read.

    Raises:
        FileNotFoundError: naming the dataset, the missing files and what to do.
    """
    for key in keys:
        for name in _lookup(cfg, key) or ():
            records = DatasetCatalog.get(name)
            missing = [r["file_name"] for r in records if not os.path.isfile(r["file_name"])]
            if records and len(missing) == len(records):
                raise FileNotFoundError(
                    f"{key}: dataset '{name}': {len(missing)} of {len(records)} image file(s) "
                    f"do not exist, e.g. {missing[0]}: were the images moved after the dataset "
                    "was prepared? Move them back, or prepare the dataset again from where they are"
                )


# (key, test, what the value must be): numbers that Detectron2 takes as they are and fails on
# much later (ZeroDivisionError in the data loader, a diverging or silent run).
_VALUE_RULES = (
    ("SOLVER.IMS_PER_BATCH", lambda v: v >= 1, "an integer >= 1"),
    ("SOLVER.BASE_LR", lambda v: v >= 0, "a finite number >= 0"),
    ("SOLVER.MAX_ITER", lambda v: v >= 0, "an integer >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: v >= 1, "an integer >= 1"),
    ("SOLVER.WEIGHT_DECAY", lambda v: v >= 0, "a finite number >= 0"),
    ("SOLVER.MOMENTUM", lambda v: v >= 0, "a finite number >= 0"),
    ("SOLVER.WARMUP_ITERS", lambda v: v >= 0, "an integer >= 0"),
    ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "an integer >= 0"),
    ("TEST.EVAL_PERIOD", lambda v: v >= 0, "an integer >= 0"),
    ("TEST.DETECTIONS_PER_IMAGE", lambda v: v >= 1, "an integer >= 1"),
    # scores are probabilities: a threshold above 1 keeps no nucleus, below 0 every one
    ("TEST.PREDICT.SCORE_THRESH", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("TEST.NUCLEI.SCORE_THRESH", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    # a tile must hold a nucleus and its surroundings, and the backbone's coarsest stride
    ("TEST.PREDICT.TILE_SIZE", lambda v: v >= 64, "an integer >= 64 (pixels)"),
)


def check_config_values(cfg, *, source=None, overridden=()):
    """
    Check the numbers Detectron2 would fail on much later (a batch of 0 images, a negative
    learning rate, ...), the pixel-scale factors (``INPUT.SCALE_FACTOR_TEST / _TRAIN``) and
    ``TEST.PRECISION``.

    Args:
        source (str or None): the YAML file the config came from.
        overridden (iterable of str): keys set on the command line.

    Raises:
        ValueError: naming the key, its value, where it was set and what it must be.
    """
    overridden = set(overridden)

    def where(key):
        if key in overridden:
            return "set on the command line"
        return f"set in {source} or its _BASE_" if source else "Detectron2's default"

    for key, test, expected in _VALUE_RULES:
        value = _lookup(cfg, key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value == value and abs(value) != float("inf") and test(value):  # NaN fails here
            continue
        raise ValueError(f"{key} = {value!r} ({where(key)}) must be {expected}")
    problem = pixel_scale_problem(cfg) if "SCALE_FACTOR_TEST" in cfg.INPUT else None
    if problem:
        key, value, expected = problem
        raise ValueError(f"{key} = {value!r} ({where(key)}) must be {expected}")
    precision = _lookup(cfg, "TEST.PRECISION")
    if precision is not None and precision not in INFERENCE_PRECISIONS:
        expected = " or ".join(map(repr, INFERENCE_PRECISIONS))
        raise ValueError(
            f"TEST.PRECISION = {precision!r} ({where('TEST.PRECISION')}) must be {expected}"
        )


def check_frozen_parameters_have_weights(cfg, model):
    """
    Refuse to train a model whose frozen parameters would keep their random initialization:
    ``MODEL.WEIGHTS`` empty while some parameters do not require gradients (Detectron2's
    default ``MODEL.BACKBONE.FREEZE_AT 2`` freezes a ResNet's stem and res2, which is meant for
    pretrained weights).

    Args:
        cfg: the training config.
        model (nn.Module): the model built from it, before any weights are loaded.

    Raises:
        ValueError: naming the frozen modules, ``MODEL.BACKBONE.FREEZE_AT`` and ``MODEL.WEIGHTS``.
    """
    if cfg.MODEL.WEIGHTS:
        return
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:
        return
    modules = sorted({name.rsplit(".", 2)[0] for name in frozen})
    shown = ", ".join(modules[:6]) + (f" and {len(modules) - 6} more" if len(modules) > 6 else "")
    raise ValueError(
        f"MODEL.WEIGHTS is empty (training from random initialization) but {len(frozen)} "
        f"parameters are frozen ({shown}): they would stay random. "
        f"MODEL.BACKBONE.FREEZE_AT = {cfg.MODEL.BACKBONE.FREEZE_AT} freezes the first stages of a "
        "ResNet; set MODEL.BACKBONE.FREEZE_AT 0 to train from scratch, or MODEL.WEIGHTS to "
        "pretrained weights."
    )
