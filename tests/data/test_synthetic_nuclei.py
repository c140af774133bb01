"""Tests of the synthetic nuclei generator, its cached dataset and its registration."""

import contextlib
import io
import json
import multiprocessing
import os
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnnpp.data import synthetic_nuclei
from maskrcnnpp.data.synthetic_nuclei import (
    EMPTY_IMAGE_PERIOD,
    MIN_INSTANCE_AREA,
    SYNTHETIC_NUCLEI_SPLITS,
    ensure_synthetic_nuclei,
    generate_synthetic_nuclei_image,
    write_synthetic_nuclei_dataset,
)


@pytest.fixture
def cache_root(tmp_path_factory, monkeypatch):
    """A private MASKRCNNPP_CACHE shared by this session's tests (the same folder as
    conftest's), with both registered splits generated."""
    root = tmp_path_factory.getbasetemp() / "maskrcnnpp-cache"
    monkeypatch.setenv("MASKRCNNPP_CACHE", str(root))
    for split in SYNTHETIC_NUCLEI_SPLITS:
        ensure_synthetic_nuclei(split)
    return root


def _load_split(split):
    """(COCO json dict, {image_id: [annotation, ...]}) of a generated split."""
    with open(ensure_synthetic_nuclei(split)["json_file"]) as f:
        coco = json.load(f)
    by_image = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    return coco, by_image


def _decode(annotations, height, width):
    """(N, H, W) bool masks of COCO RLE annotations."""
    if not annotations:
        return np.zeros((0, height, width), bool)
    return np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in annotations])


def _touching_pairs(masks):
    """Set of instance index pairs (i, j), i < j, with 4-adjacent pixels."""
    labels = np.zeros(masks.shape[1:], np.int32)
    for index, mask in enumerate(masks):
        labels[mask] = index + 1
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        touching = (a > 0) & (b > 0) & (a != b)
        pairs.update(zip(np.minimum(a, b)[touching].tolist(), np.maximum(a, b)[touching].tolist()))
    return pairs


def test_same_seed_gives_same_image_and_masks():
    image_a, masks_a = generate_synthetic_nuclei_image(5)
    image_b, masks_b = generate_synthetic_nuclei_image(5)
    image_c, _ = generate_synthetic_nuclei_image(6)
    assert image_a.shape == (256, 256, 3) and image_a.dtype == np.uint8
    assert masks_a.dtype == bool and masks_a.shape[1:] == (256, 256)
    assert np.array_equal(image_a, image_b) and np.array_equal(masks_a, masks_b)
    assert not np.array_equal(image_a, image_c)


def test_non_square_image_size():
    image, masks = generate_synthetic_nuclei_image(3, image_size=(96, 160), num_nuclei=20)
    assert image.shape == (96, 160, 3) and masks.shape[1:] == (96, 160) and len(masks) > 0


def test_look_changes_rendering_not_layout():
    image_f, masks_f = generate_synthetic_nuclei_image(11, look="fluorescence")
    image_b, masks_b = generate_synthetic_nuclei_image(11, look="brightfield")
    assert np.array_equal(masks_f, masks_b) and len(masks_f) > 0
    background = ~masks_f.any(axis=0)
    assert image_f[background].mean() < 60 < 150 < image_b[background].mean()
    # Fluorescence nuclei are brighter than their background, brightfield ones darker.
    foreground = masks_f.any(axis=0)
    assert image_f[foreground].mean() > image_f[background].mean() + 10
    assert image_b[foreground].mean() < image_b[background].mean() - 30
    # Brightfield nuclei are purple-blue: blue above green.
    assert image_b[foreground][:, 2].mean() > image_b[foreground][:, 1].mean() + 20


def test_masks_are_disjoint_connected_and_large_enough():
    for seed in range(12):
        _, masks = generate_synthetic_nuclei_image(seed, image_size=128)
        assert masks.sum(axis=0).max(initial=0) <= 1
        for mask in masks:
            assert mask.sum() >= MIN_INSTANCE_AREA
            num_components, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
            assert num_components == 2  # background + one piece


def test_no_nuclei_requested_gives_empty_masks():
    image, masks = generate_synthetic_nuclei_image(2, num_nuclei=0)
    assert masks.shape == (0, 256, 256) and image.shape == (256, 256, 3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="phase"):
        generate_synthetic_nuclei_image(0, look="phase")
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_nuclei_image(0, image_size=8)
    with pytest.raises(ValueError, match="'test'"):
        ensure_synthetic_nuclei("test")


