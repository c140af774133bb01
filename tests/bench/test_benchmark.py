"""tools/benchmark.py: a tiny run of every suite writes complete records; timing helpers."""

import json
import pathlib
import platform

import pytest
import torch

from maskrcnnpp_bench.flops import count_active_parameters
from maskrcnnpp_bench.runner import RECORD_FIELDS
from maskrcnnpp_bench.timing import median_paired_ratio, summarize_seconds, time_interleaved

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_interleaved_rounds_rotate_the_order():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = time_interleaved(functions, rounds=3, warmup=1, device="cpu")
    assert calls == list("abcbcacababc")
    assert all(len(s) == 3 and min(s) >= 0 for s in seconds.values())


def test_summaries_and_paired_ratios():
    summary = summarize_seconds([0.004, 0.001, 0.002, 0.003])
    assert summary["median"] == pytest.approx(2.5)
    assert (summary["min"], summary["max"], summary["runs"]) == (
        pytest.approx(1),
        pytest.approx(4),
        4,
    )
    assert summary["q1"] == pytest.approx(1.75) and summary["q3"] == pytest.approx(3.25)
    # per-round ratios 2, 3, 1.5: the median ignores the drift common to both series
    assert median_paired_ratio([2.0, 6.0, 3.0], [1.0, 2.0, 2.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        median_paired_ratio([1.0], [1.0, 2.0])


def test_active_parameters_count_only_the_modules_that_run():
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    model = torch.nn.Sequential(first, second)
    assert count_active_parameters(model, lambda: first(torch.zeros(1, 4))) == 20
    assert count_active_parameters(model, lambda: model(torch.zeros(1, 4))) == 30


def fake_training_run(root):
    """A run folder: 40 iterations logged every 10 at 2 s an iteration, evaluations (DSB score
    0.2, 0.35) after iterations 19 and 29, a final evaluation of 0.4."""
    run = root / "model" / "seed0"
    run.mkdir(parents=True)
    lines = [
        {"iteration": 9, "time": 2.0},
        {"iteration": 19, "time": 2.0},
        {"iteration": 19, "nuclei/dsb_score": 0.2},
        {"iteration": 29, "time": 2.0},
        {"iteration": 29, "nuclei/dsb_score": 0.35},
        {"iteration": 39, "time": 2.0},
    ]
    # a record of an iteration already logged would start a resumed run: evaluations share theirs
    lines = [lines[0], {**lines[1], **lines[2]}, {**lines[3], **lines[4]}, lines[5]]
    (run / "metrics.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "final_metrics.json").write_text(
        json.dumps({"results": {"val": {"nuclei": {"dsb_score": 0.4}}}})
    )
    return root


@pytest.mark.slow  # every suite of the project's own measurements, end to end
def test_tiny_run_of_every_suite_writes_complete_records(tmp_path, shared_dsb2018, run_script):
    pytest.importorskip("segmentation_models_pytorch")
    argv = [
        "--quick", "--threads", "1", "--devices", "cpu", "--runs", "2", "--warmup", "0",
        "--train-runs", "1", "--rcnn-opts", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        "--rcnn-sizes", "64", "--rcnn-designs", "unet++/sum/separable",
        "--proposals", "40", "--detections", "8",
        "--unetpp-sizes", "64", "--unetpp-batch", "1", "--predict-sizes", "32", "64",
        "--training-runs", str(fake_training_run(tmp_path / "runs")),
        "--quality-target", "nuclei/dsb_score=0.3",
        "--dsb-root", str(shared_dsb2018), "--prepare-images", "2", "--metrics-images", "2",
        "--output", str(tmp_path),
    ]  # fmt: skip
    proc = run_script("tools/benchmark.py", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "benchmark.json").read_text())["records"]
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Mask R-CNN++ | unet++/sum/separable |" in (tmp_path / "benchmark.md").read_text()
    for record in records:
        assert set(record) == set(RECORD_FIELDS), record["suite"]
    models = [
        r
        for r in records
        if r["suite"]
        not in ("throughput", "unetpp_predict", "time_to_quality", "training_precision")
    ]
    by_suite = {}
    for r in models:
        by_suite.setdefault(r["suite"], []).append(r)
    assert sorted(by_suite) == ["rcnn_backbone", "rcnn_model", "unetpp_levels", "unetpp_vs_smp"]
    assert [r["variant"] for r in by_suite["rcnn_model"]] == ["FPN", "unet++/sum/separable"]
    assert [r["variant"] for r in by_suite["unetpp_levels"]] == [
        "TEST_LEVEL 4",
        "TEST_LEVEL 1",
        "TEST_LEVEL 2",
        "TEST_LEVEL 3",
        "TEST_LEVEL 0 (ensemble)",
    ]
    for suite, group in by_suite.items():
        reference = group[0]
        assert reference["latency_ratio"] == 1.0 and reference["train_step_ratio"] == 1.0, suite
        assert all(r["reference"] == f"{reference['model']} {reference['variant']}" for r in group)
    for r in models:
        assert r["device"] == "cpu" and r["threads"] == 1 and r["params_m"] > 0
        assert r["gflops"] > 0
        assert (
            r["latency_ms"]["runs"] == 2 and 0 < r["latency_ms"]["min"] <= r["latency_ms"]["median"]
        )
        assert r["latency_ratio"] > 0
        assert r["peak_memory_mib"]["inference"]["mib"] >= 0
        if r["train_step_ms"] is not None:
            assert r["train_step_ms"]["runs"] == 1
            assert r["peak_memory_mib"]["train_step"]["mib"] >= 0
        assert r["machine"]["torch"] == torch.__version__
    # the detectors' counts are pinned: both keep exactly the asked numbers of boxes
    assert all(r["counts"] == {"proposals": 40, "detections": 8} for r in by_suite["rcnn_model"])
    # a pruned level runs a strict sub-network: fewer parameters, level after level
    active = [r["notes"]["active_params_m"] for r in by_suite["unetpp_levels"]]
    assert active[1] < active[2] < active[3] < active[0] == active[4]
    # predict: float32 / bfloat16 x one pass / one image, bfloat16 with its error
    predict = {r["variant"]: r for r in records if r["suite"] == "unetpp_predict"}
    assert sorted(predict) == ["bfloat16 image", "bfloat16 pass", "float32 image", "float32 pass"]
    assert (
        predict["float32 pass"]["latency_ratio"] == 1.0 and predict["float32 image"]["height"] == 64
    )
    # as tools/predict.py runs (glibc: tests/utils/test_cpu_memory.py)
    assert all(
        r["notes"]["memory_kept"] is (platform.libc_ver()[0] == "glibc") for r in predict.values()
    )
    assert all(r["notes"]["minor_page_faults"] >= 0 for r in predict.values())  # Linux
    assert 0 <= predict["bfloat16 image"]["notes"]["max_abs_prob_diff"] < 0.05
    assert predict["bfloat16 image"]["notes"]["same_class_fraction"] > 0.99
    # one training step of the quick UNet++ in float32 (the reference) and bfloat16
    steps = {r["variant"]: r for r in records if r["suite"] == "training_precision"}
    assert sorted(steps) == ["bfloat16", "float32"] and steps["float32"]["train_step_ratio"] == 1.0
    assert steps["bfloat16"]["train_step_ms"]["median"] > 0 and steps["bfloat16"]["batch"] == 8
    # the fake run reaches 0.3 at its second evaluation: 3 records of 2 s x 10 iterations
    (quality,) = [r["throughput"] for r in records if r["suite"] == "time_to_quality"]
    assert quality["minutes_to_target"] == pytest.approx(60 / 60) and quality["evaluations"] == 3
    assert quality["final_value"] == 0.4
    throughput = {r["model"]: r["throughput"] for r in records if r["suite"] == "throughput"}
    assert throughput["prepare_dsb2018"]["images"] == 2
    assert throughput["nuclei_metrics"]["images"] == 2
    assert all(t["seconds"] > 0 and t["images_per_s"] > 0 for t in throughput.values())


def test_inference_options_reach_the_models(tmp_path, run_script):
    argv = [
        "--quick", "--threads", "1", "--devices", "cpu", "--runs", "1", "--warmup", "0",
        "--suites", "rcnn_backbone", "--rcnn-sizes", "64", "--rcnn-designs", "unet++/sum/separable",
        "--fold-norms", "--channels-last", "--no-flops", "--output", str(tmp_path),
    ]  # fmt: skip
    proc = run_script("tools/benchmark.py", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "benchmark.json").read_text())["records"]
    assert len(records) == 2
    for record in records:
        assert record["notes"]["fold_norms"] and record["notes"]["channels_last"]
        assert record["notes"]["folded_norms"] == 20  # ResNet-18's FrozenBNs
        assert record["train_step_ms"] is None and record["gflops"] is None  # inference only


