"""
tools/evaluate.py: COCO AP + nuclei metrics of a COCO results file.

Two end-to-end runs in a subprocess (perfect and degraded predictions with numbers known by
hand) and the bad-input errors (in-process through the library function the tool calls,
``evaluate_results_file``, one of them also end to end).
"""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from maskrcnnpp.evaluation.results_file_evaluation import evaluate_results_file

HEIGHT, WIDTH = 40, 50


def square(row, col, size=10):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[row : row + size, col : col + size] = True
    return mask


def compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def uncompressed_rle(mask):
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": [HEIGHT, WIDTH], "counts": np.diff(np.concatenate([[0], changes])).tolist()}


# Two images, two 10 x 10 nuclei each (100 px, COCO "small").
NUCLEI = {1: [square(5, 15), square(20, 15)], 2: [square(5, 25), square(20, 25)]}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


@pytest.fixture
def gt_file(tmp_path):
    images = [{"id": i, "height": HEIGHT, "width": WIDTH, "file_name": f"{i}.png"} for i in NUCLEI]
    annotations = []
    for image_id, masks in NUCLEI.items():
        for mask in masks:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": compressed_rle(mask),
                    "area": int(mask.sum()),
                    "bbox": mask_util.toBbox(compressed_rle(mask)).tolist(),
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    return write_json(tmp_path / "gt.json", gt)


def perfect_results():
    results = []
    for image_id, masks in NUCLEI.items():
        for mask in masks:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "score": 0.9,
                    "segmentation": compressed_rle(mask),
                }
            )
    # Mixed formats: one uncompressed RLE (with its own bbox), the rest compressed (bbox derived).
    results[1]["segmentation"] = uncompressed_rle(NUCLEI[1][1])
    results[1]["bbox"] = [15.0, 20.0, 10.0, 10.0]
    return results


@pytest.fixture
def run_tool(run_script):
    """tools/evaluate.py with these arguments, in a subprocess (the ``run_script`` fixture)."""
    return lambda *args: run_script("tools/evaluate.py", *args, timeout=300)


def test_perfect_predictions(gt_file, tmp_path, run_tool):
    pred = write_json(tmp_path / "pred.json", perfect_results())
    out = tmp_path / "metrics" / "m.json"
    proc = run_tool("--gt", gt_file, "--pred", pred, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "dsb_score" in proc.stdout and "AP50" in proc.stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"segm", "bbox", "nuclei"}
    for task in ("segm", "bbox"):
        assert metrics[task]["AP"] == pytest.approx(100.0)
        assert metrics[task]["APs"] == pytest.approx(100.0)
        assert metrics[task]["APm"] is None  # no medium nuclei: NaN, written as null
    for name in ("iou", "dice", "iou_pooled", "dice_pooled", "dsb_score", "aji", "pq"):
        assert metrics["nuclei"][name] == 1.0, name
    assert metrics["nuclei"]["num_images"] == 2