def test_image_k_does_not_depend_on_the_number_of_images(tmp_path):
    short = write_synthetic_nuclei_dataset(
        tmp_path / "a", num_images=3, seed_base=40, image_size=96
    )
    long = write_synthetic_nuclei_dataset(tmp_path / "b", num_images=5, seed_base=40, image_size=96)
    for k in range(3):
        for root in ("image_root", "sem_seg_root"):
            assert (
                Path(short[root], f"{k:04d}.png").read_bytes()
                == Path(long[root], f"{k:04d}.png").read_bytes()
            )
    coco_short, coco_long = (json.loads(Path(p["json_file"]).read_text()) for p in (short, long))
    assert coco_short["images"] == coco_long["images"][:3]
    assert coco_short["annotations"] == [a for a in coco_long["annotations"] if a["image_id"] <= 3]
    assert len(os.listdir(long["image_root"])) == 5


def test_files_match_generator_and_annotations_are_exact(cache_root):
    coco, by_image = _load_split("val")
    paths = ensure_synthetic_nuclei("val")
    assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "cell"}]
    for k, image_info in enumerate(coco["images"]):
        annotations = by_image[image_info["id"]]
        height, width = image_info["height"], image_info["width"]
        masks = _decode(annotations, height, width)
        expected_image, expected_masks = generate_synthetic_nuclei_image(
            image_info["seed"],
            image_size=(height, width),
            num_nuclei=0 if k % EMPTY_IMAGE_PERIOD == 0 else None,
        )
        image = cv2.imread(os.path.join(paths["image_root"], image_info["file_name"]))[:, :, ::-1]
        assert np.array_equal(image, expected_image)
        assert np.array_equal(masks, expected_masks)
        semantic = cv2.imread(
            os.path.join(paths["sem_seg_root"], image_info["file_name"]), cv2.IMREAD_UNCHANGED
        )
        assert semantic.dtype == np.uint8 and semantic.ndim == 2
        assert np.array_equal(semantic, masks.any(axis=0).astype(np.uint8))
        for annotation, mask in zip(annotations, masks):
            assert isinstance(annotation["segmentation"]["counts"], str)
            assert annotation["area"] == int(mask.sum())
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            assert annotation["bbox"] == [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
            assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
    ids = [a["id"] for a in coco["annotations"]]
    assert min(ids) >= 1 and len(set(ids)) == len(ids)  # COCOeval treats id 0 as unmatched


@pytest.mark.parametrize("split", sorted(SYNTHETIC_NUCLEI_SPLITS))
def test_each_split_has_both_looks_and_an_empty_image(cache_root, split):
    coco, by_image = _load_split(split)
    image_root = ensure_synthetic_nuclei(split)["image_root"]
    background_levels = []
    for image_info in coco["images"]:
        image = cv2.imread(os.path.join(image_root, image_info["file_name"]))
        background_levels.append(np.median(image))
    assert min(background_levels) < 40 and max(background_levels) > 170
    empty = [image_id for image_id, annotations in by_image.items() if not annotations]
    assert len(empty) >= 1


def test_counts_and_sizes_vary(cache_root):
    coco, by_image = _load_split("train")
    counts = np.array([len(annotations) for annotations in by_image.values()])
    assert counts.min() == 0 and counts.max() >= 40
    assert ((counts >= 1) & (counts <= 4)).sum() >= 3  # some images with very few nuclei
    assert len(np.unique(counts)) >= 20
    # Typical nucleus size per image (median equivalent radius) covers small and large nuclei.
    typical_radii = [
        np.median(np.sqrt([a["area"] for a in annotations]) / np.sqrt(np.pi))
        for annotations in by_image.values()
        if len(annotations) >= 3
    ]
    assert min(typical_radii) < 6.5 and max(typical_radii) > 12


def test_nuclei_touch_and_occlude(cache_root):
    coco, by_image = _load_split("train")
    images_with_touching, num_pairs = 0, 0
    for image_info in coco["images"]:
        annotations = by_image[image_info["id"]]
        masks = _decode(annotations, image_info["height"], image_info["width"])
        pairs = _touching_pairs(masks)
        num_pairs += len(pairs)
        images_with_touching += bool(pairs)
    assert images_with_touching >= len(coco["images"]) // 2
    assert num_pairs >= 100


def test_ground_truth_scores_perfect_coco_ap(cache_root):
    """The json is valid COCO for pycocotools: GT submitted as detections gives AP 1."""
    json_file = ensure_synthetic_nuclei("val")["json_file"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(json_file)
        detections = [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "segmentation": a["segmentation"],
                "score": 1.0,
            }
            for a in coco_gt.dataset["annotations"]
        ]
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    assert coco_eval.stats[0] == pytest.approx(1.0)


def test_registered_instances(cache_root):
    assert {"nuclei_synth_train", "nuclei_synth_val"} <= set(DatasetCatalog.list())
    for split, params in SYNTHETIC_NUCLEI_SPLITS.items():
        name = f"nuclei_synth_{split}"
        records = DatasetCatalog.get(name)
        assert len(records) == params["num_images"]
        assert len({r["image_id"] for r in records}) == len(records)
        assert sum(not r["annotations"] for r in records) >= 1
        record = next(r for r in records if r["annotations"])
        assert os.path.isfile(record["file_name"])
        assert (record["height"], record["width"]) == (256, 256)
        annotation = record["annotations"][0]
        assert annotation["category_id"] == 0 and annotation["iscrowd"] == 0
        assert annotation["bbox_mode"] == BoxMode.XYWH_ABS
        assert isinstance(annotation["segmentation"]["counts"], str)
        assert mask_util.decode(annotation["segmentation"]).shape == (256, 256)

        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == ["nucleus"]
        assert metadata.thing_dataset_id_to_contiguous_id == {1: 0}
        assert metadata.evaluator_type == "coco"
        assert Path(metadata.json_file).is_file()
        assert Path(metadata.json_file).is_relative_to(cache_root)
        assert Path(metadata.image_root) == Path(record["file_name"]).parent


def test_registered_semantic_twins(cache_root):
    records = DatasetCatalog.get("nuclei_synth_sem_seg_val")
    assert len(records) == SYNTHETIC_NUCLEI_SPLITS["val"]["num_images"]
    foreground_fractions = []
    for record in records:
        semantic = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        assert set(np.unique(semantic).tolist()) <= {0, 1}
        assert semantic.shape == (record["height"], record["width"])
        foreground_fractions.append(semantic.mean())
    assert min(foreground_fractions) == 0 and max(foreground_fractions) > 0.1
    for split in SYNTHETIC_NUCLEI_SPLITS:
        metadata = MetadataCatalog.get(f"nuclei_synth_sem_seg_{split}")
        assert metadata.stuff_classes == ["background", "nucleus"]
        assert metadata.ignore_label == 255
        assert metadata.evaluator_type == "sem_seg"
        assert Path(metadata.sem_seg_root).is_relative_to(cache_root)


def test_cache_root_is_read_at_call_time(cache_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKRCNNPP_CACHE", str(tmp_path))
    json_file = Path(MetadataCatalog.get("nuclei_synth_val").json_file)
    assert json_file.is_relative_to(tmp_path) and json_file.is_file()


def _generate_after_barrier(barrier, dataset_dir, params, results):
    barrier.wait()
    results.put(synthetic_nuclei._generate_once(dataset_dir, **params))


def test_concurrent_generation_gives_one_consistent_dataset(tmp_path):
    params = {"num_images": 12, "seed_base": 500, "image_size": 128}
    target = tmp_path / "cache" / "nuclei_synth_race"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_generate_after_barrier, args=(barrier, target, params, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    paths = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert paths[0] == paths[1]
    assert os.listdir(target.parent) == [target.name]  # no temporary folder left behind
    reference = write_synthetic_nuclei_dataset(tmp_path / "reference", **params)
    for root in ("image_root", "sem_seg_root"):
        names = sorted(os.listdir(paths[0][root]))
        assert names == sorted(os.listdir(reference[root])) and len(names) == 12
        for name in names:
            assert (
                Path(paths[0][root], name).read_bytes() == Path(reference[root], name).read_bytes()
            )
    assert Path(paths[0]["json_file"]).read_bytes() == Path(reference["json_file"]).read_bytes()


def test_lost_race_keeps_the_existing_dataset(tmp_path, monkeypatch):
    """Another process finishes first while this one writes: its dataset is kept."""
    target = tmp_path / "nuclei_synth_race"
    write = synthetic_nuclei.write_synthetic_nuclei_dataset

    def write_while_another_process_wins(out_dir, **params):
        write(out_dir, **params)
        write(target, **params)
        (target / "winner").touch()

    monkeypatch.setattr(
        synthetic_nuclei, "write_synthetic_nuclei_dataset", write_while_another_process_wins
    )
    paths = synthetic_nuclei._generate_once(target, num_images=2, seed_base=0, image_size=64)
    assert (target / "winner").is_file()
    assert paths["json_file"] == str(target / "instances.json")
    assert os.listdir(tmp_path) == [target.name]
