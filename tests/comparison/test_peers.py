"""The peers (StarDist 2D, Cellpose 3) as rows of tools/compare.py: the `peer:` model specs, their
train_peer.py commands, resume, the pooled TP/(TP+FP+FN) column from per-image records, and,
when .venv-peers exists, one slow end-to-end run of each peer on a few images."""

import json
import os
import pathlib

import pytest

from maskrcnnpp.comparison.peers.runs import PEERS_ENV_NAME, PEERS_PYTHON_ENV
from maskrcnnpp.comparison.runs import ModelSpec, parse_model_spec, plan_runs
from maskrcnnpp.comparison.tables import format_comparison_markdown, run_comparison

REPO = pathlib.Path(__file__).resolve().parents[2]
FPN = REPO / "configs" / "quick" / "mask_rcnn_FPN.yaml"
PEERS_PYTHON = REPO / PEERS_ENV_NAME / "bin" / "python"


def _counts(num_gt, num_pred, num_matched):
    """A per-image record as NucleiEvaluator writes it, with the given nucleus counts."""
    return {
        "iou": 0.5,
        "dice": 0.6,
        "dsb_score": 0.4,
        "aji": 0.5,
        "pq": 0.5,
        "num_gt": num_gt,
        "num_pred": num_pred,
        "num_matched": num_matched,
        "fg_intersection": 10,
        "fg_union": 20,
        "fg_gt_area": 15,
        "fg_pred_area": 15,
    }


def _fake_runner(calls):
    """runner(command, env, log) standing for train_net.py and train_peer.py: writes the run's
    final_metrics.json and nuclei_per_image.json (3 images; the peer misses one nucleus more)."""

    def runner(command, env, log_path):
        calls.append((command, env))
        if "--output-dir" in command:
            output_dir = pathlib.Path(command[command.index("--output-dir") + 1])
            per_image = [_counts(10, 9, 8), _counts(4, 4, 4), _counts(0, 1, 0)]
        else:
            output_dir = pathlib.Path(command[command.index("OUTPUT_DIR") + 1])
            per_image = [_counts(10, 10, 9), _counts(4, 4, 4), _counts(0, 0, 0)]
        for image_id, record in enumerate(per_image):
            record["image_id"] = image_id
            record["dsb_score"] += 0.01 * image_id
        inference = output_dir / "inference" / "nuclei_synth_val"
        inference.mkdir(parents=True, exist_ok=True)
        (inference / "nuclei_per_image.json").write_text(json.dumps(per_image))
        (output_dir / "last_checkpoint").write_text("checkpoint")
        # a final_metrics.json without the pooled key, as older runs wrote them
        (output_dir / "final_metrics.json").write_text(
            json.dumps(
                {
                    "config_file": None,
                    "results": {"nuclei_synth_val": {"nuclei": {"iou": 0.5, "dsb_score": 0.4}}},
                }
            )
        )
        return 0

    return runner


