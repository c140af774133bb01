"""Folders of images + integer label images (maskrcnnpp.data.label_folder, run by
datasets/prepare_label_folder.py): pairing, every bad case, the same annotations as the
DSB2018 conversion, registration (also from DATASETS.LABEL_FOLDERS) and a short training."""

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data import dsb2018_conversion, label_folder, prepared, register_label_folder
from maskrcnnpp.data.dsb2018 import kaggle_image_path
from maskrcnnpp.data.synthetic_nuclei import write_example_label_folder
from maskrcnnpp.engine import NucleiTrainer, training_curves

SIZE = (20, 30)  # (H, W) of the hand-made images


def _image(folder, name, size=SIZE):
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(name)).integers(0, 256, (*size, 3), dtype=np.uint8)
    if name.endswith((".tif", ".tiff")):
        tifffile.imwrite(folder / name, pixels[:, :, 0].astype(np.uint16) * 200)  # 16-bit gray
    else:
        cv2.imwrite(str(folder / name), pixels)
    return folder / name


def _labels(folder, name, labels):
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith((".tif", ".tiff")):
        tifffile.imwrite(folder / name, labels)
    else:
        assert cv2.imwrite(str(folder / name), labels)
    return folder / name


def _hand_made(root):
    """Four good pairs, each instance counted by hand: {stem: [(id, area, [x, y, w, h])]}."""
    images, masks = root / "images", root / "masks"
    a = np.zeros(SIZE, np.uint16)  # 16-bit TIFF, ids neither consecutive nor from 1
    a[1:4, 1:5] = 7  # 3 x 4
    a[10:15, 10:12] = 300  # 5 x 2
    a[19, 29] = 65535  # one pixel in the corner
    b = np.zeros(SIZE, np.uint16)  # 16-bit PNG, Cellpose's name; two touching nuclei
    b[0:2, 0:3] = 1
    b[2:4, 0:3] = 2
    d = np.zeros(SIZE, np.int32)  # 32-bit TIFF, "_labels"
    d[5:9, 20:30] = 5
    _image(images, "a.png"), _labels(masks, "a.tif", a)
    _image(images, "b.tif"), _labels(masks, "b_masks.png", b)
    _image(images, "c.jpg"), _labels(masks, "c_label.png", np.zeros(SIZE, np.uint8))  # negative
    _image(images, "d.png"), _labels(masks, "d_labels.tif", d)
    expected = {
        "a": [(7, 12, [1, 1, 4, 3]), (300, 10, [10, 10, 2, 5]), (65535, 1, [29, 19, 1, 1])],
        "b": [(1, 6, [0, 0, 3, 2]), (2, 6, [0, 2, 3, 2])],
        "c": [],
        "d": [(5, 40, [20, 5, 10, 4])],
    }
    labels = {"a": a, "b": b, "c": np.zeros(SIZE, np.uint8), "d": d}
    return images, masks, expected, labels


def _coco(out, split="train"):
    with open(out / "annotations" / f"instances_{split}.json") as f:
        return json.load(f)


def _by_stem(coco):
    """stem -> its annotations, in file order."""
    stems = {i["id"]: os.path.splitext(os.path.basename(i["file_name"]))[0] for i in coco["images"]}
    result = {stem: [] for stem in stems.values()}
    for annotation in coco["annotations"]:
        result[stems[annotation["image_id"]]].append(annotation)
    return result


def _files_under(folder):
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, _, names in os.walk(folder)
        for n in names
    )


# --------------------------------------------------------------------------- conversion


