"""tools/evaluate_unetpp_levels.py: every pruned level and the ensemble scored from one pass."""

import json
import pathlib

import pytest
import torch
from detectron2.modeling import build_model

import maskrcnnpp  # noqa: F401
from maskrcnnpp.config import setup_cfg

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "quick" / "unetpp_vgg.yaml"


@pytest.mark.parametrize(
    "views",
    [
        # the project's own measurement tool: run on purpose (-m slow)
        pytest.param([], id="plain", marks=pytest.mark.slow),
        # eight views of every image: the same code path, 8x the time
        pytest.param(
            ["MODEL.UNETPP.TEST_DIHEDRAL_MEAN", "True"], id="dihedral_mean", marks=pytest.mark.slow
        ),
    ],
)
def test_levels_table_matches_the_pruned_models(tmp_path, views, run_script):
    torch.manual_seed(0)
    cfg = setup_cfg(str(QUICK), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    proc = run_script(
        "tools/evaluate_unetpp_levels.py",
        "--config-file",
        QUICK,
        "--runs",
        "1",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        weights,
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        tmp_path / "out",
        *views,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ensemble" in proc.stdout
    report = json.loads((tmp_path / "out" / "levels.json").read_text())
    levels = {r["level"]: r for r in report["levels"]}
    assert sorted(levels) == [0, 1, 2, 3, 4]
    # the heads are different predictors (random weights): their scores differ
    assert len({levels[k]["nuclei"]["iou"] for k in (1, 2, 3, 4)}) > 1
    params = [levels[k]["params"] for k in (1, 2, 3, 4)]
    assert params == sorted(params) and params[0] < params[-1]
    assert levels[4]["params"] == sum(p.numel() for p in model.parameters())
    for record in (levels[2], levels[0]):
        assert record["nuclei"]["num_images"] == 16
        assert 0.0 <= record["nuclei"]["iou"] <= 1.0
    # Level 2 from the one-pass evaluation equals the really pruned model's evaluation (with the
    # test-time mean over 8 views too).
    proc = run_script(
        "tools/train_net.py",
        "--config-file",
        QUICK,
        "--eval-only",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        weights,
        "MODEL.UNETPP.TEST_LEVEL",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        tmp_path / "pruned",
        *views,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pruned = json.loads((tmp_path / "pruned" / "final_metrics.json").read_text())["results"]
    nuclei = pruned["nuclei_synth_sem_seg_val"]["nuclei"]
    for key in ("iou", "dice", "dsb_score", "aji", "pq"):
        assert abs(nuclei[key] - levels[2]["nuclei"][key]) < 1e-6, key
