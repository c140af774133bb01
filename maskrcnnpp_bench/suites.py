"""
The suites of ``tools/benchmark.py``: their settings (:data:`FULL`, :data:`QUICK`), the cases
each suite measures, and :func:`run_benchmark`, which runs them and writes the report.
"""

import logging
import os
import shutil
import sys
import time

import torch

SUITES = (
    "rcnn_backbone", "rcnn_model", "rcnn_quick_training", "unetpp_vs_smp", "unetpp_levels",
    "unetpp_predict", "training_precision", "throughput", "time_to_quality",
)  # fmt: skip
# Settings of the full run and of --quick; any option given on the command line wins. Relative
# paths are relative to the repository root.
FULL = {
    "suites": list(SUITES),
    "runs": 10,
    "warmup": 2,
    "train_runs": 3,
    "rcnn_sizes": [512, 1024],
    "rcnn_depth": 50,
    "rcnn_designs": None,  # every skip x fusion with separable nodes, and the paper's design
    "proposals": 1000,
    "detections": 100,
    "rcnn_opts": [],
    "unetpp_sizes": [256, 512],
    "unetpp_batch": 4,
    "predict_sizes": [512, 1024],
    # training_precision: the main job's configs and the DSB2018 CPU recipes (skipped when
    # DSB2018 is not prepared)
    "training_configs": [
        "configs/quick/mask_rcnn_FPN.yaml",
        "configs/quick/mask_rcnn_NestedFPN.yaml",
        "configs/quick/unetpp_vgg.yaml",
        "configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml",
        "configs/DSB2018/cpu/unet_vgg.yaml",
        "configs/DSB2018/cpu/unetpp_vgg.yaml",
    ],
    "prepare_images": None,  # all
    "metrics_images": 200,
    "output": "output/benchmark",
}
QUICK = {
    # rcnn_quick_training would add ~25 s of real-size training batches
    "suites": [s for s in SUITES if s != "rcnn_quick_training"],
    "runs": 3,
    "warmup": 1,
    "train_runs": 1,
    "rcnn_sizes": [128],
    "rcnn_depth": 18,
    "rcnn_designs": ["unet++/sum/separable"],
    "proposals": 50,
    "detections": 5,
    # a training step samples 64 RoIs instead of the config's 512 (the mask head dominates)
    "rcnn_opts": ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64"],
    "unetpp_sizes": [64],
    "unetpp_batch": 2,
    "predict_sizes": [64, 128],
    "training_configs": ["configs/quick/unetpp_vgg.yaml"],
    "prepare_images": 6,
    "metrics_images": 20,
    "output": "output/benchmark_quick",
}


def build_cases(args, repo_root: str):
    from .inference_options import with_inference_options
    from .rcnn_cases import DEFAULT_NESTED_DESIGNS, rcnn_cases

    cases = []
    rcnn_suites = [s for s in ("rcnn_backbone", "rcnn_model") if s in args.suites]
    if rcnn_suites:
        rcnn = rcnn_cases(
            args.rcnn_config,
            sizes=args.rcnn_sizes,
            devices=args.devices,
            depth=args.rcnn_depth or None,
            designs=args.rcnn_designs or DEFAULT_NESTED_DESIGNS,
            suites=rcnn_suites,
            train=args.train_runs > 0,
            weights=args.rcnn_weights,
            proposals=args.proposals,
            detections=args.detections,
            opts=args.rcnn_opts,
        )
        cases += [
            with_inference_options(c, fold_norms=args.fold_norms, channels_last=args.channels_last)
            for c in rcnn
        ]
    if "rcnn_quick_training" in args.suites:
        from .rcnn_cases import quick_training_cases

        configs = [
            os.path.join(repo_root, "configs", "quick", f"mask_rcnn_{neck}.yaml")
            for neck in ("FPN", "NestedFPN")
        ]
        quick = quick_training_cases(configs, devices=args.devices, train=args.train_runs > 0)
        # trained as they are: no norm folding (it would skip the training step)
        cases += [
            with_inference_options(c, fold_norms=False, channels_last=args.channels_last)
            for c in quick
        ]
    unetpp_suites = [s for s in ("unetpp_vs_smp", "unetpp_levels") if s in args.suites]
    if unetpp_suites:
        from .unetpp_cases import unetpp_cases

        configs = os.path.join(repo_root, "configs", "DSB2018")
        unetpp = unetpp_cases(
            smp_config=os.path.join(configs, "unetpp_R_34.yaml"),
            levels_config=os.path.join(configs, "unetpp_vgg.yaml"),
            sizes=args.unetpp_sizes,
            batch=args.unetpp_batch,
            devices=args.devices,
            suites=unetpp_suites,
            train=args.train_runs > 0,
        )
        cases += [
            with_inference_options(c, fold_norms=False, channels_last=args.channels_last)
            for c in unetpp
        ]
    return cases


