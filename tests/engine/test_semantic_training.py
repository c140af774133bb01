"""How the semantic UNet++ trains: batches that mix imaging types, the training pipeline against
a minimal reference loop, BatchNorm statistics, the optimizer option, pixel-area sampling, and
the interior / boundary target that splits touching nuclei."""

import itertools

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.samplers import TrainingSampler
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data.build import build_nuclei_train_loader
from maskrcnnpp.data.samplers import PixelAreaTrainingSampler
from maskrcnnpp.data.semantic_patch_mapper import SemanticPatchDatasetMapper
from maskrcnnpp.data.synthetic_nuclei import generate_synthetic_nuclei_image
from maskrcnnpp.engine import NucleiTrainer, build_optimizer
from maskrcnnpp.structures.interior_boundary import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    interior_boundary_target,
    nuclei_from_interior_boundary,
)

# --------------------------------------------------------------------------------------------
# A small dataset whose imaging type follows the aspect ratio, as in DSB2018 (colour
# histology landscape, fluorescence square): bright-field looks are 64x112, fluorescence 112x64.
# --------------------------------------------------------------------------------------------
LANDSCAPE, PORTRAIT = (64, 112), (112, 64)


@pytest.fixture(scope="module")
def two_look_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_looks")
    records = []
    for index in range(12):
        look = "brightfield" if index % 2 else "fluorescence"
        size = LANDSCAPE if look == "brightfield" else PORTRAIT
        image, masks = generate_synthetic_nuclei_image(
            100 + index, image_size=size, look=look, num_nuclei=8
        )
        labels = masks.any(0).astype(np.uint8)
        image_file, label_file = root / f"{index}.png", root / f"{index}_sem.png"
        cv2.imwrite(str(image_file), image[:, :, ::-1])
        cv2.imwrite(str(label_file), labels)
        records.append(
            {
                "file_name": str(image_file),
                "sem_seg_file_name": str(label_file),
                "height": size[0],
                "width": size[1],
                "image_id": index,
                "look": look,
            }
        )
    name = f"two_looks_{root.name}"
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(
        stuff_classes=["background", "nucleus"], ignore_label=255, evaluator_type="sem_seg"
    )
    yield name, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def tiny_unet_cfg(dataset_name, output_dir, max_iter=100):
    return setup_cfg(
        "",
        [
            "MODEL.META_ARCHITECTURE",
            "SemanticUNetPlusPlus",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.PIXEL_MEAN",
            "[128.0, 128.0, 128.0]",
            "MODEL.PIXEL_STD",
            "[64.0, 64.0, 64.0]",
            "MODEL.VGG.STAGE_CHANNELS",
            "[8, 16, 32]",
            "MODEL.VGG.OUT_FEATURES",
            "['vgg0', 'vgg1', 'vgg2']",
            "MODEL.UNETPP.IN_FEATURES",
            "['vgg0', 'vgg1', 'vgg2']",
            "MODEL.UNETPP.SKIP",
            "unet",
            "MODEL.UNETPP.DEEP_SUPERVISION",
            "False",
            "INPUT.FORMAT",
            "RGB",
            "INPUT.SEMANTIC_PATCH.SIZE",
            "48",
            "DATASETS.TRAIN",
            f"('{dataset_name}',)",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.OPTIMIZER",
            "AdamW",
            "SOLVER.BASE_LR",
            "0.005",
            "SOLVER.WEIGHT_DECAY",
            "0.0",
            "SOLVER.IMS_PER_BATCH",
            "8",
            "SOLVER.MAX_ITER",
            str(max_iter),
            "SOLVER.STEPS",
            "()",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",
            "SEED",
            "3",
            "OUTPUT_DIR",
            str(output_dir),
        ],
    )


def batch_orientations(loader, num_batches):
    return [
        {x["width"] > x["height"] for x in batch}
        for batch in itertools.islice(iter(loader), num_batches)
    ]


def test_semantic_batches_mix_aspect_ratios(two_look_dataset, tmp_path):
    name, _ = two_look_dataset
    cfg = tiny_unet_cfg(name, tmp_path)
    assert cfg.DATALOADER.ASPECT_RATIO_GROUPING  # Detectron2's default stays on ...
    mixed = [len(kinds) == 2 for kinds in batch_orientations(build_nuclei_train_loader(cfg), 12)]
    assert sum(mixed) >= 10  # ... but semantic batches hold both orientations (8 of 12 images)