def test_degraded_predictions(gt_file, tmp_path, run_tool):
    results = perfect_results()[1:]  # image 1 loses its first nucleus
    # A low-score false positive on image 2: below --score-thresh for the nuclei metrics;
    # for COCO AP it ranks after every true positive, so precision stays 1 up to recall 3/4.
    results.append(
        {
            "image_id": 2,
            "category_id": 1,
            "score": 0.3,
            "segmentation": compressed_rle(square(28, 2)),
        }
    )
    pred = write_json(tmp_path / "pred.json", results)
    out = tmp_path / "m.json"
    proc = run_tool("--gt", gt_file, "--pred", pred, "--out", str(out), "--score-thresh", "0.5")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    # COCO AP: recall 3/4 at precision 1 at every IoU threshold; the 101-point interpolated
    # precision is 1 at recall 0.00..0.75 (76 points), 0 above: AP = 76 / 101.
    for task in ("segm", "bbox"):
        for name in ("AP", "AP50", "AP75", "APs"):
            assert metrics[task][name] == pytest.approx(100 * 76 / 101), (task, name)
    # Nuclei: image 1 is "one of two 100 px nuclei missing": IoU 100/200, Dice 200/300,
    # DSB 1/2, AJI 100/200, PQ 1 / (1 + 1/2); image 2 is perfect (the FP is below threshold).
    nuclei = metrics["nuclei"]
    assert nuclei["iou"] == pytest.approx((0.5 + 1) / 2)
    assert nuclei["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert nuclei["iou_pooled"] == pytest.approx(300 / 400)
    assert nuclei["dice_pooled"] == pytest.approx(600 / 700)
    assert nuclei["dsb_score"] == pytest.approx(0.75)
    assert nuclei["aji"] == pytest.approx(0.75)
    assert nuclei["pq"] == pytest.approx((2 / 3 + 1) / 2)


def test_bad_input_exits_nonzero_end_to_end(gt_file, tmp_path, run_tool):
    out = tmp_path / "m.json"
    missing = str(tmp_path / "nope.json")
    proc = run_tool("--gt", gt_file, "--pred", missing, "--out", str(out))
    assert proc.returncode == 1
    assert missing in proc.stderr and "no such file" in proc.stderr
    assert not out.exists()


def bad_results_cases(tmp_path):
    good = perfect_results()
    unknown_image = [dict(good[0], image_id=77)]
    no_segmentation = [dict(good[0]), {k: v for k, v in good[1].items() if k != "segmentation"}]
    wrong_size = [dict(good[0], segmentation=dict(good[0]["segmentation"], size=[10, 10]))]
    not_json = tmp_path / "garbage.json"
    not_json.write_text("{this is not json")
    return [
        (str(not_json), "not valid JSON"),
        (write_json(tmp_path / "dict.json", {"image_id": 1}), "expected a JSON list"),
        (
            write_json(tmp_path / "unknown.json", unknown_image),
            "image_id 77, which is not in the ground truth",
        ),
        (
            write_json(tmp_path / "noseg.json", no_segmentation),
            "entry 1 (image_id 1) has no 'segmentation'",
        ),
        (write_json(tmp_path / "size.json", wrong_size), "does not match the image size"),
    ]


def test_bad_results_files(gt_file, tmp_path, capsys):
    out = tmp_path / "m.json"
    for pred, fault in bad_results_cases(tmp_path):
        assert evaluate_results_file(gt_file, pred, out=str(out)) == 1
        err = capsys.readouterr().err
        assert pred in err and fault in err, err
        assert not out.exists()
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".m.json")]  # no temp left


def test_bad_ground_truth_files(tmp_path, capsys):
    pred = write_json(tmp_path / "pred.json", perfect_results())
    gt_missing = str(tmp_path / "missing_gt.json")
    gt_no_images = write_json(tmp_path / "gt_bad.json", {"annotations": [], "categories": []})
    cases = [(gt_missing, "no such file"), (gt_no_images, "missing or non-list 'images'")]
    for gt, fault in cases:
        assert evaluate_results_file(gt, pred) == 1
        err = capsys.readouterr().err
        assert gt in err and fault in err, err


def test_results_paired_by_file_name_and_mismatched_sets_refused(gt_file, tmp_path, capsys):
    """Issue 13 item 2. Before: pairing by image id alone: another image set with the same
    sizes scored 0 everywhere with exit 0, and ids numbered otherwise were mis-paired."""
    run = tmp_path / "run"
    run.mkdir()
    # predict numbered the images the other way round: ids 1 and 2 swapped
    results = perfect_results()
    for r in results:
        r["image_id"] = 3 - r["image_id"]
    pred = write_json(run / "coco_instances_results.json", results)
    listing = {
        "images": [
            {"id": 1, "file_name": "/data/2.png", "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": "/data/1.png", "height": HEIGHT, "width": WIDTH},
        ]
    }
    write_json(run / "coco_images.json", listing)
    out = tmp_path / "m.json"
    assert evaluate_results_file(gt_file, pred, out=str(out)) == 0
    assert json.loads(out.read_text())["segm"]["AP"] == pytest.approx(100.0)

    listing["images"][1]["file_name"] = "/data/other.png"  # another image set
    write_json(run / "coco_images.json", listing)
    capsys.readouterr()
    assert evaluate_results_file(gt_file, pred) == 1
    err = capsys.readouterr().err
    assert "not the same image set: 1.png is in the ground truth but not predicted" in err


def test_empty_results_say_no_predictions(gt_file, tmp_path, capsys):
    """Before: AP nan and nuclei 0.0625 with nothing saying why."""
    pred = write_json(tmp_path / "empty.json", [])
    assert evaluate_results_file(gt_file, pred) == 0
    assert f"No predictions: {pred} is an empty list" in capsys.readouterr().out


def test_results_table_printed_once_on_stdout(gt_file, tmp_path, run_tool):
    """Before: the AP tables also went to stderr (Detectron2's INFO log and COCOeval's
    summary), so a user saw the results twice."""
    pred = write_json(tmp_path / "pred.json", perfect_results())
    proc = run_tool("--gt", gt_file, "--pred", pred)
    assert proc.returncode == 0, proc.stderr
    assert "AP50" in proc.stdout
    assert "AP50" not in proc.stderr and "Average Precision" not in proc.stderr, proc.stderr
