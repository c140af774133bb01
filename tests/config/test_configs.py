"""Every shipped YAML merges into a config with maskrcnnpp's keys, builds, and runs on the CPU."""

import pathlib

import pytest
import torch
from detectron2.modeling import build_model

import maskrcnnpp  # noqa: F401
from maskrcnnpp.config import setup_cfg

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
ALL_CONFIGS = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))


def test_configs_are_shipped():
    assert "Base-RCNN-FPN-Nuclei.yaml" in ALL_CONFIGS
    assert "quick/mask_rcnn_FPN.yaml" in ALL_CONFIGS
    assert "DSB2018/mask_rcnn_R_50_FPN.yaml" in ALL_CONFIGS
    for variant in ("unet_vgg", "wide_unet_vgg", "unetplus_vgg", "unetpp_vgg", "unetpp_vgg_nods"):
        assert f"DSB2018/{variant}.yaml" in ALL_CONFIGS


def test_every_config_merges():
    """Every shipped YAML merges with its _BASE_ files and passes the config checks (building
    and running the full-width ones is under -m slow: tests/conftest.py)."""
    for name in ALL_CONFIGS:
        assert setup_cfg(str(CONFIG_DIR / name)).MODEL.META_ARCHITECTURE, name


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_merges_builds_and_runs(name):
    cfg = setup_cfg(str(CONFIG_DIR / name), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    height, width = 97, 131  # odd sizes: the model pads to its size divisibility and crops back
    with torch.no_grad():
        outputs = model(
            [{"image": torch.rand(3, height, width) * 255, "height": height, "width": width}]
        )
    assert len(outputs) == 1
    if cfg.MODEL.META_ARCHITECTURE == "SemanticUNetPlusPlus":
        probs = outputs[0]["sem_seg"]
        instances_too = cfg.MODEL.UNETPP.TARGET == "interior_boundary"
        # the interior/boundary target returns background / nucleus, plus the nuclei
        assert probs.shape == (2 if instances_too else cfg.MODEL.UNETPP.NUM_CLASSES, height, width)
        assert torch.allclose(probs.sum(0), torch.ones(height, width), atol=1e-5)
        assert ("instances" in outputs[0]) == instances_too
        if instances_too:
            assert outputs[0]["instances"].pred_masks.shape[1:] == (height, width)
    else:
        assert outputs[0]["instances"].image_size == (height, width)


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG_DIR / "quick/mask_rcnn_FPN.yaml"}"\nMODEL:\n  NOT_A_KEY: 1\n')
    with pytest.raises(KeyError, match=r"bad\.yaml.*MODEL\.NOT_A_KEY"):
        setup_cfg(str(bad))


def test_unknown_override_is_named():
    with pytest.raises(KeyError, match=r"command-line override.*SOLVER\.NOPE"):
        setup_cfg(str(CONFIG_DIR / "quick/mask_rcnn_FPN.yaml"), ["SOLVER.NOPE", "1"])


def test_cuda_request_falls_back_to_cpu_when_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = setup_cfg(str(CONFIG_DIR / "quick/mask_rcnn_FPN.yaml"), ["MODEL.DEVICE", "cuda:0"])
    assert cfg.MODEL.DEVICE == "cpu"


def test_type_mismatch_names_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        f'_BASE_: "{CONFIG_DIR / "quick/mask_rcnn_FPN.yaml"}"\nSOLVER:\n  MAX_ITER: "many"\n'
    )
    with pytest.raises(ValueError, match=r"typo\.yaml.*SOLVER\.MAX_ITER"):
        setup_cfg(str(bad))


def test_missing_base_is_named(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "no_such_base.yaml"\n')
    with pytest.raises(FileNotFoundError, match=r"no_such_base\.yaml.*a _BASE_ of .*child\.yaml"):
        setup_cfg(str(child))


def test_add_maskrcnnpp_config_twice_keeps_merged_values():
    from detectron2.config import get_cfg

    from maskrcnnpp import add_maskrcnnpp_config

    cfg = get_cfg()
    add_maskrcnnpp_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.NESTED_FPN.SKIP",
            "unet+",
            "MODEL.UNETPP.TEST_LEVEL",
            "3",
            "SOLVER.OPTIMIZER",
            "AdamW",
            "INPUT.SCALE_FACTOR_TEST",
            "2.0",
        ]
    )
    cfg.MODEL.RESNETS.DEPTH = 18  # a Detectron2 key is left alone too
    add_maskrcnnpp_config(cfg)
    assert cfg.MODEL.NESTED_FPN.SKIP == "unet+" and cfg.MODEL.UNETPP.TEST_LEVEL == 3
    assert cfg.SOLVER.OPTIMIZER == "AdamW" and cfg.INPUT.SCALE_FACTOR_TEST == 2.0
    assert cfg.MODEL.RESNETS.DEPTH == 18
    fresh = get_cfg()
    add_maskrcnnpp_config(fresh)
    assert fresh.MODEL.NESTED_FPN.SKIP == "unet++" and fresh.SOLVER.OPTIMIZER == "SGD"
    assert fresh.key_is_deprecated("TEST.PREDICT.REFERENCE_SIZE")


def test_integer_for_a_float_key_in_yaml_is_that_float(tmp_path):
    """YAML reads `SCALE_FACTOR_TEST: 2` as an integer; yacs alone refuses it for a float key."""
    config = tmp_path / "ints.yaml"
    config.write_text(
        f'_BASE_: "{CONFIG_DIR / "quick/mask_rcnn_FPN.yaml"}"\n'
        "INPUT:\n  SCALE_FACTOR_TEST: 2\nSOLVER:\n  BASE_LR: 1\n  MAX_ITER: 7\n"
    )
    cfg = setup_cfg(str(config))
    assert cfg.INPUT.SCALE_FACTOR_TEST == 2.0 and isinstance(cfg.INPUT.SCALE_FACTOR_TEST, float)
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.MAX_ITER == 7 and isinstance(cfg.SOLVER.MAX_ITER, int)
