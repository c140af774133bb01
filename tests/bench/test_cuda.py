"""
The models, the training loop, prediction and the benchmark on CUDA, each against the CPU where
the result must be the same. Skipped where torch sees no GPU (CI has none); run on a GPU
machine with ``pytest tests/bench/test_cuda.py``.
"""

import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage

from maskrcnnpp.config.setup import setup_cfg
from maskrcnnpp_bench.rcnn_cases import random_nuclei_instances

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "quick"


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 would make CUDA and CPU differ by ~1e-3 for reasons that are not ours."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _relative_difference(a, b):
    return (
        (a.float().cpu() - b.float().cpu()).abs().max() / b.float().abs().max().clamp_min(1e-12)
    ).item()


@pytest.mark.parametrize(
    "skip,fusion,node_conv",
    [("unet++", "sum", "separable"), ("unet++", "concat", "plain"), ("unet+", "sum", "plain")],
)
def test_nested_fpn_on_cuda_equals_cpu(skip, fusion, node_conv):
    cfg = setup_cfg(
        str(QUICK / "mask_rcnn_NestedFPN.yaml"),
        [
            "MODEL.NESTED_FPN.SKIP",
            skip,
            "MODEL.NESTED_FPN.FUSION",
            fusion,
            "MODEL.NESTED_FPN.NODE_CONV",
            node_conv,
        ],
    )
    torch.manual_seed(0)
    backbone = build_backbone(cfg).eval()
    image = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        expected = backbone(image)
        outputs = backbone.cuda()(image.cuda())
    assert list(outputs) == list(expected)
    for name, output in outputs.items():
        assert output.is_cuda and output.is_contiguous()
        assert _relative_difference(output, expected[name]) < 1e-4, name


def _mask_rcnnpp_on_cuda():
    cfg = setup_cfg(str(QUICK / "mask_rcnn_NestedFPN.yaml"), ["MODEL.DEVICE", "cuda"])
    torch.manual_seed(0)
    return build_model(cfg)


def test_mask_rcnnpp_trains_and_infers_on_cuda():
    model = _mask_rcnnpp_on_cuda()
    assert all(p.is_cuda for p in model.parameters())
    images = [torch.rand(3, 256, 256, device="cuda") * 255 for _ in range(2)]
    batch = [
        {
            "image": image,
            "height": 256,
            "width": 256,
            "instances": random_nuclei_instances(256, 256, 12, k),
        }
        for k, image in enumerate(images)
    ]  # the ground truth stays on the CPU, as the data loader gives it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.is_cuda
    total.backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in model.backbone.x_0_3.parameters())
    optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": image, "height": 200, "width": 300} for image in images])
    for output in outputs:
        instances = output["instances"]
        assert instances.pred_boxes.tensor.is_cuda
        assert instances.pred_masks.shape[1:] == (200, 300)


@pytest.mark.parametrize("test_level", [0, 1, 2, 3, 4])
def test_semantic_unetpp_on_cuda_equals_cpu_at_every_level(test_level):
    cfg = setup_cfg(str(QUICK / "unetpp_vgg.yaml"), ["MODEL.UNETPP.TEST_LEVEL", str(test_level)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.rand(3, 97, 131) * 255
    with torch.no_grad():
        expected = model([{"image": image}])[0]["sem_seg"]
        model.to("cuda")  # the pixel mean / std buffers too: the model's device follows them
        output = model([{"image": image.cuda()}])[0]["sem_seg"]
    assert output.is_cuda and output.shape == expected.shape == (2, 97, 131)
    assert _relative_difference(output, expected) < 1e-4


def test_semantic_unetpp_trains_on_cuda():
    cfg = setup_cfg(str(QUICK / "unetpp_vgg.yaml"), ["MODEL.DEVICE", "cuda"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = [
        {"image": torch.rand(3, 96, 96) * 255, "sem_seg": (torch.rand(96, 96) > 0.7).long()}
        for _ in range(2)
    ]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {f"loss_sem_seg_x_0_{j}" for j in range(1, 5)}  # deep supervision
    total = sum(losses.values())
    assert torch.isfinite(total) and total.is_cuda
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _run(script, args, tmp_path):
    # TF32 off in the tools' processes too (the fixture reaches this process only)
    env = dict(os.environ, MASKRCNNPP_CACHE=str(tmp_path / "cache"), NVIDIA_TF32_OVERRIDE="0")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_net_predict_on_cuda(tmp_path):
    out = tmp_path / "run"
    _run(
        "train_net.py",
        ["--config-file", str(QUICK / "mask_rcnn_NestedFPN.yaml"), "MODEL.DEVICE", "cuda",
         "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "10", "DATALOADER.NUM_WORKERS", "2",
         "TEST.NUCLEI.NUM_VIS", "1", "OUTPUT_DIR", str(out)],
        tmp_path,
    )  # fmt: skip
    final = json.loads((out / "final_metrics.json").read_text())["results"]["nuclei_synth_val"]
    assert final["nuclei"]["num_images"] == 16 and 0.0 <= final["nuclei"]["iou"] <= 1.0
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == 19  # a checkpoint of a CUDA run loads onto the CPU

    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    predicted = {}
    for device in ("cuda", "cpu"):
        _run(
            "predict.py",
            ["--config-file", str(QUICK / "mask_rcnn_NestedFPN.yaml"), "--input", str(tmp_path / "a.png"),
             "--output", str(tmp_path / device), "MODEL.WEIGHTS", str(out / "model_final.pth"),
             "MODEL.DEVICE", device, "TEST.PREDICT.SCORE_THRESH", "0.0"],
            tmp_path,
        )  # fmt: skip
        predicted[device] = json.loads(
            (tmp_path / device / "coco_instances_results.json").read_text()
        )
    # Float sums differ between the devices, so a box at an NMS or threshold edge may flip
    # (measured: 143 vs 142 of them); every confident CPU detection must be found on CUDA.
    assert abs(len(predicted["cuda"]) - len(predicted["cpu"])) <= 0.02 * len(predicted["cpu"]) + 1
    on_cuda = np.array([r["bbox"] for r in predicted["cuda"]], dtype=float)
    on_cuda_scores = np.array([r["score"] for r in predicted["cuda"]])
    confident = sorted(predicted["cpu"], key=lambda r: -r["score"])[:20]
    assert confident
    for result in confident:
        distance = np.abs(on_cuda - np.array(result["bbox"], dtype=float)).max(axis=1)
        same = (distance <= 1) & (np.abs(on_cuda_scores - result["score"]) < 1e-3)
        assert same.any(), result


def test_benchmark_on_cuda_records_cuda_memory(tmp_path):
    _run(
        "benchmark.py",
        ["--quick", "--devices", "cuda", "--suites", "rcnn_model", "unetpp_levels", "--output", str(tmp_path / "b")],
        tmp_path,
    )  # fmt: skip
    records = json.loads((tmp_path / "b" / "benchmark.json").read_text())["records"]
    assert {r["suite"] for r in records} == {"rcnn_model", "unetpp_levels"}
    for record in records:
        assert record["device"] == "cuda" and record["latency_ms"]["median"] > 0
        memory = record["peak_memory_mib"]["inference"]
        assert memory["mib"] > 0 and "max_memory_allocated" in memory["method"]
