"""keep_freed_memory: counted in minor page faults of a fresh process
that allocates and frees the same 64 MiB tensor ten times."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

PAGES_PER_TENSOR = 64 * 2**20 // 4096
_CHILD = r"""
import json, resource, sys, torch
from maskrcnnpp.utils.cpu_memory import keep_freed_memory
applied = {"keep": keep_freed_memory, "none": lambda: None}
steps = {}
for step in sys.argv[1:]:
    result = applied[step]()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, written
        del x
    steps[step] = {"applied": result, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}
print(json.dumps(steps))
"""


def _faults(*steps, env=None):
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *steps],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults():
    steps = _faults("none", "keep")
    # glibc's default maps and unmaps every 64 MiB block: each allocation faults all its pages
    assert steps["none"]["faults"] >= 8 * PAGES_PER_TENSOR
    # kept: the first block's pages at most, then the same memory again
    assert steps["keep"]["applied"] is True
    assert steps["keep"]["faults"] <= 3 * PAGES_PER_TENSOR


def test_the_users_glibc_environment_wins():
    steps = _faults("keep", env={"MALLOC_MMAP_MAX_": "65536"})
    assert steps["keep"]["applied"] is False
    assert steps["keep"]["faults"] >= 8 * PAGES_PER_TENSOR


def test_predictions_are_the_same_with_memory_kept(tmp_path, run_script):
    """tools/predict.py keeps freed memory: recycled (not zeroed) memory must not change a
    single output. The same weights and a 1024x1024 image (maps above glibc's 32 MiB mmap
    threshold) with memory kept and with glibc's default."""
    import cv2
    import numpy as np
    import torch
    from detectron2.modeling import build_model

    from maskrcnnpp.config import setup_cfg

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = os.path.join(repo, "configs", "quick", "unetpp_vgg.yaml")
    torch.manual_seed(0)
    model = build_model(setup_cfg(config, ["MODEL.DEVICE", "cpu"]))
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    image = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), image)
    outputs = {}
    for mode, env in (("kept", None), ("given back", {"MALLOC_MMAP_MAX_": "65536"})):
        out = tmp_path / mode.replace(" ", "_")
        proc = run_script(
            "tools/predict.py",
            "--config-file",
            config,
            "--input",
            tmp_path / "big.png",
            "--output",
            out,
            "MODEL.WEIGHTS",
            weights,
            "TEST.PREDICT.SCORE_THRESH",
            "0.0",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[mode] = (
            (out / "labels" / "big.png").read_bytes(),
            (out / "coco_instances_results.json").read_text(),
        )
    labels = cv2.imread(str(tmp_path / "kept" / "labels" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert labels.max() > 0  # random weights on noise: nuclei to compare
    assert outputs["kept"] == outputs["given back"]