def run_throughput(args):
    from .throughput import metrics_throughput, prepare_throughput

    if args.dsb_root is None:
        print("[benchmark] throughput skipped: no --dsb-root (a DSB2018 copy in the Kaggle layout)")
        return []
    if not os.path.isdir(os.path.join(args.dsb_root, "stage1_train")):
        print(f"[benchmark] throughput skipped: no DSB2018 copy at {args.dsb_root} (--dsb-root)")
        return []
    prepared = prepare_throughput(
        args.dsb_root, workers=args.prepare_workers, num_images=args.prepare_images
    )
    try:
        metrics = metrics_throughput(
            prepared["notes"]["instances_json"], num_images=args.metrics_images
        )
    finally:
        shutil.rmtree(prepared["notes"].pop("out_dir"), ignore_errors=True)
    prepared["notes"].pop("instances_json")
    return [prepared, metrics]


def run_benchmark(args, repo_root: str) -> int:
    """
    Run the suites of ``args`` (the options of ``tools/benchmark.py``, with the settings of
    :data:`FULL` or :data:`QUICK` filled in), print the tables and write ``args.output``'s
    benchmark.{json,md,png}. Relative config paths are resolved against ``repo_root``.

    Returns:
        int: the exit status, 1 when nothing was measured.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="[benchmark] %(message)s")
    from .report import format_tables, plot_latencies, write_json
    from .runner import group_cases, run_case_group

    start = time.perf_counter()
    cases = build_cases(args, repo_root)
    records, profiles = [], []
    for group in group_cases(cases):
        print(
            f"[benchmark] {group[0].suite} {group[0].batch}x{group[0].height}x{group[0].width} "
            f"{group[0].device}: {len(group)} models ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        records += run_case_group(
            group,
            rounds=args.runs,
            warmup=args.warmup,
            train_rounds=args.train_runs,
            memory=not args.no_memory,
            flops=not args.no_flops,
        )
        if args.profile_modules and group[0].suite in ("rcnn_backbone", "rcnn_model"):
            from .module_profile import (
                format_module_profile,
                profile_case_group,
            )

            profiles.append(
                format_module_profile(
                    profile_case_group(group, rounds=args.runs, warmup=args.warmup)
                )
            )
    if "training_precision" in args.suites and "cpu" in args.devices:
        from maskrcnnpp.config import check_datasets_registered, setup_cfg

        from .training_precision import training_precision_records

        configs = []
        for config in args.training_configs:
            config = os.path.join(repo_root, config) if not os.path.isabs(config) else config
            try:
                check_datasets_registered(setup_cfg(config, []), ("DATASETS.TRAIN",))
            except (KeyError, ValueError) as e:
                print(
                    f"[benchmark] training_precision: skipping {config}: {str(e).splitlines()[0]}"
                )
                continue
            configs.append(config)
        print(
            f"[benchmark] training_precision: {len(configs)} configs ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        records += training_precision_records(configs, rounds=max(1, args.train_runs), warmup=1)
    if "unetpp_predict" in args.suites:  # last of the timed suites: it keeps freed memory
        from .prediction_cost import semantic_prediction_records

        for device in args.devices:
            print(
                f"[benchmark] unetpp_predict {device} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            records += semantic_prediction_records(
                os.path.join(repo_root, "configs", "DSB2018", "unetpp_vgg.yaml"),
                small=args.predict_sizes[0],
                large=args.predict_sizes[1],
                rounds=args.runs,
                warmup=args.warmup,
                device=device,
            )
    if "throughput" in args.suites:
        records += run_throughput(args)
    if "time_to_quality" in args.suites and args.training_runs:
        from .time_to_quality import find_training_runs, time_to_quality_records

        metric, target = args.quality_target.rsplit("=", 1)
        records += time_to_quality_records(
            find_training_runs(args.training_runs), metric, float(target)
        )
    if not records:
        print("[benchmark] nothing measured", file=sys.stderr)
        return 1
    tables = format_tables(records) + "".join("\n" + p for p in profiles)
    print("\n" + tables)
    os.makedirs(args.output, exist_ok=True)
    write_json(records, os.path.join(args.output, "benchmark.json"))
    from maskrcnnpp.utils.atomic_io import atomic_open

    with atomic_open(os.path.join(args.output, "benchmark.md"), "w") as f:
        f.write(tables)
    plot_latencies(records, os.path.join(args.output, "benchmark.png"))
    print(
        f"[benchmark] {len(records)} records -> {args.output}/benchmark.{{json,md,png}} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0