def test_instance_models_keep_aspect_ratio_grouping(two_look_dataset, tmp_path, monkeypatch):
    # What the semantic loader avoids: with grouping, every batch holds one orientation (and
    # here one imaging type). Shown with the instance mapper's loader path, patched to the
    # semantic mapper so that the same records load.
    import maskrcnnpp.data.build as build

    name, _ = two_look_dataset
    cfg = tiny_unet_cfg(name, tmp_path)
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    monkeypatch.setattr(
        build,
        "build_nuclei_mapper",
        lambda cfg, is_train: SemanticPatchDatasetMapper(
            is_train=True, patch_size=48, intensity_jitter=0.2, ignore_value=255
        ),
    )
    assert all(
        len(kinds) == 1 for kinds in batch_orientations(build.build_nuclei_train_loader(cfg), 12)
    )


def foreground_iou(model, records):
    model.eval()
    intersection = union = 0
    with torch.no_grad():
        for record in records:
            image = cv2.imread(record["file_name"])[:, :, ::-1]
            truth = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED) == 1
            probs = model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}])[0][
                "sem_seg"
            ]
            predicted = (probs.argmax(0) == 1).numpy()
            intersection += (predicted & truth).sum()
            union += (predicted | truth).sum()
    return intersection / union


def reference_training(cfg, records):
    """The same model, mapper, optimizer and number of steps in a plain loop: batches drawn
    uniformly from all images (no grouping)."""
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    mapper = SemanticPatchDatasetMapper(cfg, is_train=True)
    rng = np.random.default_rng(cfg.SEED)
    np.random.seed(cfg.SEED)
    model.train()
    for _ in range(cfg.SOLVER.MAX_ITER):
        batch = [
            mapper(records[i]) for i in rng.integers(0, len(records), cfg.SOLVER.IMS_PER_BATCH)
        ]
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def bn_running_stats(model):
    return {
        name: (m.running_mean.clone(), m.running_var.clone())
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }


def recomputed_bn_stats(model, cfg, records, num_batches=30):
    """BatchNorm statistics recomputed on training patches (cumulative average over batches)."""
    saved = {k: v for k, v in model.state_dict().items()}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    mapper = SemanticPatchDatasetMapper(cfg, is_train=True)
    np.random.seed(7)
    rng = np.random.default_rng(7)
    model.train()
    with torch.no_grad():
        for _ in range(num_batches):
            model([mapper(records[i]) for i in rng.integers(0, len(records), 8)])
    stats = bn_running_stats(model)
    model.load_state_dict(saved)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return stats


@pytest.fixture(scope="module")
def trained_pair(two_look_dataset, tmp_path_factory):
    name, records = two_look_dataset
    cfg = tiny_unet_cfg(name, tmp_path_factory.mktemp("pipeline"))
    # every generator (torch, NumPy's global one the augmentations draw from, random), so that
    # the model does not depend on the tests that ran before in this process
    seed_all_rng(cfg.SEED)
    trainer = NucleiTrainer(cfg)
    trainer.train()
    return cfg, records, trainer.model, reference_training(cfg, records)


def test_pipeline_learns_as_well_as_a_reference_loop(trained_pair):
    cfg, records, pipeline_model, reference_model = trained_pair
    pipeline_iou = foreground_iou(pipeline_model, records)
    reference_iou = foreground_iou(reference_model, records)
    # Measured with seeds 3 and 4: pipeline 0.93 / 0.90, reference loop 0.74 / 0.78 (training
    # this short is noisy); with Detectron2's aspect-ratio grouping the pipeline scored 0.28.
    assert reference_iou > 0.6 and pipeline_iou > 0.6, (pipeline_iou, reference_iou)
    assert abs(pipeline_iou - reference_iou) < 0.25, (pipeline_iou, reference_iou)


def test_bn_running_statistics_match_training_patches(trained_pair):
    cfg, records, model, _ = trained_pair
    running = bn_running_stats(model)
    recomputed = recomputed_bn_stats(model, cfg, records)
    for name, (mean, var) in running.items():
        ref_mean, ref_var = recomputed[name]
        # a BN layer fed batches of one imaging type at a time learns their within-type
        # variance, too small for the mixed patches it sees at test time
        ratio = (var / ref_var).median().item()
        assert 0.7 < ratio < 1.4, (name, ratio)
        scale = ref_var.sqrt().clamp(min=1e-3)
        assert ((mean - ref_mean).abs() / scale).median().item() < 0.3, name


