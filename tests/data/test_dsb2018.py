"""DSB2018 conversion (maskrcnnpp.data.dsb2018_conversion, run by datasets/prepare_dsb2018.py),
registration and image reading."""

import json
import os
import pickle
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from maskrcnnpp.data import dsb2018_conversion as prepare
from maskrcnnpp.data.dsb2018 import kaggle_image_path, register_dsb2018
from maskrcnnpp.data.image_io import ImageReadError, read_image_rgb, read_mask
from maskrcnnpp.utils import atomic_io

# A few real images of each modality (small ones; one with two masks sharing a pixel).
REAL_IMAGES = {
    "58c593bcb98386e7fd42a1d34e291db93477624b164e83ab2afa3caa90d1d921": "fluorescence",
    "3d0ca3498d97edebd28dbc7035eced40baa4af199af09cbb7251792accaa69fe": "fluorescence",
    "1609b1b8480ee52652a644403b3f7d5511410a016750aa3b9a4c8ddb3e893e8e": "fluorescence",
    "091944f1d2611c916b98c020bd066667e33f4639159b2a92407fe5a40788856d": "brightfield",
    "af576e8ec3a8d0b57eb6a311299e9e4fd2047970d3dd9d6f52e54ea6a91109da": "histology",
    "8e507d58f4c27cd2a82bee79fe27b069befd62a46fdaed20970a95a2ba819c7b": "histology",
}


@pytest.fixture(scope="module")
def real_root(tmp_path_factory, request):
    """A small Kaggle-layout root of symlinks to real image folders, with a train.txt."""
    shared = request.getfixturevalue("shared_dsb2018")
    root = tmp_path_factory.mktemp("dsb_real")
    (root / "stage1_train").mkdir()
    for image_id in REAL_IMAGES:
        source = shared / "stage1_train" / image_id
        if not source.is_dir():
            pytest.skip(f"image folder {source} missing from the shared DSB2018 data")
        (root / "stage1_train" / image_id).symlink_to(source)
    (root / "train.txt").write_text("".join(i + "\n" for i in REAL_IMAGES))
    return root


def _mask_files(image_dir):
    masks_dir = os.path.join(image_dir, "masks")
    return [os.path.join(masks_dir, n) for n in sorted(os.listdir(masks_dir))]


def _leftover_temporaries(folder):
    return [
        os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".tmp")
    ]


# --------------------------------------------------------------------------- conversion