def test_peer_rows_train_through_train_peer_and_tabulate_with_ours(tmp_path):
    calls = []
    models = [
        ModelSpec("fpn", str(FPN)),
        parse_model_spec(["stardist=peer:stardist", "TRAIN_MINUTES", "40"]),
        parse_model_spec(["cellpose=peer:cellpose"]),
    ]
    out = run_comparison(
        models,
        [0, 1],
        str(tmp_path),
        pairs=[("stardist", "fpn"), ("cellpose", "fpn")],
        baseline=False,
        threads=2,
        resamples=200,
        runner=_fake_runner(calls),
    )
    assert len(calls) == 6
    peer_commands = [c for c, _ in calls if "--peer" in c]
    assert len(peer_commands) == 4
    stardist = next(c for c in peer_commands if c[-1] == str(tmp_path / "stardist" / "seed1"))
    assert stardist[1] == str(REPO / "tools" / "train_peer.py")
    assert stardist[stardist.index("--peer") + 1] == "stardist"
    assert stardist[stardist.index("--seed") + 1] == "1"
    assert stardist[stardist.index("--minutes") + 1] == "40"
    assert "--minutes" not in next(c for c in peer_commands if "cellpose" in c)
    assert {env["OMP_NUM_THREADS"] for _, env in calls} == {"2"}

    record = json.loads((tmp_path / "cellpose" / "seed0" / "compare_run.json").read_text())
    assert record["config_file"] == "peer:cellpose" and record["seed"] == 0
    attempt = record["attempts"][0]
    assert attempt["threads"] == 2 and attempt["machine"]["cpu_count"] == os.cpu_count()
    assert attempt["command"][-2:] == ["--output-dir", str(tmp_path / "cellpose" / "seed0")]

    rows = out["datasets"]["nuclei_synth_val"]["models"]
    # TP / (TP + FP + FN) pooled over the images, from the per-image records:
    # ours 13 / (14 + 14 - 13), the peers' 12 / (14 + 14 - 12)
    assert rows["fpn"]["mean"]["nuclei/accuracy_iou50_pooled"] == pytest.approx(13 / 15)
    assert rows["stardist"]["mean"]["nuclei/accuracy_iou50_pooled"] == pytest.approx(12 / 16)
    assert rows["cellpose"]["sd"]["nuclei/accuracy_iou50_pooled"] == pytest.approx(0.0)
    markdown = format_comparison_markdown(out)
    assert "TP/(TP+FP+FN) IoU 0.5 pooled" in markdown
    assert f"| {12 / 16:.4f} ± 0.0000 |" in next(
        line for line in markdown.splitlines() if line.startswith("| stardist |")
    )
    pair = out["datasets"]["nuclei_synth_val"]["pairs"][0]
    assert (pair["a"], pair["b"]) == ("stardist", "fpn")

    # a stopped peer run (a checkpoint, no final metrics) is resumed with --resume
    calls.clear()
    (tmp_path / "stardist" / "seed1" / "final_metrics.json").unlink()
    run_comparison(
        models, [0, 1], str(tmp_path), baseline=False, resamples=200, runner=_fake_runner(calls)
    )
    assert len(calls) == 1
    assert calls[0][0][-3:] == ["--resume", "--output-dir", str(tmp_path / "stardist" / "seed1")]


def test_peer_specs_refuse_what_they_cannot_take(tmp_path):
    with pytest.raises(
        ValueError, match=r"peer:nope: unknown peer 'nope'; peers: peer:stardist, peer:cellpose"
    ):
        parse_model_spec(["x=peer:nope"])
    with pytest.raises(
        ValueError,
        match=r"--model s=peer:stardist: a peer takes only the overrides "
        r"TRAIN_MINUTES, DATASETS.TRAIN, DATASETS.TEST; got SOLVER.MAX_ITER",
    ):
        parse_model_spec(["s=peer:stardist", "SOLVER.MAX_ITER", "2"])
    with pytest.raises(ValueError, match=r"--opts with the peer 's'.*got SOLVER.MAX_ITER"):
        plan_runs(
            [parse_model_spec(["s=peer:stardist"])], [0], str(tmp_path), ["SOLVER.MAX_ITER", "2"]
        )