# --------------------------------------------------------------------------------------------
def test_adamw_option_builds_and_steps():
    cfg = setup_cfg(
        "",
        [
            "SOLVER.OPTIMIZER",
            "AdamW",
            "SOLVER.BASE_LR",
            "0.01",
            "SOLVER.ADAMW_BETAS",
            "(0.8, 0.99)",
        ],
    )
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    before = model[0].weight.detach().clone()
    model(torch.rand(2, 1, 5, 5)).square().sum().backward()
    # the fused update is AdamW's: the same step as torch's per-parameter loop
    groups, pairs = [], []
    for group in optimizer.param_groups:
        twins = [p.detach().clone().requires_grad_() for p in group["params"]]
        for p, q in zip(group["params"], twins):
            q.grad = p.grad.clone()
            pairs.append((p, q))
        groups.append({"params": twins, "lr": group["lr"], "weight_decay": group["weight_decay"]})
    reference = torch.optim.AdamW(groups, lr=0.01, betas=(0.8, 0.99), foreach=False)
    assert all(group["fused"] for group in optimizer.param_groups)
    for _ in range(3):
        optimizer.step()
        reference.step()
    assert not torch.equal(before, model[0].weight)
    for p, q in pairs:
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
    cfg = setup_cfg("", ["SOLVER.OPTIMIZER", "SGD"])
    assert isinstance(build_optimizer(cfg, model), torch.optim.SGD)
    cfg = setup_cfg("", ["SOLVER.OPTIMIZER", "Adam"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'Adam'.*SGD, AdamW"):
        build_optimizer(cfg, model)


def test_pixel_area_sampler_gives_a_rare_large_type_its_share():
    # 2 images of 1024x1024 among 100: 2 % of the images, 2 * 16 / (2 * 16 + 98) of the pixels
    areas = [1024 * 1024] * 2 + [256 * 256] * 98
    draws = list(itertools.islice(iter(PixelAreaTrainingSampler(areas, seed=0)), 20000))
    share = np.isin(draws, [0, 1]).mean()
    assert abs(share - 32 / 130) < 0.015, share
    uniform = list(itertools.islice(iter(TrainingSampler(100, seed=0)), 20000))
    assert np.isin(uniform, [0, 1]).mean() < 0.03  # what the default sampler gives them
    # power 0.5: weights 1024 and 256, share 2 * 1024 / (2 * 1024 + 98 * 256)
    draws = list(itertools.islice(iter(PixelAreaTrainingSampler(areas, power=0.5, seed=0)), 20000))
    assert abs(np.isin(draws, [0, 1]).mean() - 2048 / (2048 + 98 * 256)) < 0.01
    with pytest.raises(
        ValueError, match=r"power \(DATALOADER.PIXEL_AREA_POWER\) must be >= 0, got -1"
    ):
        PixelAreaTrainingSampler(areas, power=-1)
    # the key is a config key: it merges from the command line
    assert setup_cfg("", ["DATALOADER.PIXEL_AREA_POWER", "0.5"]).DATALOADER.PIXEL_AREA_POWER == 0.5
    with pytest.raises(KeyError, match="x.png"):
        PixelAreaTrainingSampler.from_dataset_dicts([{"file_name": "x.png"}])


# --------------------------------------------------------------------------------------------
def discs(shape, centres, radius):
    labels = np.zeros(shape, np.int32)
    for index, (x, y) in enumerate(centres, start=1):
        disc = np.zeros(shape, np.uint8)
        cv2.circle(disc, (x, y), radius, 1, -1)
        labels[(disc > 0) & (labels == 0)] = index
    return labels


def one_hot(target):
    return np.stack([(target == k).astype(np.float32) for k in (BACKGROUND, INTERIOR, BOUNDARY)])


def test_interior_boundary_target_splits_touching_discs():
    truth = discs((64, 96), [(30, 32), (57, 32)], 14)  # centres 27 px apart: the discs touch
    assert cv2.connectedComponents((truth > 0).astype(np.uint8), connectivity=8)[0] - 1 == 1
    target = interior_boundary_target(truth)
    assert set(np.unique(target)) == {BACKGROUND, INTERIOR, BOUNDARY}
    assert (target[truth == 0] == BACKGROUND).all()
    # boundary pixels separate the two interiors
    assert (
        cv2.connectedComponents((target == INTERIOR).astype(np.uint8), connectivity=8)[0] - 1 == 2
    )
    labels, scores = nuclei_from_interior_boundary(one_hot(target))
    assert labels.max() == 2 and np.allclose(scores, 1.0)
    for k in (1, 2):
        best = max(
            ((labels == j) & (truth == k)).sum() / ((labels == j) | (truth == k)).sum()
            for j in (1, 2)
        )
        assert best > 0.97


def test_interior_boundary_of_one_disc_and_of_nothing():
    truth = discs((40, 40), [(20, 20)], 9)
    labels, _ = nuclei_from_interior_boundary(one_hot(interior_boundary_target(truth)))
    assert labels.max() == 1 and ((labels > 0) == (truth > 0)).all()
    empty = interior_boundary_target(np.zeros((20, 30), np.int32))
    assert (empty == BACKGROUND).all()
    labels, scores = nuclei_from_interior_boundary(one_hot(empty))
    assert labels.max() == 0 and scores.shape == (0,)


def test_nucleus_too_small_for_an_interior_is_kept():
    probs = np.zeros((3, 12, 12), np.float32)
    probs[BACKGROUND] = 1
    probs[BACKGROUND, 4:7, 4:7], probs[BOUNDARY, 4:7, 4:7] = 0, 1
    labels, _ = nuclei_from_interior_boundary(probs)
    assert labels.max() == 1 and (labels > 0).sum() == 9


def test_interior_boundary_needs_three_classes():
    with pytest.raises(ValueError, match="NUM_CLASSES 3"):
        build_model(
            setup_cfg(
                "",
                [
                    "MODEL.META_ARCHITECTURE",
                    "SemanticUNetPlusPlus",
                    "MODEL.DEVICE",
                    "cpu",
                    "MODEL.UNETPP.TARGET",
                    "interior_boundary",
                ],
            )
        )


# --------------------------------------------------------------------------------------------
# The instance path of the interior / boundary model: model output -> NucleiEvaluator,
# NucleiPredictor (what tools/predict.py writes), with the probabilities of two touching discs.
# --------------------------------------------------------------------------------------------
@pytest.fixture
def touching_discs_model(monkeypatch):
    truth = discs((64, 96), [(30, 32), (57, 32)], 14)
    cfg = setup_cfg(
        "",
        [
            "MODEL.META_ARCHITECTURE",
            "SemanticUNetPlusPlus",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.UNETPP.TARGET",
            "interior_boundary",
            "MODEL.UNETPP.NUM_CLASSES",
            "3",
            "MODEL.VGG.STAGE_CHANNELS",
            "[4, 4, 4, 4, 4]",
        ],
    )
    model = build_model(cfg).eval()
    probs = torch.from_numpy(one_hot(interior_boundary_target(truth)))
    monkeypatch.setattr(model, "predict_probabilities", lambda image: probs)
    image = np.where(truth[..., None] > 0, 200, 20).astype(np.uint8).repeat(3, axis=2)
    return model, image, truth


def test_interior_boundary_model_returns_touching_nuclei_apart(touching_discs_model):
    model, image, truth = touching_discs_model
    with torch.no_grad():
        output = model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}])[0]
    assert output["sem_seg"].shape == (2, 64, 96)
    assert torch.equal(output["sem_seg"][1] > 0.5, torch.from_numpy(truth > 0))
    instances = output["instances"]
    assert len(instances) == 2 and instances.pred_masks.dtype == torch.bool
    assert torch.allclose(instances.scores, torch.ones(2))
    assert instances.pred_boxes.tensor.shape == (2, 4)