def test_pinned_detectors_keep_the_same_boxes_whatever_the_backbone():
    """Equal counts are not enough (ROIAlign's cost grows with box area): same boxes too."""
    from maskrcnnpp_bench.rcnn_cases import rcnn_cases

    cases = rcnn_cases(
        str(REPO_ROOT / "configs" / "Base-RCNN-FPN-Nuclei.yaml"),
        sizes=[96], devices=["cpu"], depth=18, designs=["unet++/sum/separable", "top_down/concat/plain"],
        suites=["rcnn_model"], proposals=30, detections=7,
    )  # fmt: skip
    boxes = []
    for case in cases:
        workload = case.build()
        proposals = []
        workload.module.proposal_generator.register_forward_hook(
            lambda module, inputs, output: proposals.append(output[0][0].proposal_boxes.tensor)
        )
        with torch.no_grad():
            detections = workload.module(workload.inputs)[0]["instances"].pred_boxes.tensor
        assert (len(proposals[0]), len(detections)) == (30, 7)
        boxes.append((proposals[0], detections))
    for proposals, detections in boxes[1:]:
        assert torch.equal(proposals, boxes[0][0]) and torch.equal(detections, boxes[0][1])


def test_quick_training_suite_takes_the_configs_batch_and_size():
    from maskrcnnpp_bench.rcnn_cases import quick_training_cases

    quick = REPO_ROOT / "configs" / "quick"
    configs = [str(quick / "mask_rcnn_FPN.yaml"), str(quick / "mask_rcnn_NestedFPN.yaml")]
    cases = quick_training_cases(configs, devices=["cpu"])
    assert [(c.model, c.variant, c.batch, c.height) for c in cases] == [
        ("Mask R-CNN", "mask_rcnn_FPN", 4, 256),
        ("Mask R-CNN++", "mask_rcnn_NestedFPN", 4, 256),
    ]
    workload = cases[1].build()
    assert len(workload.inputs) == len(workload.train_inputs) == 4
    # the configs' own limits, pinned: 500 proposals and 200 detections per image
    assert workload.infer() == {"proposals": 4 * 500, "detections": 4 * 200}
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        quick_training_cases(
            configs + [str(REPO_ROOT / "configs" / "Base-RCNN-FPN-Nuclei.yaml")], devices=["cpu"]
        )