def test_train_peer_without_the_peers_environment_says_how_to_make_it(run_script, tmp_path):
    missing = tmp_path / "no-venv" / "bin" / "python"
    proc = run_script(
        "tools/train_peer.py",
        "--peer",
        "stardist",
        "--seed",
        "0",
        "--output-dir",
        tmp_path / "run",
        env={PEERS_PYTHON_ENV: str(missing)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train_peer.py: the peers' environment is missing ({missing}): make it with "
        "`bash tools/setup_env.sh --peers`"
    )
    assert not (tmp_path / "run").exists()


def _tiny_dsb2018(root):
    """DATASETS root whose dsb2018_train / dsb2018_val hold 3 / 2 synthetic images."""
    from maskrcnnpp.data.synthetic_nuclei import write_synthetic_nuclei_dataset

    (root / "dsb2018" / "annotations").mkdir(parents=True)
    for split, num_images, seed_base in (("train", 3, 1), ("val", 2, 1_000_001)):
        paths = write_synthetic_nuclei_dataset(
            root / f"src_{split}", num_images=num_images, seed_base=seed_base
        )
        coco = json.loads(pathlib.Path(paths["json_file"]).read_text())
        for image in coco["images"]:
            image["file_name"] = os.path.join(paths["image_root"], image["file_name"])
        (root / "dsb2018" / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    not PEERS_PYTHON.is_file(), reason=f"no {PEERS_ENV_NAME} (bash tools/setup_env.sh --peers)"
)
def test_each_peer_trains_predicts_and_is_scored(run_script, tmp_path):
    """A few training steps of StarDist and Cellpose (a 3-second budget: one batch, one epoch's
    checkpoint), prediction of 2 images and our evaluator's scores, through tools/compare.py."""
    _tiny_dsb2018(tmp_path / "datasets")
    root = tmp_path / "compare"
    proc = run_script(
        "tools/compare.py",
        "--output-root",
        root,
        "--seeds",
        "0",
        "--no-baseline",
        "--model",
        "stardist=peer:stardist",
        "TRAIN_MINUTES",
        "0.05",
        "--model",
        "cellpose=peer:cellpose",
        "TRAIN_MINUTES",
        "0.05",
        "--pair",
        "stardist",
        "cellpose",
        "--bootstrap-resamples",
        "100",
        "--threads",
        "1",
        env={"DETECTRON2_DATASETS": str(tmp_path / "datasets")},
        timeout=3500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for peer in ("stardist", "cellpose"):
        run = root / peer / "seed0"
        state = json.loads((run / "peer_state.json").read_text())
        assert (
            state["training_done"] and state["epochs_done"] == 1 and state["stopped_by"] == "budget"
        )
        assert sorted(p.name for p in (run / "predictions" / "dsb2018_val").iterdir()) == [
            "00000.tif",
            "00001.tif",
        ]
        per_image = json.loads(
            (run / "inference" / "dsb2018_val" / "nuclei_per_image.json").read_text()
        )
        assert sorted(r["image_id"] for r in per_image) == [1, 2]
        assert sum(r["num_gt"] for r in per_image) > 0  # image 0 of a synthetic set has no nucleus
        final = json.loads((run / "final_metrics.json").read_text())
        assert 0.0 <= final["results"]["dsb2018_val"]["nuclei"]["iou"] <= 1.0
        record = json.loads((run / "compare_run.json").read_text())
        assert record["attempts"][0]["threads"] == 1 and record["train_seconds"] > 0
    assert json.loads((root / "stardist" / "seed0" / "peer_state.json").read_text())[
        "thresholds_done"
    ]
    table = (root / "comparison.md").read_text()
    assert "| stardist |" in table and "| cellpose |" in table

    # a training stopped after its first epoch's checkpoint resumes from it: the state is set
    # back to "stopped", and a larger budget trains more epochs on top of the checkpoint
    for peer in ("stardist", "cellpose"):
        run = root / peer / "seed0"
        state = json.loads((run / "peer_state.json").read_text())
        state.update(training_done=False, thresholds_done=False)
        (run / "peer_state.json").write_text(json.dumps(state))
        proc = run_script(
            "tools/train_peer.py",
            "--peer",
            peer,
            "--seed",
            "0",
            "--minutes",
            "1",
            "--cores",
            "1",
            "--threads",
            "1",
            "--resume",
            "--output-dir",
            run,
            env={"DETECTRON2_DATASETS": str(tmp_path / "datasets")},
            timeout=1800,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        resumed = json.loads((run / "peer_state.json").read_text())
        assert resumed["training_done"] and resumed["epochs_done"] >= 2
        assert resumed["history"][:1] == state["history"][:1]
        assert resumed["cpu_seconds"] > state["cpu_seconds"]
