"""tools/compare.py and maskrcnnpp.comparison.tables: the table's numbers against the per-run
JSONs, resume (finished runs skipped, stopped ones resumed), the paired bootstrap."""

import json
import os
import pathlib
import statistics

import numpy as np
import pytest

from maskrcnnpp.comparison.runs import ModelSpec, parse_model_spec, plan_runs
from maskrcnnpp.comparison.tables import (
    format_comparison_markdown,
    paired_bootstrap,
    run_comparison,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
FPN = REPO / "configs" / "quick" / "mask_rcnn_FPN.yaml"
NESTED = REPO / "configs" / "quick" / "mask_rcnn_NestedFPN.yaml"
UNETPP = REPO / "configs" / "quick" / "unetpp_vgg.yaml"
# a few seconds a run: 2 iterations of one small image, 128-px inputs, no pictures
TINY = [
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "INPUT.SCALE_FACTOR_TRAIN",
    "(0.5, 0.5)",
    "INPUT.SCALE_FACTOR_TEST",
    "0.5",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
    "TEST.NUCLEI.SCORE_THRESH",
    "0.0",
    "TEST.NUCLEI.NUM_VIS",
    "0",
    "DATALOADER.NUM_WORKERS",
    "0",
]
METRICS = [
    ("segm", "AP"),
    ("segm", "AP50"),
    ("segm", "AP75"),
    ("nuclei", "iou"),
    ("nuclei", "dice"),
    ("nuclei", "dsb_score"),
    ("nuclei", "aji"),
    ("nuclei", "pq"),
]


def _compare(run_script, root, *extra):
    proc = run_script(
        "tools/compare.py",
        "--output-root",
        root,
        "--seeds",
        "0",
        "1",
        "--model",
        f"fpn={FPN}",
        "--model",
        f"nested={NESTED}",
        "--pair",
        "fpn",
        "nested",
        "--pair",
        "classical",
        "nested",
        "--jobs",
        "2",
        "--threads",
        "1",
        "--bootstrap-resamples",
        "2000",
        "--opts",
        *TINY,
        *extra,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _final(root, model, seed):
    path = root / model / f"seed{seed}" / "final_metrics.json"
    return json.loads(path.read_text())["results"]["nuclei_synth_val"]


def _per_image(root, model, seed, key):
    path = root / model / f"seed{seed}" / "inference" / "nuclei_synth_val" / "nuclei_per_image.json"
    return {p["image_id"]: p[key] for p in json.loads(path.read_text())}


@pytest.mark.timeout(400)
def test_compare_tool_trains_tabulates_and_resumes(tmp_path, run_script):
    """2 configs x 2 seeds x 2 iterations on the synthetic nuclei (about a minute on 2 busy
    cores: four train_net.py start-ups two at a time, then one resumed)."""
    root = tmp_path / "cmp"
    stdout = _compare(run_script, root)
    comparison = json.loads((root / "comparison.json").read_text())
    assert list(comparison["datasets"]) == ["nuclei_synth_val"]
    block = comparison["datasets"]["nuclei_synth_val"]
    assert block["num_images"] == 16
    assert list(block["models"]) == ["fpn", "nested", "classical"]

    # mean and sample sd over seeds, by hand from each run's final_metrics.json
    for model in ("fpn", "nested"):
        row = block["models"][model]
        assert row["evaluated_on"] == "nuclei_synth_val" and row["num_seeds"] == 2
        for task, key in METRICS:
            values = [_final(root, model, seed)[task][key] for seed in (0, 1)]
            assert row["mean"][f"{task}/{key}"] == pytest.approx(statistics.mean(values), abs=1e-12)
            assert row["sd"][f"{task}/{key}"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        seconds = [
            json.loads((root / model / f"seed{s}" / "compare_run.json").read_text())["attempts"][0][
                "wall_seconds"
            ]
            for s in (0, 1)
        ]
        assert row["train_minutes_mean"] == pytest.approx(statistics.mean(seconds) / 60)
        assert all(s > 1 for s in seconds)
    baseline = block["models"]["classical"]
    assert baseline["train_minutes_mean"] == 0.0 and baseline["mean"]["segm/AP"] is None
    assert baseline["sd"]["nuclei/dsb_score"] == 0.0 and 0 < baseline["mean"]["nuclei/iou"] <= 1

    # the pair: per image averaged over seeds, then B - A; the CI holds the observed mean
    fpn_nested = block["pairs"][0]
    assert (fpn_nested["a"], fpn_nested["b"]) == ("fpn", "nested")
    for key in ("dsb_score", "iou"):
        a = [_per_image(root, "fpn", s, key) for s in (0, 1)]
        b = [_per_image(root, "nested", s, key) for s in (0, 1)]
        by_hand = [np.mean([b[0][i], b[1][i]]) - np.mean([a[0][i], a[1][i]]) for i in a[0]]
        stats = fpn_nested["metrics"][key]
        assert stats["differences"] == pytest.approx(by_hand)
        assert stats["mean"] == pytest.approx(np.mean(by_hand))
        assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
        assert stats["b_better"] + stats["a_better"] <= 16

    # the Markdown table: header, one row per model with "mean ± sd", '-' for no segm AP
    markdown = (root / "comparison.md").read_text()
    assert markdown in stdout
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert header.split(" | ")[1:4] == ["evaluated on", "seeds", "train min/run"]
    assert header.rstrip(" |").endswith(
        "| fg IoU | fg IoU pooled | Dice | DSB | AJI | PQ | TP/(TP+FP+FN) IoU 0.5 pooled"
    )
    fpn_row = next(line for line in lines if line.startswith("| fpn |")).split(" | ")
    mean, sd = (
        block["models"]["fpn"]["mean"]["nuclei/dsb_score"],
        block["models"]["fpn"]["sd"]["nuclei/dsb_score"],
    )
    assert f"{mean:.4f} ± {sd:.4f}" in fpn_row and fpn_row[2] == "2"
    classical_row = next(
        line for line in lines if line.startswith("| classical (Otsu + watershed) |")
    )
    assert classical_row.split(" | ")[4] == "-" and "deterministic" in classical_row
    assert "| fpn | nested | 16 |" in markdown and "ddof=1" in markdown
    assert (root / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # rerun: finished runs are skipped, a stopped one (checkpoint, no final metrics) resumed
    stopped = root / "nested" / "seed1"
    (stopped / "final_metrics.json").unlink()
    assert (stopped / "last_checkpoint").is_file()
    finished = [
        root / m / f"seed{s}" / "final_metrics.json"
        for m in ("fpn", "nested")
        for s in (0, 1)
        if (m, s) != ("nested", 1)
    ]
    mtimes = [p.stat().st_mtime_ns for p in finished]
    _compare(run_script, root)
    assert [p.stat().st_mtime_ns for p in finished] == mtimes
    for path in finished:
        assert len(json.loads((path.parent / "compare_run.json").read_text())["attempts"]) == 1
    record = json.loads((stopped / "compare_run.json").read_text())
    assert [a["resumed"] for a in record["attempts"]] == [False, True]
    assert "--resume" in record["attempts"][1]["command"]
    assert record["train_seconds"] == pytest.approx(
        sum(a["wall_seconds"] for a in record["attempts"])
    )
    again = json.loads((root / "comparison.json").read_text())["datasets"]["nuclei_synth_val"]
    assert again["models"]["nested"]["train_minutes_per_run"]["1"] == pytest.approx(
        record["train_seconds"] / 60
    )
    assert again["models"]["fpn"]["mean"] == block["models"]["fpn"]["mean"]


# -------------------------------------------------------------------------------------------
# Without training: a fake train_net.py that writes what the real one writes.
# -------------------------------------------------------------------------------------------


def _fake_runner(dataset, calls, metrics_of, per_image_dataset=None):
    """runner(command, env, log) writing final_metrics.json, nuclei_per_image.json and a checkpoint."""

    def runner(command, env, log_path):
        calls.append((command, env))
        output_dir = pathlib.Path(command[command.index("OUTPUT_DIR") + 1])
        seed = int(command[command.index("SEED") + 1])
        results, per_image = metrics_of(output_dir.parent.name, seed)
        inference = output_dir / "inference" / (per_image_dataset or dataset)
        inference.mkdir(parents=True, exist_ok=True)
        (inference / "nuclei_per_image.json").write_text(json.dumps(per_image))
        (output_dir / "last_checkpoint").write_text("model_final.pth")
        (output_dir / "final_metrics.json").write_text(
            json.dumps(
                {
                    "config_file": command[command.index("--config-file") + 1],
                    "results": {dataset: results},
                }
            )
        )
        return 0

    return runner


def _metrics(model, seed):
    base = {"fpn": 0.4, "nested": 0.5, "unet": 0.3}[model] + 0.01 * seed
    results = {
        "nuclei": {
            "iou": base,
            "dice": base + 0.1,
            "dsb_score": base - 0.1,
            "aji": base,
            "pq": base,
        }
    }
    if model != "unet":
        results["segm"] = {"AP": 100 * base, "AP50": 100 * base + 5, "AP75": 100 * base - 5}
    per_image = [
        {"image_id": i, "dsb_score": base + 0.01 * i, "iou": base - 0.01 * i} for i in range(5)
    ]
    return results, per_image


def test_rerun_skips_finished_and_resumes_stopped(tmp_path):
    calls = []
    runner = _fake_runner("nuclei_synth_val", calls, _metrics)
    models = [
        ModelSpec("fpn", str(FPN), ("SOLVER.MAX_ITER", "2")),
        ModelSpec("nested", str(NESTED)),
    ]
    kwargs = dict(pairs=[("fpn", "nested")], baseline=False, runner=runner, resamples=500)
    first = run_comparison(models, [0, 1, 2], str(tmp_path), jobs=2, threads=1, **kwargs)
    assert len(calls) == 6
    assert all("--resume" not in c for c, _ in calls)
    assert {env["OMP_NUM_THREADS"] for _, env in calls} == {"1"}
    command = next(c for c, _ in calls if c[-1] == str(tmp_path / "fpn" / "seed0"))
    assert command[-4:] == ["SEED", "0", "OUTPUT_DIR", str(tmp_path / "fpn" / "seed0")]
    assert command[command.index("SOLVER.MAX_ITER") + 1] == "2"

    rows = first["datasets"]["nuclei_synth_val"]["models"]
    assert rows["fpn"]["mean"]["nuclei/iou"] == pytest.approx(0.41)
    assert rows["fpn"]["sd"]["nuclei/iou"] == pytest.approx(0.01)  # ddof=1 of 0.40, 0.41, 0.42
    pair = first["datasets"]["nuclei_synth_val"]["pairs"][0]["metrics"]["dsb_score"]
    assert pair["mean"] == pytest.approx(0.1) and pair["b_better"] == 5

    calls.clear()
    (tmp_path / "nested" / "seed2" / "final_metrics.json").unlink()
    run_comparison(models, [0, 1, 2], str(tmp_path), threads=3, **kwargs)
    assert len(calls) == 1
    command, env = calls[0]
    assert "--resume" in command and command[-3] == str(2) and env["OMP_NUM_THREADS"] == "3"
    record = json.loads((tmp_path / "nested" / "seed2" / "compare_run.json").read_text())
    assert [a["resumed"] for a in record["attempts"]] == [False, True]

    # the same folders with other overrides: refused, naming the file and the values
    changed = [ModelSpec("fpn", str(FPN), ("SOLVER.MAX_ITER", "3")), models[1]]
    with pytest.raises(ValueError, match=r"fpn/seed0/compare_run.json.*opts.*'2'.*'3'"):
        run_comparison(changed, [0, 1, 2], str(tmp_path), **kwargs)

    # records written by a checkout at another place are still this config's: read, not retrained
    record_path = tmp_path / "fpn" / "seed1" / "compare_run.json"
    record = json.loads(record_path.read_text())
    record["config_file"] = (
        "/elsewhere/checkout/" + record["config_file"][record["config_file"].rfind("configs/") :]
    )
    record_path.write_text(json.dumps(record))
    calls.clear()
    run_comparison(models, [0, 1, 2], str(tmp_path), **kwargs)
    assert calls == []
    # ... but another config in the same folder is refused
    with pytest.raises(ValueError, match=r"fpn/seed0/compare_run.json.*config_file"):
        run_comparison(
            [ModelSpec("fpn", str(NESTED), ("SOLVER.MAX_ITER", "2")), models[1]],
            [0, 1, 2],
            str(tmp_path),
            **kwargs,
        )


def test_killed_attempt_counts_until_its_last_checkpoint(tmp_path):
    """A comparison killed mid-run leaves an attempt without wall time: the resumed run writes
    into it the time up to the stopped run's newest checkpoint, not up to checkpoints the
    resumed run itself writes later."""
    calls = []
    fake = _fake_runner("nuclei_synth_val", calls, _metrics)

    def runner(command, env, log_path):
        (pathlib.Path(command[-1]) / "model_final.pth").write_bytes(b"resumed run's checkpoint")
        return fake(command, env, log_path)

    run_dir = tmp_path / "fpn" / "seed0"
    run_dir.mkdir(parents=True)
    started = 1_700_000_000.0
    record = {
        "config_file": str(FPN),
        "opts": [],
        "seed": 0,
        "attempts": [{"command": [], "resumed": False, "started": started, "wall_seconds": None}],
    }
    (run_dir / "compare_run.json").write_text(json.dumps(record))
    for iteration, seconds in ((99, 120.0), (199, 300.0)):
        checkpoint = run_dir / f"model_{iteration:07d}.pth"
        checkpoint.write_bytes(b"stopped run's checkpoint")
        os.utime(checkpoint, (started + seconds, started + seconds))
    (run_dir / "last_checkpoint").write_text("model_0000199.pth")
    run_comparison([ModelSpec("fpn", str(FPN))], [0], str(tmp_path), baseline=False, runner=runner)
    assert len(calls) == 1 and "--resume" in calls[0][0]
    record = json.loads((run_dir / "compare_run.json").read_text())
    stopped, resumed = record["attempts"]
    assert stopped["wall_seconds"] == pytest.approx(300.0) and stopped["stopped"] is True
    assert resumed["resumed"] is True and "stopped" not in resumed
    assert record["train_seconds"] == pytest.approx(300.0 + resumed["wall_seconds"])


def _runner_by_model(model, special, default):
    """The fake runner ``special`` for the runs of ``model``, ``default`` for the others."""

    def runner(command, env, log_path):
        chosen = special if pathlib.Path(command[-1]).parent.name == model else default
        return chosen(command, env, log_path)

    return runner


def test_semantic_model_shares_the_images_and_shows_dashes(tmp_path):
    """A semantic run (scored on nuclei_synth_sem_seg_val, the images of nuclei_synth_val) sits in
    the same table; its missing segm AP shows as '-'."""
    calls = []
    runner = _runner_by_model(
        "unet",
        _fake_runner("nuclei_synth_sem_seg_val", calls, _metrics),
        _fake_runner("nuclei_synth_val", calls, _metrics),
    )
    models = [ModelSpec("fpn", str(FPN)), ModelSpec("unet", str(UNETPP))]
    out = run_comparison(
        models,
        [0, 1],
        str(tmp_path),
        pairs=[("unet", "fpn")],
        baseline=False,
        runner=runner,
        resamples=200,
    )
    block = out["datasets"]["nuclei_synth_val"]
    assert block["models"]["unet"]["evaluated_on"] == "nuclei_synth_sem_seg_val"
    assert block["models"]["unet"]["mean"]["segm/AP"] is None
    unet_row = next(
        line for line in format_comparison_markdown(out).splitlines() if line.startswith("| unet |")
    )
    assert unet_row.split(" | ")[4:7] == ["-", "-", "-"]
    assert block["pairs"][0]["metrics"]["iou"]["mean"] == pytest.approx(0.1)


def test_table_only_tabulates_the_finished_runs_and_names_the_others(tmp_path):
    calls = []
    models = [ModelSpec("fpn", str(FPN)), ModelSpec("nested", str(NESTED))]
    run_comparison(
        models,
        [0],
        str(tmp_path),
        baseline=False,
        resamples=200,
        runner=_fake_runner("nuclei_synth_val", calls, _metrics),
    )
    assert len(calls) == 2

    def must_not_train(command, env, log_path):
        raise AssertionError(f"--table-only trained {command}")

    out = run_comparison(
        models,
        [0, 1],
        str(tmp_path),
        pairs=[("fpn", "nested")],
        baseline=False,
        resamples=200,
        runner=must_not_train,
        train=False,
    )
    assert out["not_finished"] == ["fpn/seed1", "nested/seed1"]
    block = out["datasets"]["nuclei_synth_val"]
    assert block["models"]["fpn"]["num_seeds"] == 1
    assert block["models"]["nested"]["mean"]["nuclei/dsb_score"] == pytest.approx(
        _metrics("nested", 0)[0]["nuclei"]["dsb_score"]
    )
    markdown = (tmp_path / "comparison.md").read_text()
    assert "Not finished, left out: fpn/seed1, nested/seed1." in markdown
    assert not (tmp_path / "fpn" / "seed1").exists()
    with pytest.raises(ValueError, match="no finished run"):
        run_comparison(
            models, [5], str(tmp_path), baseline=False, runner=must_not_train, train=False
        )


def test_refuses_runs_on_different_datasets(tmp_path):
    calls = []
    runner = _runner_by_model(
        "nested",
        _fake_runner("nuclei_synth_train", calls, _metrics),
        _fake_runner("nuclei_synth_val", calls, _metrics),
    )
    models = [ModelSpec("fpn", str(FPN)), ModelSpec("nested", str(NESTED))]
    with pytest.raises(
        ValueError,
        match=r"different datasets.*fpn/seed0 on nuclei_synth_val.*nested/seed0 on "
        r"nuclei_synth_train",
    ):
        run_comparison(models, [0], str(tmp_path), baseline=False, runner=runner)


def test_a_failed_training_names_its_log(tmp_path):
    models = [ModelSpec("fpn", str(FPN))]
    with pytest.raises(
        RuntimeError,
        match=r"model 'fpn' seed 0: train_net.py exited with status 3; see .*"
        r"fpn/seed0/compare_log.txt",
    ):
        run_comparison(models, [0], str(tmp_path), baseline=False, runner=lambda c, e, l: 3)


def test_paired_bootstrap():
    rng = np.random.default_rng(1)
    diff = rng.normal(0.05, 0.1, size=134)
    stats = paired_bootstrap(diff, resamples=10000, seed=0)
    assert stats["mean"] == pytest.approx(diff.mean())
    assert stats["ci_low"] < stats["mean"] < stats["ci_high"]
    # about mean ± 1.96 standard errors
    half_width = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert stats["ci_high"] - stats["ci_low"] == pytest.approx(2 * half_width, rel=0.1)
    assert paired_bootstrap(diff, resamples=10000, seed=0) == stats  # fixed seed: reproducible
    constant = paired_bootstrap(np.full(7, 0.2), resamples=100)
    assert constant["ci_low"] == pytest.approx(0.2) and constant["ci_high"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"shape \(0,\)"):
        paired_bootstrap([])


def test_model_spec_errors_name_the_value(tmp_path):
    spec = parse_model_spec([f"nested={NESTED}", "MODEL.NESTED_FPN.FUSION", "concat"])
    assert spec == ModelSpec("nested", str(NESTED), ("MODEL.NESTED_FPN.FUSION", "concat"))
    with pytest.raises(ValueError, match=r"NAME=CONFIG.yaml; got 'configs/x.yaml'"):
        parse_model_spec(["configs/x.yaml"])
    with pytest.raises(ValueError, match=r"odd number \(1\): SOLVER.MAX_ITER"):
        parse_model_spec([f"a={FPN}", "SOLVER.MAX_ITER"])
    with pytest.raises(ValueError, match=r"SEED is set by the comparison"):
        parse_model_spec([f"a={FPN}", "SEED", "3"])
    with pytest.raises(ValueError, match=r"model name 'a/b'"):
        parse_model_spec([f"a/b={FPN}"])
    with pytest.raises(
        FileNotFoundError, match=r"model 'a': config file .*missing.yaml does not exist"
    ):
        plan_runs([ModelSpec("a", str(tmp_path / "missing.yaml"))], [0], str(tmp_path))
    with pytest.raises(ValueError, match=r"given more than once: \['a'\]"):
        plan_runs([ModelSpec("a", str(FPN)), ModelSpec("a", str(NESTED))], [0], str(tmp_path))
    with pytest.raises(ValueError, match=r"--pair fpn nope: no model named 'nope'"):
        calls = []
        run_comparison(
            [ModelSpec("fpn", str(FPN))],
            [0],
            str(tmp_path),
            pairs=[("fpn", "nope")],
            baseline=False,
            runner=_fake_runner("nuclei_synth_val", calls, _metrics),
        )