def test_module_profile_accounts_for_the_whole_inference():
    """--profile-modules: every component timed, the parts add up to the total."""
    from maskrcnnpp_bench.module_profile import (
        COMPONENTS,
        format_module_profile,
        profile_case_group,
    )
    from maskrcnnpp_bench.rcnn_cases import rcnn_cases

    cases = rcnn_cases(
        str(REPO_ROOT / "configs" / "Base-RCNN-FPN-Nuclei.yaml"),
        sizes=[96], devices=["cpu"], depth=18, designs=["unet++/sum/separable"],
        suites=["rcnn_model"], proposals=30, detections=7,
    )  # fmt: skip
    profile = profile_case_group(cases, rounds=1, warmup=0)
    fpn, nested = (profile["ms"][c.name] for c in cases)
    assert fpn["nested nodes X(i, j>=1)"] == 0 < nested["nested nodes X(i, j>=1)"]
    parts = [name for name, _ in COMPONENTS] + [
        "neck outside its convs (up-sampling, sums, layout)",
        "rest (pre- and post-processing)",
    ]
    for ms in (fpn, nested):
        assert min(ms["bottom-up"], ms["output convs"], ms["RPN"], ms["ROI heads"]) > 0
        assert sum(ms[p] for p in parts) == pytest.approx(ms["total"], rel=1e-6)
        assert ms["bottom-up"] < ms["backbone"] < ms["total"]
    table = format_module_profile(profile)
    assert "| nested nodes X(i, j>=1) | 0 |" in table and "| total |" in table


