"""tools/train_net.py end to end on the synthetic nuclei: train a few iterations, evaluate,
write the metrics, the plot and the pictures; evaluate again from the checkpoint."""

import json
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "quick" / "mask_rcnn_FPN.yaml"


def _run(run_script, args):
    # two OpenMP threads (the fixture's default is one); MASKRCNNPP_CACHE is the session's
    proc = run_script("tools/train_net.py", *args, env={"OMP_NUM_THREADS": "2"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_iterations_then_eval_only(tmp_path, run_script):
    out = tmp_path / "run"
    log = _run(
        run_script,
        [
            "--config-file",
            str(QUICK),
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "TEST.DETECTIONS_PER_IMAGE",
            "50",
            "TEST.NUCLEI.SCORE_THRESH",
            "0.0",
            "TEST.NUCLEI.NUM_VIS",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(out),
        ],
    )
    assert "Results on nuclei_synth_val" in log and "| mask_rcnn_FPN " in log
    final = json.loads((out / "final_metrics.json").read_text())["results"]["nuclei_synth_val"]
    assert set(final) >= {"bbox", "segm", "nuclei"}
    assert {"AP", "AP50", "AP75"} <= set(final["segm"])
    nuclei = final["nuclei"]
    assert nuclei["num_images"] == 16
    for key in ("iou", "dice", "iou_pooled", "dice_pooled", "dsb_score", "aji", "pq"):
        assert 0.0 <= nuclei[key] <= 1.0, key
    assert (out / "training_curves.png").stat().st_size > 1000
    assert len(list((out / "inference" / "nuclei_synth_val" / "worst_images").glob("*.png"))) == 2
    # the checkpoint is complete and last_checkpoint names it
    last = (out / "last_checkpoint").read_text().strip()
    assert last == "model_final.pth"
    state = torch.load(out / last, map_location="cpu", weights_only=False)
    assert state["iteration"] == 1 and "model" in state

    log = _run(
        run_script,
        [
            "--config-file",
            str(QUICK),
            "--eval-only",
            "MODEL.WEIGHTS",
            str(out / "model_final.pth"),
            "TEST.DETECTIONS_PER_IMAGE",
            "50",
            "TEST.NUCLEI.SCORE_THRESH",
            "0.0",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "eval"),
        ],
    )
    again = json.loads((tmp_path / "eval" / "final_metrics.json").read_text())["results"]
    # same weights, same data: the same numbers
    assert again["nuclei_synth_val"]["nuclei"] == nuclei


QUICK_UNETPP = REPO / "configs" / "quick" / "unetpp_vgg.yaml"


# CI covers its parts: semantic training (tests/engine/test_semantic_training.py), pruned
# evaluation (tests/modeling/test_semantic_unetpp.py) and train_net.py (the instance tests here)
@pytest.mark.slow
def test_unetpp_trains_then_evaluates_pruned(tmp_path, run_script):
    out = tmp_path / "unetpp"
    log = _run(
        run_script,
        [
            "--config-file",
            str(QUICK_UNETPP),
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "TEST.NUCLEI.NUM_VIS",
            "1",
            "OUTPUT_DIR",
            str(out),
        ],
    )
    assert "Results on nuclei_synth_sem_seg_val" in log
    final = json.loads((out / "final_metrics.json").read_text())["results"][
        "nuclei_synth_sem_seg_val"
    ]
    assert {"mIoU", "fwIoU"} <= set(final["sem_seg"])
    assert final["nuclei"]["num_images"] == 16
    for key in ("iou", "dice", "dsb_score", "aji", "pq"):
        assert 0.0 <= final["nuclei"][key] <= 1.0, key
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert {f"heads.x_0_{j}.weight" for j in range(1, 5)} <= set(state["model"])

    _run(
        run_script,
        [
            "--config-file",
            str(QUICK_UNETPP),
            "--eval-only",
            "MODEL.WEIGHTS",
            str(out / "model_final.pth"),
            "MODEL.UNETPP.TEST_LEVEL",
            "3",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "pruned"),
        ],
    )
    pruned = json.loads((tmp_path / "pruned" / "final_metrics.json").read_text())["results"]
    assert pruned["nuclei_synth_sem_seg_val"]["nuclei"]["num_images"] == 16