def test_hand_made_folder_converts_exactly(tmp_path, capsys):
    images, masks, expected, labels = _hand_made(tmp_path)
    out = tmp_path / "out"
    assert label_folder.prepare_and_report(str(images), str(masks), str(out), workers=1) == 0
    stdout, stderr = capsys.readouterr()
    assert "train: 4 images, 6 instances" in stdout and "warning" not in stderr
    coco = _coco(out)
    assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]
    assert [i["file_name"] for i in coco["images"]] == [
        str(images / n) for n in ("a.png", "b.tif", "c.jpg", "d.png")
    ]
    assert all((i["height"], i["width"]) == SIZE for i in coco["images"])
    annotations = _by_stem(coco)
    for stem, instances in expected.items():
        got = annotations[stem]
        assert [(a["area"], a["bbox"]) for a in got] == [
            (area, box) for _, area, box in instances
        ], stem
        for annotation, (label_id, _, _) in zip(got, instances):
            np.testing.assert_array_equal(
                mask_util.decode(annotation["segmentation"]), labels[stem] == label_id
            )
            assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
        semantic = cv2.imread(str(out / "semantic" / "train" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert semantic.dtype == np.uint8
        np.testing.assert_array_equal(semantic, (labels[stem] > 0).astype(np.uint8))
    assert json.loads((out / "splits.json").read_text()) == {"train": ["a", "b", "c", "d"]}


def test_cellpose_layout_in_one_folder_and_float_labels(tmp_path):
    folder = tmp_path / "cellpose"
    labels = np.zeros(SIZE, np.float32)  # ImageJ's 32-bit: whole numbers only, accepted
    labels[2:5, 3:6] = 4.0
    _image(folder, "x.png"), _labels(folder, "x_masks.tif", labels)
    _image(folder, "y.png"), _labels(folder, "y_label.png", (labels > 0).astype(np.uint8) * 3)
    _image(folder, "y_label_flows.tif")  # a file of Cellpose's: an image without labels
    summary = label_folder.prepare_label_folder(str(folder), None, str(tmp_path / "out"), workers=1)
    assert summary["splits"]["train"]["images"] == 2
    assert [p.path for p in summary["left_out"]] == [str(folder / "y_label_flows.tif")]
    areas = {
        stem: [a["area"] for a in anns] for stem, anns in _by_stem(_coco(tmp_path / "out")).items()
    }
    assert areas == {"x": [9], "y": [9]}


BAD_CASES = {
    # name: (files to add, a part of the reason)
    "no_labels": ("image without a label image", None),
    "no_image": ("label image without an image", None),
    "wrong_size": ("label image is 29x20 (WxH) but its image", np.ones((20, 29), np.uint16)),
    "fraction": ("not integer-valued", np.full(SIZE, 0.5, np.float32)),
    "negative": ("negative values (minimum -1)", np.full(SIZE, -1, np.int16)),
    "rgb": (
        "3 channels (RGB)",
        np.dstack([np.ones(SIZE, np.uint8)] * 3) * np.array([1, 2, 3], np.uint8),
    ),
}


@pytest.fixture
def folder_with_bad_files(tmp_path):
    images, masks, expected, _ = _hand_made(tmp_path)
    bad = {}
    for name, (_, labels) in BAD_CASES.items():
        if name != "no_image":
            bad[name] = _image(images, f"{name}.png")
        if name == "no_image":
            bad[name] = _labels(masks, "orphan_masks.tif", np.ones(SIZE, np.uint16))
        elif labels is not None:
            bad[name] = _labels(masks, f"{name}.{'png' if name == 'rgb' else 'tif'}", labels)
    two_parts = np.zeros(SIZE, np.uint16)
    two_parts[0:2, 0:2] = 9
    two_parts[5:7, 5:8] = 9  # id 9 in two regions
    two_parts[10:12, 10:12] = 4
    _image(images, "split.png")
    bad["disconnected"] = _labels(masks, "split.tif", two_parts)
    return images, masks, bad


def test_bad_files_are_named_and_left_out(folder_with_bad_files, tmp_path, capsys):
    images, masks, bad = folder_with_bad_files
    out = tmp_path / "out"
    assert label_folder.prepare_and_report(str(images), str(masks), str(out), workers=1) == 0
    stdout, stderr = capsys.readouterr()
    for name, (reason, _) in BAD_CASES.items():
        line = next((x for x in stderr.splitlines() if str(bad[name]) in x), "")
        assert line.startswith("warning: left out ") and reason in line, (name, stderr)
    line = next(x for x in stderr.splitlines() if str(bad["disconnected"]) in x)
    assert (
        "1 label id(s) in several 8-connected regions: 9 (2 regions); each is one instance" in line
    )
    assert "left out: 6 file(s) with problems" in stdout
    assert "train: 5 images, 8 instances" in stdout  # the 4 good ones + the disconnected one
    split = _by_stem(_coco(out))["split"]
    assert [(a["area"], a["bbox"]) for a in split] == [(4, [10, 10, 2, 2]), (10, [0, 0, 8, 7])]
    assert sorted(os.listdir(out / "semantic" / "train")) == [f"{s}.png" for s in "abcd"] + [
        "split.png"
    ]


def test_split_disconnected_gives_one_instance_per_region(folder_with_bad_files, tmp_path):
    images, masks, _ = folder_with_bad_files
    summary = label_folder.prepare_label_folder(
        str(images), str(masks), str(tmp_path / "out"), split_disconnected=True, workers=1
    )
    assert summary["split_ids"] == 1 and summary["disconnected"] == []
    split = _by_stem(_coco(tmp_path / "out"))["split"]
    # ids in increasing order, the regions of id 9 in raster order
    assert [(a["area"], a["bbox"]) for a in split] == [
        (4, [10, 10, 2, 2]),
        (4, [0, 0, 2, 2]),
        (6, [5, 5, 3, 2]),
    ]


def test_strict_names_every_bad_file_and_writes_nothing(
    folder_with_bad_files, tmp_path, run_script
):
    images, masks, bad = folder_with_bad_files
    out = tmp_path / "out"
    result = run_script(
        "datasets/prepare_label_folder.py",
        "--images",
        images,
        "--labels",
        masks,
        "--out",
        out,
        "--strict",
        "--workers",
        "2",
    )
    assert result.returncode == 1, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    for path in bad.values():
        assert any(str(path) in x for x in errors), (path, result.stderr)
    assert (
        errors[-1]
        == f"error: {images}: 7 problem(s), listed above: an error with --strict, nothing written"
    )
    assert not out.exists()


def test_strict_accepts_a_clean_folder_and_split_regions(tmp_path):
    images, masks, _, _ = _hand_made(tmp_path)
    two_parts = np.zeros(SIZE, np.uint8)
    two_parts[0:2, 0:2] = two_parts[5:7, 5:7] = 1
    _image(images, "e.png"), _labels(masks, "e.png", two_parts)
    with pytest.raises(prepared.DatasetFormatError, match="1 problem"):
        label_folder.prepare_label_folder(
            str(images), str(masks), str(tmp_path / "o1"), strict=True, workers=1
        )
    summary = label_folder.prepare_label_folder(
        str(images),
        str(masks),
        str(tmp_path / "o2"),
        strict=True,
        split_disconnected=True,
        workers=1,
    )
    assert summary["splits"]["train"]["instances"] == 8


@pytest.mark.parametrize("case", ["missing", "empty_images", "empty_labels", "no_pairs", "all_bad"])
def test_folders_without_usable_pairs_are_errors(case, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    if case == "missing":
        images.rmdir()
    if case in ("empty_labels", "no_pairs", "all_bad"):
        _image(images, "a.png")
    if case in ("empty_images", "no_pairs"):
        _labels(masks, "b.tif", np.ones(SIZE, np.uint16))
    if case == "all_bad":
        _labels(masks, "a.tif", np.full(SIZE, -1, np.int16))
    out = tmp_path / "out"
    assert label_folder.prepare_and_report(str(images), str(masks), str(out), workers=1) == 1
    stderr = capsys.readouterr().err
    message = {
        "missing": f"error: {images}: no such folder (the images)",
        "empty_images": f"error: {images}: holds no images",
        "empty_labels": f"error: {masks}: holds no label images",
        "no_pairs": f"error: {images}: no image has a label image in {masks}",
        "all_bad": f"error: {images}: no image could be converted",
    }[case]
    assert message in stderr
    assert not out.exists()


def test_split_file_and_val_fraction(tmp_path, capsys):
    images, masks, _, _ = _hand_made(tmp_path)
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": ["d", "a"], "val": ["b"], "test": ["c", "a"]}))
    out = tmp_path / "out"
    summary = label_folder.prepare_label_folder(
        str(images), str(masks), str(out), split_file=str(split_file), workers=1
    )
    assert {s: c["images"] for s, c in summary["splits"].items()} == {
        "train": 2,
        "val": 1,
        "test": 2,
    }
    assert [os.path.basename(i["file_name"]) for i in _coco(out, "train")["images"]] == [
        "d.png",
        "a.png",
    ]
    assert sorted(os.listdir(out / "semantic" / "test")) == ["a.png", "c.png"]
    assert json.loads((out / "splits.json").read_text()) == json.loads(split_file.read_text())
    # unknown stems are an error before anything is written
    split_file.write_text(json.dumps({"train": ["a", "typo"]}))
    with pytest.raises(prepared.DatasetFormatError, match="names 'typo', which is no image stem"):
        label_folder.prepare_label_folder(
            str(images), str(masks), str(tmp_path / "o2"), split_file=str(split_file)
        )
    assert not (tmp_path / "o2").exists()
    # the default split: deterministic, at least one image in val
    first = label_folder.default_split(list("abcdefghij"), 0.2)
    assert first == label_folder.default_split(list("jihgfedcba"), 0.2)
    assert len(first["val"]) == 2 and sorted(first["train"] + first["val"]) == list("abcdefghij")
    assert len(label_folder.default_split(list("abc"), 0.01)["val"]) == 1


def test_rerun_keeps_a_retired_split_and_reports_it(tmp_path, capsys):
    images, masks, _, _ = _hand_made(tmp_path)
    out = tmp_path / "out"
    label_folder.prepare_label_folder(
        str(images), str(masks), str(out), val_fraction=0.5, workers=1
    )
    capsys.readouterr()
    label_folder.prepare_label_folder(str(images), str(masks), str(out), workers=1)
    assert (
        f"{out / 'annotations' / 'instances_val.json'} is of split 'val', which is no longer listed"
        in capsys.readouterr().err
    )
    assert len(_coco(out, "train")["images"]) == 4 and len(_coco(out, "val")["images"]) == 2


# --------------------------------------------------------------------------- DSB2018

# Five small val images of the shared DSB2018 whose masks do not overlap (a label image holds
# one id a pixel).
DSB_IMAGES = [
    "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21",
    "139946af9e2c7ef4f0298e622b831dbef5e5c0cd088eb5bc3382f8df9355443d",
    "1815cf307859b3e13669041d181aa3b3dbbac1a95aef4c42164b223110c09168",
    "1b2bf5933b0fb82918d278983bee66e9532b53807c3638efd9af66d20a2bae88",
    "1d02c4b5921e916b9ddfb2f741fd6cf8d0e571ad51eb20e021c826b5fb87350e",
]


def test_same_annotations_as_the_dsb2018_conversion(shared_dsb2018, tmp_path):
    kaggle, images, masks = tmp_path / "kaggle", tmp_path / "images", tmp_path / "masks"
    for folder in (kaggle / "stage1_train", images, masks):
        folder.mkdir(parents=True)
    for image_id in DSB_IMAGES:
        source = shared_dsb2018 / "stage1_train" / image_id
        if not source.is_dir():
            pytest.skip(f"{source} missing from the shared DSB2018 data")
        (kaggle / "stage1_train" / image_id).symlink_to(source)
        (images / f"{image_id}.png").symlink_to(kaggle_image_path(str(shared_dsb2018), image_id))
        mask_names = sorted(os.listdir(source / "masks"))  # the DSB conversion's order
        labels = None
        for k, name in enumerate(mask_names, start=1):
            mask = cv2.imread(str(source / "masks" / name), cv2.IMREAD_GRAYSCALE) > 0
            labels = np.zeros(mask.shape, np.uint16) if labels is None else labels
            assert not (labels[mask] > 0).any(), f"{image_id}: masks overlap"
            labels[mask] = k
        _labels(masks, f"{image_id}.png", labels)
    (kaggle / "train.txt").write_text("".join(i + "\n" for i in DSB_IMAGES))
    (tmp_path / "split.json").write_text(json.dumps({"train": DSB_IMAGES}))

    dsb_out, ours_out = tmp_path / "dsb_out", tmp_path / "label_out"
    dsb2018_conversion.prepare_dsb2018(str(kaggle), str(dsb_out), workers=1)
    label_folder.prepare_label_folder(
        str(images), str(masks), str(ours_out), split_file=str(tmp_path / "split.json"), workers=1
    )
    dsb, ours = _coco(dsb_out), _coco(ours_out)
    strip = [{k: v for k, v in i.items() if k != "file_name"} for i in dsb["images"]]
    assert strip == [{k: v for k, v in i.items() if k != "file_name"} for i in ours["images"]]
    assert [os.path.basename(i["file_name"]) for i in dsb["images"]] == [
        f"{i}.png" for i in DSB_IMAGES
    ]
    assert [os.path.basename(i["file_name"]) for i in ours["images"]] == [
        f"{i}.png" for i in DSB_IMAGES
    ]
    assert len(ours["annotations"]) == len(dsb["annotations"]) > 50
    for theirs, mine in zip(dsb["annotations"], ours["annotations"]):
        assert mine == theirs  # id, image, area, box and RLE string alike
        np.testing.assert_array_equal(
            mask_util.decode(mine["segmentation"]), mask_util.decode(theirs["segmentation"])
        )
    for image_id in DSB_IMAGES:
        read = [
            cv2.imread(str(o / "semantic" / "train" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
            for o in (dsb_out, ours_out)
        ]
        np.testing.assert_array_equal(read[0], read[1])


# --------------------------------------------------------------------------- registration


def _unregister(names):
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def registered(tmp_path):
    images, masks, _, labels = _hand_made(tmp_path)
    out = tmp_path / "out"
    label_folder.prepare_label_folder(
        str(images), str(masks), str(out), val_fraction=0.25, workers=1
    )
    name = f"lf_{tmp_path.name}"
    names = register_label_folder(str(out), name=name)
    yield out, name, names, labels
    _unregister(names)


def test_registration_as_dsb2018(registered):
    out, name, names, labels = registered
    assert set(names) == {
        f"{name}{kind}_{s}" for s in ("train", "val", "test") for kind in ("", "_sem_seg")
    }
    val_stem = json.loads((out / "splits.json").read_text())["val"][0]
    train = DatasetCatalog.get(f"{name}_train")
    assert len(train) == 3 and f"{val_stem}.png" not in [
        os.path.basename(d["file_name"]) for d in train
    ]
    assert sum(len(d["annotations"]) for d in train) == 6 - (len(np.unique(labels[val_stem])) - 1)
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.thing_classes == ["nucleus"] and meta.evaluator_type == "coco"
    assert meta.json_file == str(out / "annotations" / "instances_train.json")
    semantic = DatasetCatalog.get(f"{name}_sem_seg_val")
    assert [os.path.basename(d["sem_seg_file_name"]) for d in semantic] == [f"{val_stem}.png"]
    sem_meta = MetadataCatalog.get(f"{name}_sem_seg_val")
    assert sem_meta.instance_dataset_name == f"{name}_val" and sem_meta.ignore_label == 255
    with pytest.raises(
        FileNotFoundError, match=r"prepare_label_folder\.py --images <image folder>"
    ):
        DatasetCatalog.get(f"{name}_test")  # registered, not prepared: says what to run
    # a second registration replaces the first; another dataset's name is refused
    assert register_label_folder(str(out), name=name) == names
    with pytest.raises(ValueError, match="dsb2018_train, dsb2018_val.* is already registered"):
        register_label_folder(str(out), name="dsb2018")


def test_config_key_registers_and_rejects_bad_entries(registered):
    out, name, _, _ = registered
    cfg = setup_cfg(
        "", ["DATASETS.LABEL_FOLDERS", f"['{name}={out}']", "DATASETS.TRAIN", f"('{name}_train',)"]
    )
    assert (
        cfg.DATASETS.LABEL_FOLDERS == [f"{name}={out}"] and f"{name}_val" in DatasetCatalog.list()
    )
    with pytest.raises(ValueError, match="must be NAME=FOLDER"):
        setup_cfg("", ["DATASETS.LABEL_FOLDERS", f"['{out}']"])


# --------------------------------------------------------------------------- training


def test_two_iterations_on_a_registered_label_folder(tmp_path, monkeypatch):
    # the curves (matplotlib) would take most of the time, and are tested elsewhere
    monkeypatch.setattr(training_curves, "plot_training_curves", lambda *args: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (10x slower on a busy CPU)
    example = tmp_path / "example"
    write_example_label_folder(str(example), num_images=4, size=96)
    out = tmp_path / "prepared"
    label_folder.prepare_label_folder(
        str(example / "images"), str(example / "masks"), str(out), workers=1
    )
    name = f"lf_train_{tmp_path.name}"
    common = [
        "DATASETS.LABEL_FOLDERS",
        f"['{name}={out}']",
        "DATASETS.TEST",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "100000",
    ]
    names = [
        f"{name}{kind}_{split}" for split in ("train", "val", "test") for kind in ("", "_sem_seg")
    ]
    try:
        for config, dataset, extra in (
            ("configs/quick/mask_rcnn_FPN.yaml", f"{name}_train", []),
            (
                "configs/quick/unetpp_vgg.yaml",
                f"{name}_sem_seg_train",
                ["INPUT.SEMANTIC_PATCH.SIZE", "48"],
            ),
        ):
            cfg = setup_cfg(
                os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), config),
                common
                + extra
                + ["DATASETS.TRAIN", f"('{dataset}',)", "OUTPUT_DIR", str(tmp_path / dataset)],
            )
            torch.manual_seed(0)
            trainer = NucleiTrainer(cfg)
            trainer.train()
            assert trainer.iter == 2 and (tmp_path / dataset / "model_final.pth").is_file()
            assert len(DatasetCatalog.get(dataset)) == 4
    finally:
        torch.set_num_threads(threads)
        _unregister(n for n in names if n in DatasetCatalog)