def test_instance_prediction_profile_accounts_for_the_whole_prediction(tmp_path):
    """benchmark_peers.py's profile: the stages of one prediction add up to its total, the
    hooks and wrappers are gone afterwards, and a semantic model has no profile."""
    from detectron2.modeling import build_model
    from detectron2.modeling.meta_arch import rcnn

    from maskrcnnpp.config.setup import setup_cfg
    from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
    from maskrcnnpp_bench.peer_speed import (
        PREDICTION_STAGES,
        OurModel,
        format_peer_speed,
        profile_instance_prediction,
    )

    image = generate_synthetic_nuclei_image(0, image_size=128)[0][:96]
    shipped = REPO_ROOT / "maskrcnnpp" / "model_zoo" / "configs" / "mask_rcnnpp_nuclei.yaml"
    model = OurModel("nested", str(shipped), ["MODEL.WEIGHTS", "maskrcnnpp://mask_rcnnpp_nuclei"])
    model.load("image", image)
    paste = rcnn.detector_postprocess
    profile = profile_instance_prediction(model, "image", rounds=1, warmup=0)
    ms = profile["ms"]
    assert list(ms) == list(PREDICTION_STAGES)
    assert sum(ms[s] for s in PREDICTION_STAGES[:-1]) == pytest.approx(ms["total"], rel=1e-6)
    for stage in ("backbone", "RPN", "ROI box head", "ROI mask head"):
        assert ms[stage] > 0, stage
    assert ms["mask paste at image size (detector_postprocess)"] > 0
    assert min(ms.values()) >= 0
    assert profile["tiles"] == 1 and profile["nuclei"] > 0
    assert rcnn.detector_postprocess is paste and "run_model" not in vars(model.predictor)

    semantic_config = str(REPO_ROOT / "configs" / "quick" / "unetpp_vgg.yaml")
    torch.manual_seed(0)
    weights = tmp_path / "unetpp.pth"
    torch.save({"model": build_model(setup_cfg(semantic_config, [])).state_dict()}, weights)
    semantic = OurModel("unetpp", semantic_config, ["MODEL.WEIGHTS", str(weights)])
    semantic.load("image", image)
    assert profile_instance_prediction(semantic, "image", rounds=1, warmup=0) is None

    timing = {"ms": {"median": 10.0, "q1": 9.0, "q3": 11.0}, "ratio_to_reference": 1.0}
    result = {
        "what": "w",
        "threads": 1,
        "rounds": 1,
        "num_images": 1,
        "reference": "nested",
        "models": {"nested": "ours"},
        "latency": {"96": {"nested": timing}},
        "throughput": {
            "nested": {"seconds": 1.0, "images_per_second": 1.0, "ratio_to_reference": 1.0}
        },
        "profile": {"side": 96, "models": {"nested": profile}},
    }
    table = format_peer_speed(result)
    assert "## Where our instance models spend a 96x96 prediction" in table
    assert f"| total | {ms['total']:.0f} | 100 |" in table
