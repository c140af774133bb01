"""SemanticPatchDatasetMapper: patches, symmetries that keep image and labels aligned, padding,
jitter, and unreadable files."""

import logging

import cv2
import numpy as np
import pytest

from maskrcnnpp.data.semantic_patch_mapper import SemanticPatchDatasetMapper


def write_pair(tmp_path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = (image[:, :, 0] > 127).astype(np.uint8)  # labels are a function of the pixels
    cv2.imwrite(str(tmp_path / "img.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "sem.png"), labels)
    return {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "height": height,
        "width": width,
        "image_id": 0,
    }


def mapper(is_train=True, size=32, jitter=0.0):
    return SemanticPatchDatasetMapper(
        is_train=is_train, patch_size=size, intensity_jitter=jitter, ignore_value=255
    )


def test_patches_keep_image_and_labels_aligned(tmp_path):
    record = write_pair(tmp_path, 70, 90)
    m = mapper()
    np.random.seed(0)
    seen = set()
    for _ in range(30):
        out = m(record)
        img, sem = out["image"].numpy(), out["sem_seg"].numpy()
        assert img.shape == (3, 32, 32) and sem.shape == (32, 32)
        assert (sem == (img[0] > 127)).all()  # flips / rotations applied to both alike
        seen.add(img.tobytes())
    assert len(seen) > 20  # random positions and symmetries


def test_rotations_and_flips_happen(tmp_path):
    record = write_pair(tmp_path, 32, 32)  # patch = whole image: only the symmetries change it
    original = cv2.imread(record["file_name"])[:, :, ::-1][:, :, 0]
    m = mapper()
    np.random.seed(1)
    variants = {m(record)["image"].numpy()[0].tobytes() for _ in range(60)}
    expected = set()
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(original[:, ::-1] if flip else original, k)
            expected.add(np.ascontiguousarray(v).tobytes())
    assert variants == expected  # exactly the 8 symmetries of the square


def test_small_image_is_padded_with_ignore(tmp_path):
    record = write_pair(tmp_path, 10, 20)
    out = mapper(size=32)(record)
    sem = out["sem_seg"].numpy()
    assert sem.shape == (32, 32)
    assert (sem == 255).sum() == 32 * 32 - 10 * 20


def test_intensity_jitter_changes_pixels_not_labels(tmp_path):
    record = write_pair(tmp_path, 32, 32)
    np.random.seed(2)
    out = mapper(jitter=0.5)(record)
    np.random.seed(2)
    plain = mapper(jitter=0.0)(record)
    assert (out["sem_seg"] == plain["sem_seg"]).all()
    assert not (out["image"] == plain["image"]).all()


def test_unreadable_training_image_is_named_and_skipped(tmp_path, caplog):
    record = write_pair(tmp_path, 40, 40)
    data = open(record["file_name"], "rb").read()
    open(record["file_name"], "wb").write(data[: len(data) // 3])
    with caplog.at_level(logging.WARNING):
        assert mapper()(record) is None
    assert "img.png" in caplog.text


def test_label_size_mismatch_is_named_and_skipped(tmp_path, caplog):
    record = write_pair(tmp_path, 40, 40)
    cv2.imwrite(record["sem_seg_file_name"], np.zeros((40, 41), np.uint8))
    with caplog.at_level(logging.WARNING):
        assert mapper()(record) is None
    assert "sem.png" in caplog.text


def test_test_mode_gives_whole_image_without_labels(tmp_path):
    record = write_pair(tmp_path, 45, 67)
    out = mapper(is_train=False)(record)
    assert out["image"].shape == (3, 45, 67) and "sem_seg" not in out


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="INTENSITY_JITTER"):
        mapper(jitter=1.5)


def test_bgr_models_get_bgr_images(tmp_path):
    record = write_pair(tmp_path, 20, 24)
    rgb = SemanticPatchDatasetMapper(
        is_train=False, patch_size=8, intensity_jitter=0.0, ignore_value=255, image_format="RGB"
    )(record)["image"]
    bgr = SemanticPatchDatasetMapper(
        is_train=False, patch_size=8, intensity_jitter=0.0, ignore_value=255, image_format="BGR"
    )(record)["image"]
    assert (bgr == rgb.flip(0)).all() and not (bgr == rgb).all()


def test_interior_boundary_targets_from_instance_masks(tmp_path):
    from pycocotools import mask as mask_util

    image = np.zeros((40, 60, 3), np.uint8)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:20, 10:22], truth[10:20, 22:34] = 1, 2  # two touching rectangles
    cv2.imwrite(str(tmp_path / "img.png"), image)
    cv2.imwrite(str(tmp_path / "sem.png"), (truth > 0).astype(np.uint8))
    record = {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "height": 40,
        "width": 60,
        "image_id": 0,
    }
    annotations = {
        record["file_name"]: [
            {"segmentation": mask_util.encode(np.asfortranarray((truth == k).astype(np.uint8)))}
            for k in (1, 2)
        ]
    }
    m = SemanticPatchDatasetMapper(
        is_train=True,
        patch_size=64,
        intensity_jitter=0.0,
        ignore_value=255,
        instance_annotations=annotations,
    )
    np.random.seed(0)
    for _ in range(3):  # the second and third draws come from the cached target
        sem = m(record)["sem_seg"].numpy()
        assert (sem == 255).sum() == 64 * 64 - 40 * 60  # padding stays ignored
        assert (sem == 1).sum() == 2 * 8 * 10  # interiors: each rectangle less its 1-pixel rim
        assert (sem == 2).sum() == 2 * (10 * 12 - 8 * 10)
        assert (sem == 0).sum() == 40 * 60 - 2 * 10 * 12


def test_kept_images_give_the_same_patches_without_reading_the_files(tmp_path, monkeypatch):
    import maskrcnnpp.data.semantic_patch_mapper as module

    records = []
    for k, (height, width) in enumerate([(70, 90), (40, 40)]):
        folder = tmp_path / str(k)
        folder.mkdir()
        records.append(dict(write_pair(folder, height, width, seed=k), image_id=k))
    reads = []
    original_read = module.read_image_rgb
    monkeypatch.setattr(
        module, "read_image_rgb", lambda path: reads.append(path) or original_read(path)
    )

    def patches(cache_mb):
        m = SemanticPatchDatasetMapper(
            is_train=True, patch_size=32, intensity_jitter=0.2, ignore_value=255, cache_mb=cache_mb
        )
        np.random.seed(3)
        outs = [m(records[i % 2]) for i in range(12)]
        return [(o["image"].numpy().copy(), o["sem_seg"].numpy().copy()) for o in outs], m

    reads.clear()
    decoded_each_time, _ = patches(0)
    assert len(reads) == 12
    reads.clear()
    kept, m = patches(1)  # 1 MB holds both images
    assert len(reads) == 2
    for (img_a, sem_a), (img_b, sem_b) in zip(decoded_each_time, kept):
        assert (img_a == img_b).all() and (sem_a == sem_b).all()
    # the returned tensors are copies: writing into them leaves the kept images alone
    out = m(records[1])
    out["image"].fill_(7)
    out["sem_seg"].fill_(7)
    image, labels = m._decoded[records[1]["file_name"]]
    assert (image != 7).any() and (labels != 7).any()

    # a budget below the first image's size keeps nothing: every visit reads the file
    reads.clear()
    small = SemanticPatchDatasetMapper(
        is_train=True,
        patch_size=32,
        intensity_jitter=0.0,
        ignore_value=255,
        cache_mb=70 * 90 * 4 / 1e6 - 1e-6,
    )
    for _ in range(3):
        small(records[0])
    assert len(reads) == 3 and small._decoded == {}


def test_negative_cache_size_is_named():
    with pytest.raises(ValueError, match="CACHE_MB"):
        SemanticPatchDatasetMapper(
            is_train=True, patch_size=32, intensity_jitter=0.0, ignore_value=255, cache_mb=-1
        )


def test_channel_shuffle_and_inversion_keep_the_labels(tmp_path):
    record = write_pair(
        tmp_path, 32, 32
    )  # patch = whole image: symmetries, channel order, inversion
    original = cv2.imread(record["file_name"])[:, :, ::-1]
    m = SemanticPatchDatasetMapper(
        is_train=True,
        patch_size=32,
        intensity_jitter=0.0,
        ignore_value=255,
        shuffle_channels=True,
        invert_prob=0.3,
    )
    np.random.seed(4)
    inverted, orders = 0, set()
    for _ in range(400):
        out = m(record)
        img, sem = out["image"].numpy(), out["sem_seg"].numpy()
        # undo the symmetry through the labels: they follow the geometry only
        geometry = next(
            (k, flip)
            for k in range(4)
            for flip in (False, True)
            if (np.rot90((original[:, ::-1] if flip else original)[:, :, 0] > 127, k) == sem).all()
        )
        base = np.rot90(original[:, ::-1] if geometry[1] else original, geometry[0]).transpose(
            2, 0, 1
        )
        was_inverted = not any((img[0] == base[c]).all() for c in range(3))
        if was_inverted:
            img = 255 - img
            inverted += 1
        order = tuple(next(c for c in range(3) if (img[i] == base[c]).all()) for i in range(3))
        assert sorted(order) == [0, 1, 2]  # a permutation of the image's own channels
        orders.add(order)
    assert len(orders) == 6
    assert 90 <= inverted <= 150  # 400 draws at 0.3: 120 expected, sd 9


def test_invert_probability_outside_0_1_is_named():
    with pytest.raises(ValueError, match="INVERT_PROB.*1.5"):
        SemanticPatchDatasetMapper(
            is_train=True, patch_size=32, intensity_jitter=0.0, ignore_value=255, invert_prob=1.5
        )