def test_interior_boundary_nuclei_through_evaluator_and_predictor(touching_discs_model, tmp_path):
    from pycocotools import mask as mask_util

    from maskrcnnpp.evaluation import NucleiEvaluator
    from maskrcnnpp.inference import NucleiPredictor

    model, image, truth = touching_discs_model
    annotations = [
        {
            "segmentation": mask_util.encode(np.asfortranarray((truth == k).astype(np.uint8))),
            "bbox": [0, 0, 1, 1],
            "bbox_mode": 1,
            "category_id": 0,
            "iscrowd": 0,
        }
        for k in (1, 2)
    ]
    name = f"touching_discs_{tmp_path.name}"
    DatasetCatalog.register(
        name,
        lambda: [
            {
                "file_name": "discs.png",
                "image_id": 7,
                "height": 64,
                "width": 96,
                "annotations": annotations,
            }
        ],
    )
    try:
        evaluator = NucleiEvaluator(name)
        evaluator.reset()
        inputs = [{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "image_id": 7}]
        with torch.no_grad():
            evaluator.process(inputs, model(inputs))
        nuclei = evaluator.evaluate()["nuclei"]
        # interiors grown back into the foreground lose no pixel (only the seam between the two
        # may be drawn a pixel off): the two nuclei are found, nearly pixel-exact
        assert nuclei["iou"] == pytest.approx(1.0)
        assert nuclei["dsb_score"] > 0.99 and nuclei["aji"] > 0.99 and nuclei["pq"] > 0.99
    finally:
        DatasetCatalog.remove(name)
    predictor = NucleiPredictor(
        model=model,
        augmentations=[],
        input_format="RGB",
        max_untiled_size=1024,
        tile_size=512,
        tile_overlap=128,
        score_thresh=0.5,
    )
    prediction = predictor(image)
    assert prediction.labels.max() == 2
    for k in (1, 2):
        found = prediction.labels[truth == k]
        assert (found == np.bincount(found).argmax()).mean() > 0.98