def test_conversion_round_trip(real_root, capsys):
    assert prepare.prepare_and_report(str(real_root), workers=1) == 0
    with open(real_root / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]
    assert len(coco["images"]) == len(REAL_IMAGES)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for image in coco["images"]:
        assert not os.path.isabs(image["file_name"])  # out == root: relative
        image_file = os.path.join(real_root, image["file_name"])
        image_id = os.path.basename(os.path.dirname(os.path.dirname(image_file)))
        assert read_image_rgb(image_file).shape[:2] == (image["height"], image["width"])
        annotations = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        mask_files = _mask_files(os.path.dirname(os.path.dirname(image_file)))
        assert len(annotations) == len(mask_files)  # the real masks are all valid
        union = np.zeros((image["height"], image["width"]), bool)
        for annotation, mask_file in zip(annotations, mask_files):
            mask = cv2.imread(mask_file, cv2.IMREAD_GRAYSCALE) > 0
            rle = annotation["segmentation"]
            assert isinstance(rle["counts"], str)
            assert rle["size"] == [image["height"], image["width"]]
            decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(decoded.astype(bool), mask, err_msg=mask_file)
            rows, cols = np.nonzero(mask)
            assert annotation["area"] == rows.size
            assert annotation["bbox"] == [
                cols.min(),
                rows.min(),
                cols.max() - cols.min() + 1,
                rows.max() - rows.min() + 1,
            ]
            assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
            union |= mask
        semantic = cv2.imread(
            str(real_root / "semantic" / "train" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED
        )
        assert semantic.dtype == np.uint8 and set(np.unique(semantic)) <= {0, 1}
        np.testing.assert_array_equal(semantic, union.astype(np.uint8))
    assert _leftover_temporaries(real_root) == []
    # the split list was given: no default split written
    assert not (real_root / "val.txt").exists()


def test_conversion_into_other_folder_writes_absolute_file_names(real_root, tmp_path):
    out = tmp_path / "out"
    assert prepare.prepare_and_report(str(real_root), str(out), workers=2) == 0
    with open(out / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    for image in coco["images"]:
        assert os.path.isabs(image["file_name"]) and os.path.isfile(image["file_name"])
    assert len(os.listdir(out / "semantic" / "train")) == len(REAL_IMAGES)


def test_imaging_modality_of_real_images(real_root):
    for image_id, modality in REAL_IMAGES.items():
        image = read_image_rgb(kaggle_image_path(str(real_root), image_id))
        assert prepare.imaging_modality(image) == modality, image_id


def test_default_split_is_deterministic_and_stratified():
    rng = np.random.default_rng(0)
    # the paper's 670 images: modality proportions similar to DSB2018 stage 1
    modalities = ["fluorescence"] * 546 + ["histology"] * 108 + ["brightfield"] * 16
    ids = [f"{rng.integers(1 << 62):016x}" for _ in modalities]
    modality_by_id = dict(zip(ids, modalities))
    splits = prepare.stratified_split(modality_by_id)
    assert sorted(sum(splits.values(), [])) == sorted(ids)  # a partition
    assert {k: len(v) for k, v in splits.items()} == {"train": 335, "val": 134, "test": 201}
    for modality, count in [("fluorescence", 546), ("histology", 108), ("brightfield", 16)]:
        in_train = sum(modality_by_id[i] == modality for i in splits["train"])
        in_val = sum(modality_by_id[i] == modality for i in splits["val"])
        assert abs(in_train - 0.5 * count) <= 1 and abs(in_val - 0.2 * count) <= 1, modality
    shuffled = dict(sorted(modality_by_id.items(), key=lambda kv: kv[0][::-1]))
    assert prepare.stratified_split(shuffled) == splits
    # adding an image moves no other image to another split (hash order, not RNG)
    grown = prepare.stratified_split({**modality_by_id, "ffff": "brightfield"})
    assert len(set(grown["train"]) ^ set(splits["train"])) <= 2


def test_default_split_written_when_root_has_no_lists(real_root, tmp_path):
    root = tmp_path / "root"
    (root / "stage1_train").mkdir(parents=True)
    for image_id in REAL_IMAGES:
        (root / "stage1_train" / image_id).symlink_to(
            os.readlink(real_root / "stage1_train" / image_id)
        )
    out = tmp_path / "out"
    assert prepare.prepare_and_report(str(root), str(out), workers=1) == 0
    lists = {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(lists.values(), [])) == sorted(REAL_IMAGES)
    # one histology image of two in train, the single brightfield image in train
    assert sum(REAL_IMAGES[i] == "histology" for i in lists["train"]) == 1
    assert "091944f1d2611c916b98c020bd066667e33f4639159b2a92407fe5a40788856d" in lists["train"]
    for split, ids in lists.items():
        with open(out / "annotations" / f"instances_{split}.json") as f:
            assert len(json.load(f)["images"]) == len(ids)
    out_again = tmp_path / "out_again"
    assert prepare.prepare_and_report(str(root), str(out_again), workers=2) == 0
    for split, ids in lists.items():
        assert (out_again / f"{split}.txt").read_text().split() == ids


def test_default_split_of_full_shared_set(shared_dsb2018):
    ids = prepare.find_image_ids(str(shared_dsb2018))
    modality_by_id = {
        i: prepare.imaging_modality(read_image_rgb(kaggle_image_path(str(shared_dsb2018), i)))
        for i in ids
    }
    counts = {m: list(modality_by_id.values()).count(m) for m in set(modality_by_id.values())}
    assert counts == {"fluorescence": 378, "brightfield": 11, "histology": 75}
    sizes = {k: len(v) for k, v in prepare.stratified_split(modality_by_id).items()}
    assert sizes == {"train": 233, "val": 93, "test": 138}


def _write_synthetic_image(root, image_id, masks, size=(12, 16)):
    """A Kaggle-layout folder: random RGBA image of ``size`` and the given mask arrays."""
    image_dir = root / "stage1_train" / image_id
    (image_dir / "images").mkdir(parents=True)
    (image_dir / "masks").mkdir()
    rng = np.random.default_rng(len(image_id))
    image = rng.integers(0, 256, (*size, 4), dtype=np.uint8)
    cv2.imwrite(str(image_dir / "images" / f"{image_id}.png"), image)
    for k, mask in enumerate(masks):
        cv2.imwrite(str(image_dir / "masks" / f"m{k}.png"), mask.astype(np.uint8) * 255)
    return image_dir


def _blob(y, x, size=(12, 16)):
    mask = np.zeros(size, bool)
    mask[y : y + 3, x : x + 4] = True
    return mask


@pytest.fixture
def root_with_bad_masks(tmp_path):
    root = tmp_path / "bad"
    image_dir = _write_synthetic_image(root, "cells", [_blob(1, 1), _blob(6, 8)])
    bad = {
        "empty": image_dir / "masks" / "z_empty.png",
        "size": image_dir / "masks" / "z_wrong_size.png",
        "truncated": image_dir / "masks" / "z_truncated.png",
    }
    cv2.imwrite(str(bad["empty"]), np.zeros((12, 16), np.uint8))
    data = cv2.imencode(".png", _blob(2, 2).astype(np.uint8) * 255)[1].tobytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    _write_synthetic_image(root, "negative", [])
    # an image with one mask of another size: left out as a whole
    resized_dir = _write_synthetic_image(root, "resized", [_blob(1, 1)])
    bad["size"] = resized_dir / "masks" / "z_wrong_size.png"
    cv2.imwrite(str(bad["size"]), np.full((12, 15), 255, np.uint8))
    (root / "train.txt").write_text("cells\nnegative\nresized\n")
    return root, bad


def test_bad_masks_are_reported_and_left_out(root_with_bad_masks, capsys):
    root, bad = root_with_bad_masks
    assert prepare.prepare_and_report(str(root), workers=1) == 0
    stderr = capsys.readouterr().err
    for path in bad.values():
        assert str(path) in stderr
    assert "empty mask" in stderr and "15x12" in stderr and "truncated" in stderr
    with open(root / "annotations" / "instances_train.json") as f:
        coco = json.load(f)
    by_name = {os.path.basename(i["file_name"]): i["id"] for i in coco["images"]}
    assert set(by_name) == {"cells.png", "negative.png"}  # the negative image is kept
    # issue 13 item 4: the image with a mask of another size is left out, not kept with the
    # nuclei of its other masks as background (before: kept, with the masks that fit)
    assert "resized.png: image left out: 1 of its 2 masks are not 16x12 (WxH)" in stderr
    assert not (root / "semantic" / "train" / "resized.png").exists()
    assert [a["image_id"] for a in coco["annotations"]] == [by_name["cells.png"]] * 2
    assert [a["area"] for a in coco["annotations"]] == [12, 12]
    semantic = cv2.imread(str(root / "semantic" / "train" / "cells.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(semantic, (_blob(1, 1) | _blob(6, 8)).astype(np.uint8))


def test_strict_stops_naming_the_bad_file(root_with_bad_masks, run_script):
    root, bad = root_with_bad_masks
    result = run_script(
        "datasets/prepare_dsb2018.py", "--root", root, "--strict", "--workers", "2", timeout=None
    )
    assert result.returncode == 1, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(bad["empty"]) in error_lines[0], result.stderr
    assert not (root / "annotations").exists()
    assert _leftover_temporaries(root) == []


def test_stale_temporaries_removed_and_unlisted_split_warned(tmp_path, capsys):
    """Issue 13 item 8. Before: the .tmp files of a killed run stayed for ever, and the
    annotations of a split removed from the lists stayed without a word."""
    root = tmp_path / "root"
    _write_synthetic_image(root, "cells", [_blob(1, 1)])
    _write_synthetic_image(root, "more", [_blob(2, 2)])
    (root / "train.txt").write_text("cells\n")
    (root / "val.txt").write_text("more\n")
    assert prepare.prepare_and_report(str(root), workers=1) == 0
    stale = [
        root / "annotations" / ".instances_train.json.k1ll3d.tmp",
        root / "semantic" / "train" / ".cells.png.abc123.tmp",
        root / ".train.txt.zzz.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    (root / "val.txt").unlink()  # split 'val' retired
    capsys.readouterr()
    assert prepare.prepare_and_report(str(root), workers=1) == 0
    stderr = capsys.readouterr().err
    assert _leftover_temporaries(root) == []
    assert "removed 3 temporary file(s) left by an interrupted run" in stderr
    assert (
        f"warning: {root / 'annotations' / 'instances_val.json'} is of split 'val', which is no longer listed"
        in stderr
    )
    assert (root / "annotations" / "instances_val.json").exists()  # reported, not deleted


def test_unknown_id_in_split_list_is_an_error(tmp_path, capsys):
    root = tmp_path / "root"
    _write_synthetic_image(root, "cells", [_blob(1, 1)])
    (root / "val.txt").write_text("cells\nno_such_image\n")
    assert prepare.prepare_and_report(str(root), workers=1) == 1
    assert f"{root / 'val.txt'}:2" in capsys.readouterr().err


def test_read_only_output_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "download"
    _write_synthetic_image(root, "cells", [_blob(1, 1)])
    root.chmod(0o555)  # read-only by its permission bits (refused even when run as root)
    try:
        assert prepare.prepare_and_report(str(root), workers=1) == 1
    finally:
        root.chmod(0o755)
    assert f"{root}: output folder is read-only" in capsys.readouterr().err
    assert sorted(os.listdir(root)) == ["stage1_train"]


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_io.atomic_write_text(str(target), "old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_io.atomic_write_text(str(target), "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]


# --------------------------------------------------------------------------- registration


@pytest.fixture
def registered(tmp_path):
    root = tmp_path / "dsb"
    _write_synthetic_image(root, "a", [_blob(1, 1), _blob(6, 8)])
    _write_synthetic_image(root, "b", [_blob(0, 0)])
    _write_synthetic_image(root, "empty", [])
    (root / "train.txt").write_text("a\nempty\n")
    (root / "extra.txt").write_text("b\n")
    assert prepare.prepare_and_report(str(root), workers=1) == 0
    prefix = f"dsb_test_{uuid.uuid4().hex[:8]}"
    names = register_dsb2018(str(root), name=prefix)
    yield root, prefix, names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_registration_finds_splits(registered):
    root, prefix, names = registered
    expected = {
        f"{prefix}{kind}_{s}"
        for s in ("train", "val", "test", "extra")
        for kind in ("", "_sem_seg")
    }
    assert set(names) == expected
    dicts = DatasetCatalog.get(f"{prefix}_train")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.png", "empty.png"]
    assert [len(d["annotations"]) for d in dicts] == [2, 0]  # the negative is kept
    annotation = dicts[0]["annotations"][0]
    assert annotation["bbox_mode"] == BoxMode.XYWH_ABS and annotation["category_id"] == 0
    assert annotation["bbox"] == [1, 1, 4, 3]
    np.testing.assert_array_equal(
        mask_util.decode(annotation["segmentation"]).astype(bool), _blob(1, 1)
    )
    assert os.path.isfile(dicts[0]["file_name"])
    assert len(DatasetCatalog.get(f"{prefix}_extra")) == 1
    meta = MetadataCatalog.get(f"{prefix}_train")
    assert meta.thing_classes == ["nucleus"] and meta.evaluator_type == "coco"
    assert meta.json_file == str(root / "annotations" / "instances_train.json")

    sem_dicts = DatasetCatalog.get(f"{prefix}_sem_seg_train")
    semantic = cv2.imread(sem_dicts[0]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(semantic, (_blob(1, 1) | _blob(6, 8)).astype(np.uint8))
    sem_meta = MetadataCatalog.get(f"{prefix}_sem_seg_train")
    assert sem_meta.stuff_classes == ["background", "nucleus"] and sem_meta.ignore_label == 255
    assert sem_meta.evaluator_type == "sem_seg"


def test_loading_unprepared_split_says_what_to_run(registered):
    root, prefix, _ = registered
    for name in (f"{prefix}_val", f"{prefix}_sem_seg_val"):
        with pytest.raises(FileNotFoundError) as error:
            DatasetCatalog.get(name)
        message = str(error.value)
        assert str(root / "annotations" / "instances_val.json") in message
        assert f"python datasets/prepare_dsb2018.py --root {root}" in message


def test_standard_names_registered_on_import():
    for split in ("train", "val", "test"):
        assert f"dsb2018_{split}" in DatasetCatalog.list()
        assert MetadataCatalog.get(f"dsb2018_sem_seg_{split}").evaluator_type == "sem_seg"


# --------------------------------------------------------------------------- image reading


def test_read_16bit_png_is_stretched(tmp_path):
    image = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    path = tmp_path / "a16.png"
    cv2.imwrite(str(path), image)
    rgb = read_image_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 64], [128, 255]])
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_read_rgba_drops_alpha_and_gives_rgb_order(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 7
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    rgb = read_image_rgb(path)
    assert rgb.shape == (4, 6, 3)
    np.testing.assert_array_equal(rgb[0, 0], [10, 20, 30])


def test_read_grayscale_jpeg(tmp_path):
    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    path = tmp_path / "gray.jpg"
    cv2.imwrite(str(path), gray, [cv2.IMWRITE_JPEG_QUALITY, 100])
    rgb = read_image_rgb(path)
    assert rgb.shape == (16, 32, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0].astype(int) - gray).max() <= 3


def test_read_tiff_rgb_planar_and_16bit(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "rgb.tif"), rgb)
    tifffile.imwrite(
        tmp_path / "planar.tiff",
        np.moveaxis(rgb, -1, 0),
        photometric="rgb",
        planarconfig="separate",
    )
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "planar.tiff"), rgb)
    tifffile.imwrite(tmp_path / "g16.tif", np.array([[100, 300]], np.uint16))
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "g16.tif")[0, :, 1], [0, 255])


