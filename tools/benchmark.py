#!/usr/bin/env python
"""
Cost of maskrcnnpp's models against their baselines, and throughput of its data and
evaluation code. For each model x variant x input x device: parameters, FLOPs (fvcore's
counter, one per multiply-add), inference latency (median and quartiles over timed rounds
after warm-up; the compared models interleaved in one process, ratios taken within each
round), one training step's time, and peak memory (CUDA: max_memory_allocated; CPU: the
resident-set high-water mark above the resident set before the call). Prints Markdown
tables and writes OUTPUT/benchmark.json (one record per model x variant x input x device),
OUTPUT/benchmark.md and OUTPUT/benchmark.png.

Suites (--suites):
  rcnn_backbone   Mask R-CNN's FPN vs the nested FPN designs (Mask R-CNN++), bottom-up + neck
  rcnn_model      the whole detectors, proposals and detections pinned to equal counts
  rcnn_quick_training
                  the README main job's configs (configs/quick/mask_rcnn_{FPN,NestedFPN}.yaml)
                  on one training batch: training-step time and peak memory
  unetpp_vs_smp   our semantic UNet++ vs segmentation_models_pytorch's UnetPlusPlus
  unetpp_levels   our UNet++ pruned at TEST_LEVEL 1..4 and the ensemble
  unetpp_predict  tools/predict.py's time per image (1024x1024) against one network pass
                  (512x512), in float32 and bfloat16 (TEST.PRECISION), and bfloat16's error
  predict_batch   tools/predict.py's images per second on a folder of DSB2018 images (--dsb-root
                  val.txt, the first --predict-images) with TEST.PREDICT.BATCH_SIZE 1 and
                  --predict-batch-size, for each of --predict-configs; whether the outputs are
                  identical
  time_to_quality training minutes until a run's evaluation reached --quality-target, for
                  the run folders of --training-runs (only with that option)
  training_precision
                  one CPU training step in float32 and in bfloat16 (SOLVER.AMP.ENABLED on the
                  CPU) for each of --training-configs
  throughput      datasets/prepare_dsb2018.py on the shared DSB2018 copy; nuclei metrics

    python tools/benchmark.py --quick                  # the regression check, < 1 min
    python tools/benchmark.py --threads 2              # the full run (CPU, and CUDA if present)
    python tools/benchmark.py --suites rcnn_model --rcnn-config configs/DSB2018/cpu/mask_rcnn_R_18_FPN.yaml \\
        --rcnn-designs unet++/sum/separable --rcnn-sizes 512 \\
        --rcnn-weights FPN=output/dsb2018_cpu/mask_rcnn_R_18_FPN/model_final.pth \\
        unet++/sum/separable=output/dsb2018_cpu/mask_rcnn_R_18_NestedFPN/model_final.pth
"""
import argparse
import logging
import os
import shutil
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITES = (
    "rcnn_backbone", "rcnn_model", "rcnn_quick_training", "unetpp_vs_smp", "unetpp_levels",
    "unetpp_predict", "predict_batch", "training_precision", "throughput", "time_to_quality",
)  # fmt: skip
# Settings of the full run and of --quick; any option given on the command line wins.
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
    # predict_batch: the DSB2018 CPU recipe of Mask R-CNN++ and the paper's UNet++
    "predict_configs": ["configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml", "configs/DSB2018/unetpp_vgg.yaml"],
    "predict_images": 50,
    "predict_batch_size": 4,
    "predict_rounds": 3,
    "predict_detections": 32,  # about the mean number of nuclei of those 50 images (32.1)
    # training_precision: the main job's configs and the DSB2018 CPU recipes (skipped when
    # DSB2018 is not prepared)
    "training_configs": ["configs/quick/mask_rcnn_FPN.yaml", "configs/quick/mask_rcnn_NestedFPN.yaml",
                         "configs/quick/unetpp_vgg.yaml", "configs/DSB2018/cpu/mask_rcnn_R_18_NestedFPN.yaml",
                         "configs/DSB2018/cpu/unet_vgg.yaml", "configs/DSB2018/cpu/unetpp_vgg.yaml"],
    "prepare_images": None,  # all
    "metrics_images": 200,
    "output": os.path.join(REPO_ROOT, "output", "benchmark"),
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
    "predict_configs": ["configs/quick/mask_rcnn_NestedFPN.yaml", "configs/quick/unetpp_vgg.yaml"],
    "predict_images": 3,
    "predict_batch_size": 2,
    "predict_rounds": 1,
    "predict_detections": 8,
    "training_configs": ["configs/quick/unetpp_vgg.yaml"],
    "prepare_images": 6,
    "metrics_images": 20,
    "output": os.path.join(REPO_ROOT, "output", "benchmark_quick"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small models and inputs, few runs")
    parser.add_argument(
        "--suites", nargs="+", choices=SUITES, help="default: all (quick: all but rcnn_quick_training)"
    )
    parser.add_argument(
        "--devices", nargs="+", help="default: cpu, and cuda when torch sees a GPU"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--runs", type=int, help="timed inference rounds (full 10, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (full 2, quick 1)")
    parser.add_argument("--train-runs", type=int, help="timed training steps, 0: none (3 / 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--no-flops", action="store_true", help="skip fvcore's FLOP count")
    parser.add_argument(
        "--profile-modules",
        action="store_true",
        help="rcnn_backbone / rcnn_model: also time each component (bottom-up, laterals, nested "
        "nodes, output convs, RPN, ROI heads, ...) of every model, --runs rounds each",
    )
    parser.add_argument(
        "--fold-norms",
        action="store_true",
        help="fold FrozenBN/BN into the convs of the Mask R-CNN models (inference only: their "
        "training steps are skipped)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last weights and inputs, all models"
    )
    parser.add_argument(
        "--rcnn-config",
        default=os.path.join(REPO_ROOT, "configs", "Base-RCNN-FPN-Nuclei.yaml"),
        help="detector YAML both Mask R-CNN and Mask R-CNN++ start from",
    )
    parser.add_argument("--rcnn-sizes", type=int, nargs="+", help="square inputs (512 1024 / 128)")
    parser.add_argument("--rcnn-depth", type=int, help="MODEL.RESNETS.DEPTH (50 / 18; 0: keep the config's)")
    parser.add_argument(
        "--rcnn-designs", nargs="+", metavar="SKIP/FUSION/NODE_CONV", help="nested FPN designs"
    )
    parser.add_argument("--proposals", type=int, help="pinned proposals per image (1000 / 50)")
    parser.add_argument("--detections", type=int, help="pinned detections per image (100 / 5)")
    parser.add_argument(
        "--rcnn-opts",
        nargs="+",
        metavar="KEY VALUE",
        help="config overrides for every detector (quick: MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64)",
    )
    parser.add_argument(
        "--rcnn-weights",
        nargs="+",
        default=[],
        metavar="VARIANT=PATH",
        help="trained checkpoints for rcnn_model, e.g. FPN=a.pth unet++/sum/separable=b.pth",
    )
    parser.add_argument("--unetpp-sizes", type=int, nargs="+", help="square inputs (256 512 / 64)")
    parser.add_argument("--unetpp-batch", type=int, help="images per batch (4 / 2)")
    parser.add_argument(
        "--training-configs", nargs="+", metavar="CONFIG",
        help="training_precision: configs to step (full: quick + DSB2018 CPU; quick: quick UNet++)",
    )
    parser.add_argument(
        "--training-runs", nargs="+", default=[], metavar="DIR",
        help="time_to_quality: training run folders or tools/compare.py output roots",
    )
    parser.add_argument(
        "--quality-target", default="nuclei/dsb_score=0.45", metavar="TASK/KEY=VALUE",
        help="time_to_quality: the metric and value to reach (default nuclei/dsb_score=0.45)",
    )
    parser.add_argument(
        "--predict-sizes", type=int, nargs=2, metavar=("PASS", "IMAGE"),
        help="unetpp_predict: side of the single network pass and of the predicted image (512 1024 / 64 128)",
    )
    parser.add_argument(
        "--predict-configs", nargs="+", metavar="CONFIG",
        help="predict_batch: models (DSB2018 CPU Mask R-CNN++ and UNet++ / the quick ones)",
    )
    parser.add_argument("--predict-images", type=int, help="predict_batch: images of the folder (50 / 3)")
    parser.add_argument(
        "--predict-batch-size", type=int, help="predict_batch: TEST.PREDICT.BATCH_SIZE against 1 (4 / 2)"
    )
    parser.add_argument("--predict-rounds", type=int, help="predict_batch: timed rounds over the folder (3 / 1)")
    parser.add_argument(
        "--predict-detections", type=int,
        help="predict_batch: TEST.DETECTIONS_PER_IMAGE pinned for random-weight detectors (32 / 8)",
    )
    parser.add_argument(
        "--dsb-root",
        default=os.path.join(os.path.dirname(REPO_ROOT), "shared", "datasets", "dsb2018"),
        help="DSB2018 copy in Kaggle layout for the throughput and predict_batch suites",
    )
    parser.add_argument("--prepare-images", type=int, help="images to convert (all / 6)")
    parser.add_argument("--prepare-workers", type=int, default=2, help="prepare_dsb2018 workers")
    parser.add_argument("--metrics-images", type=int, help="images the metrics score (200 / 20)")
    parser.add_argument("--output", help="folder for benchmark.{json,md,png}")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.devices is None:
        args.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--devices {device}: torch sees no CUDA device here")
    weights = {}
    for spec in args.rcnn_weights:
        variant, sep, path = spec.partition("=")
        if not sep or not path:
            parser.error(f"--rcnn-weights {spec!r}: expected VARIANT=PATH")
        if not os.path.isfile(path):
            parser.error(f"--rcnn-weights {spec!r}: no file {path}")
        weights[variant] = path
    args.rcnn_weights = weights
    if args.predict_batch_size < 2:
        parser.error(f"--predict-batch-size {args.predict_batch_size}: compared with batch 1, so >= 2")
    metric, _, target = args.quality_target.rpartition("=")
    try:
        float(target)
    except ValueError:
        metric = ""
    if "/" not in metric:
        parser.error(f"--quality-target {args.quality_target!r}: expected TASK/KEY=VALUE, e.g. nuclei/dsb_score=0.45")
    return args


def build_cases(args):
    from maskrcnnpp.benchmark.inference_options import with_inference_options
    from maskrcnnpp.benchmark.rcnn_cases import DEFAULT_NESTED_DESIGNS, rcnn_cases

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
        from maskrcnnpp.benchmark.rcnn_cases import quick_training_cases

        configs = [os.path.join(REPO_ROOT, "configs", "quick", f"mask_rcnn_{neck}.yaml")
                   for neck in ("FPN", "NestedFPN")]
        quick = quick_training_cases(configs, devices=args.devices, train=args.train_runs > 0)
        # trained as they are: no norm folding (it would skip the training step)
        cases += [
            with_inference_options(c, fold_norms=False, channels_last=args.channels_last)
            for c in quick
        ]
    unetpp_suites = [s for s in ("unetpp_vs_smp", "unetpp_levels") if s in args.suites]
    if unetpp_suites:
        from maskrcnnpp.benchmark.unetpp_cases import unetpp_cases

        configs = os.path.join(REPO_ROOT, "configs", "DSB2018")
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
    from maskrcnnpp.benchmark.throughput import metrics_throughput, prepare_throughput

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


def run_batched_prediction(args, start):
    from maskrcnnpp.benchmark.prediction_batches import (
        batched_prediction_records,
        dsb2018_image_files,
    )

    if not os.path.isdir(os.path.join(args.dsb_root, "stage1_train")):
        print(f"[benchmark] predict_batch skipped: no DSB2018 copy at {args.dsb_root} (--dsb-root)")
        return []
    files = dsb2018_image_files(args.dsb_root, args.predict_images)
    configs = [c if os.path.isabs(c) else os.path.join(REPO_ROOT, c) for c in args.predict_configs]
    records = []
    for device in args.devices:
        print(f"[benchmark] predict_batch {device}: {len(files)} images, batch 1 and "
              f"{args.predict_batch_size} ({time.perf_counter() - start:.0f} s)", flush=True)
        records += batched_prediction_records(
            configs, files, batch_size=args.predict_batch_size, rounds=args.predict_rounds,
            warmup=min(args.warmup, 1), device=device, detections=args.predict_detections,
        )  # fmt: skip
    return records


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="[benchmark] %(message)s")
    from maskrcnnpp.benchmark.report import format_tables, plot_latencies, write_json
    from maskrcnnpp.benchmark.runner import group_cases, run_case_group

    start = time.perf_counter()
    cases = build_cases(args)
    records, profiles = [], []
    for group in group_cases(cases):
        print(f"[benchmark] {group[0].suite} {group[0].batch}x{group[0].height}x{group[0].width} "
              f"{group[0].device}: {len(group)} models ({time.perf_counter() - start:.0f} s)",
              flush=True)
        records += run_case_group(
            group,
            rounds=args.runs,
            warmup=args.warmup,
            train_rounds=args.train_runs,
            memory=not args.no_memory,
            flops=not args.no_flops,
        )
        if args.profile_modules and group[0].suite in ("rcnn_backbone", "rcnn_model"):
            from maskrcnnpp.benchmark.module_profile import (
                format_module_profile,
                profile_case_group,
            )

            profiles.append(format_module_profile(
                profile_case_group(group, rounds=args.runs, warmup=args.warmup)))
    if "unetpp_predict" in args.suites:
        from maskrcnnpp.benchmark.prediction_cost import semantic_prediction_records

        for device in args.devices:
            print(f"[benchmark] unetpp_predict {device} ({time.perf_counter() - start:.0f} s)", flush=True)
            records += semantic_prediction_records(
                os.path.join(REPO_ROOT, "configs", "DSB2018", "unetpp_vgg.yaml"),
                small=args.predict_sizes[0], large=args.predict_sizes[1],
                rounds=args.runs, warmup=args.warmup, device=device,
            )
    if "predict_batch" in args.suites:
        records += run_batched_prediction(args, start)
    if "training_precision" in args.suites and "cpu" in args.devices:
        from maskrcnnpp.benchmark.training_precision import training_precision_records
        from maskrcnnpp.engine import check_datasets_registered, setup_cfg

        configs = []
        for config in args.training_configs:
            config = os.path.join(REPO_ROOT, config) if not os.path.isabs(config) else config
            try:
                check_datasets_registered(setup_cfg(config, []), ("DATASETS.TRAIN",))
            except (KeyError, ValueError) as e:
                print(f"[benchmark] training_precision: skipping {config}: {str(e).splitlines()[0]}")
                continue
            configs.append(config)
        print(f"[benchmark] training_precision: {len(configs)} configs ({time.perf_counter() - start:.0f} s)",
              flush=True)
        records += training_precision_records(configs, rounds=max(1, args.train_runs), warmup=1)
    if "throughput" in args.suites:
        records += run_throughput(args)
    if "time_to_quality" in args.suites and args.training_runs:
        from maskrcnnpp.benchmark.time_to_quality import find_training_runs, time_to_quality_records

        metric, target = args.quality_target.rsplit("=", 1)
        records += time_to_quality_records(find_training_runs(args.training_runs), metric, float(target))
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
    print(f"[benchmark] {len(records)} records -> {args.output}/benchmark.{{json,md,png}} "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