# --------------------------------------------------------------------------------------------
# bfloat16: training on the CPU (SOLVER.AMP.ENABLED) and inference (TEST.PRECISION).
# --------------------------------------------------------------------------------------------
def probabilities(model, records, precision):
    from maskrcnnpp.utils.inference_precision import inference_autocast

    model.eval()
    out = []
    with torch.no_grad(), inference_autocast(precision, model):
        for record in records:
            image = cv2.imread(record["file_name"])[:, :, ::-1]
            out.append(
                model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}])[0]["sem_seg"]
            )
    return out


def test_bfloat16_inference_stays_within_its_tolerance(trained_pair):
    _, records, model, _ = trained_pair
    for level in (0, *model.head_columns):
        model.test_level = level
        exact = probabilities(model, records, "float32")
        reduced = probabilities(model, records, "bfloat16")
        assert all(r.dtype == torch.float32 for r in reduced)
        diff = torch.cat([(a - b).abs().flatten() for a, b in zip(exact, reduced)])
        same_class = torch.cat(
            [(a.argmax(0) == b.argmax(0)).flatten() for a, b in zip(exact, reduced)]
        )
        # The tolerance docs/benchmark.md states for TEST.PRECISION "bfloat16"; measured here:
        # max 0.013, mean 0.0003, 99.99 % of the pixels in the same class.
        assert diff.max().item() < 0.05 and diff.mean().item() < 0.002, (
            level,
            diff.max(),
            diff.mean(),
        )
        assert same_class.float().mean().item() > 0.999, level
    model.test_level = 0


def test_bfloat16_precision_reaches_the_predictor_and_is_checked(trained_pair):
    from maskrcnnpp.inference import NucleiPredictor

    cfg, records, model, _ = trained_pair
    image = cv2.imread(records[0]["file_name"])[:, :, ::-1].copy()
    cfg = cfg.clone()
    cfg.defrost()
    labels = {}
    for precision in ("float32", "bfloat16"):
        cfg.TEST.PRECISION = precision
        labels[precision] = NucleiPredictor(cfg, model=model)(image).labels
    assert ((labels["float32"] > 0) == (labels["bfloat16"] > 0)).mean() > 0.995
    with pytest.raises(ValueError, match="TEST.PRECISION = 'float16'"):
        setup_cfg("", ["TEST.PRECISION", "float16"])


def test_bfloat16_cpu_trainer_runs_the_forward_in_bfloat16(two_look_dataset, tmp_path):
    """SOLVER.AMP.ENABLED on the CPU: the forward pass runs in bfloat16, the weights stay float32
    and change, the losses are finite. (Whether it learns as well is measured on DSB2018 in
    docs/benchmark.md: a tiny network here learns too noisily to tell.)"""
    from maskrcnnpp.engine.trainer import BFloat16CPUTrainer

    name, _ = two_look_dataset
    for amp in (False, True):
        cfg = tiny_unet_cfg(name, tmp_path / f"amp{amp}", max_iter=3)
        cfg.defrost()
        cfg.SOLVER.AMP.ENABLED = amp
        torch.manual_seed(cfg.SEED)
        trainer = NucleiTrainer(cfg)
        assert isinstance(trainer._trainer, BFloat16CPUTrainer) == amp
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        dtypes = []
        conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
        before = conv.weight.detach().clone()
        trainer.train()
        assert set(dtypes) == {torch.bfloat16 if amp else torch.float32}
        assert conv.weight.dtype == torch.float32 and not torch.equal(conv.weight, before)
        losses = trainer.storage.history("total_loss").values()
        assert len(losses) == 3 and all(np.isfinite(v) for v, _ in losses)