def test_read_compressed_tiff_that_tifffile_alone_cannot(tmp_path):
    """OpenCV writes LZW TIFFs; tifffile decodes LZW only with the optional imagecodecs."""
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imagecodecs is installed: tifffile decodes LZW itself, no fallback to test")
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "lzw.tif"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "lzw.tif"), rgb)
    gray16 = np.array([[100, 300], [150, 100]], np.uint16)
    cv2.imwrite(str(tmp_path / "lzw16.tiff"), gray16)
    np.testing.assert_array_equal(
        read_image_rgb(tmp_path / "lzw16.tiff")[:, :, 0], [[0, 255], [64, 0]]
    )


def test_read_tiny_image(tmp_path):
    image = np.arange(15, dtype=np.uint8).reshape(3, 5)
    cv2.imwrite(str(tmp_path / "tiny.png"), image)
    rgb = read_image_rgb(tmp_path / "tiny.png")
    assert rgb.shape == (3, 5, 3)
    np.testing.assert_array_equal(rgb[..., 1], image)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_file_raises_naming_it(tmp_path, suffix):
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / f"cut{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, image)
    else:
        cv2.imwrite(str(path), image)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as error:
        read_image_rgb(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, OSError) and error.value.path == str(path)


def test_empty_and_missing_files_raise(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="zero.png: file is empty"):
        read_image_rgb(tmp_path / "zero.png")
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_mask(tmp_path / "missing.png")
    error = pickle.loads(pickle.dumps(ImageReadError("x.png", "broken")))  # crosses processes
    assert (error.path, error.reason) == ("x.png", "broken")


def test_read_mask_binarises_any_encoding(tmp_path):
    mask = _blob(2, 3)
    cv2.imwrite(str(tmp_path / "m255.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "m1_16bit.png"), mask.astype(np.uint16))
    cv2.imwrite(
        str(tmp_path / "mrgb.png"), np.repeat(mask[..., None], 3, axis=2).astype(np.uint8) * 200
    )
    for name in ("m255.png", "m1_16bit.png", "mrgb.png"):
        read = read_mask(tmp_path / name)
        assert read.dtype == np.bool_
        np.testing.assert_array_equal(read, mask, err_msg=name)


def test_read_real_dsb_image(shared_dsb2018):
    image_id = next(iter(REAL_IMAGES))
    path = shared_dsb2018 / "stage1_train" / image_id / "images" / f"{image_id}.png"
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(read_image_rgb(path), bgra[..., 2::-1])
