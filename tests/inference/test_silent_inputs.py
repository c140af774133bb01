"""
Inputs that were taken silently (issue 32 item 8): out-of-range thresholds and tiles, integer
literals for float keys, symbolic links, label folders without a single nucleus. Each test
failed before its fix.
"""

import os

import cv2
import numpy as np
import pytest
import tifffile

from maskrcnnpp.config import setup_cfg
from maskrcnnpp.data.label_folder import prepare_and_report
from maskrcnnpp.inference.input_files import collect_image_files, unique_output_names

QUICK = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    "configs",
    "quick",
    "mask_rcnn_NestedFPN.yaml",
)


@pytest.mark.parametrize(
    "key,value",
    [
        ("TEST.PREDICT.SCORE_THRESH", "1.5"),
        ("TEST.PREDICT.SCORE_THRESH", "-0.1"),
        ("TEST.NUCLEI.SCORE_THRESH", "2.0"),
        ("TEST.PREDICT.TILE_SIZE", "16"),
    ],
)
def test_out_of_range_prediction_settings_are_refused(key, value):
    """Before: accepted (no nucleus written at 1.5; 16-pixel tiles)."""
    with pytest.raises(ValueError) as error:
        setup_cfg(QUICK, [key, value])
    assert (
        f"{key} = {float(value) if '.' in value else int(value)!r} (set on the command line)"
        in str(error.value)
    )


def test_integer_literal_for_a_float_key_is_that_float():
    """Before: "Type mismatch (<class 'float'> vs. <class 'int'>)"."""
    cfg = setup_cfg(QUICK, ["INPUT.SCALE_FACTOR_TEST", "2", "TEST.PREDICT.SCORE_THRESH", "1"])
    assert cfg.INPUT.SCALE_FACTOR_TEST == 2.0 and isinstance(cfg.INPUT.SCALE_FACTOR_TEST, float)
    assert cfg.TEST.PREDICT.SCORE_THRESH == 1.0
    with pytest.raises(ValueError):  # a float for an integer key stays an error
        setup_cfg(QUICK, ["TEST.DETECTIONS_PER_IMAGE", "2.5"])


def test_symbolic_links_in_an_input_folder(tmp_path):
    """Before: a link and its target gave one output; a dangling link was skipped silently."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8), np.uint8))
    os.symlink("a.png", folder / "b.png")
    os.symlink("gone.png", folder / "c.png")
    files, problems = collect_image_files([str(folder), str(folder / "a.png")])
    assert files == [str(folder / "a.png"), str(folder / "b.png")]  # a.png given twice: once
    assert problems == [
        (str(folder / "c.png"), "a symbolic link to gone.png, which does not exist")
    ]
    assert unique_output_names(files) == ["a", "b"]


def test_label_folder_without_any_nucleus_warns(tmp_path, capsys):
    """Before: converted without a word (0 instances, a model trained on nothing)."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for k in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"n{k}.png"), np.full((32, 32), 100, np.uint8))
        tifffile.imwrite(str(tmp_path / "masks" / f"n{k}.tif"), np.zeros((32, 32), np.uint16))
    assert (
        prepare_and_report(
            str(tmp_path / "images"), str(tmp_path / "masks"), str(tmp_path / "out"), workers=1
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"warning: every label image of {tmp_path / 'masks'} is empty (all 0)" in err


def test_exif_orientation_is_named_not_applied(tmp_path, caplog):
    """Before: the tag was ignored without a word. The pixels stay as stored (the labels then
    match the stored image, as other readers of the raw pixels see it)."""
    from PIL import Image

    from maskrcnnpp.data.image_io import read_image_rgb

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=100)
    with caplog.at_level("WARNING"):
        image = read_image_rgb(tmp_path / "phone.jpg")
        read_image_rgb(tmp_path / "phone.jpg")  # said once
        read_image_rgb(tmp_path / "plain.jpg")
    assert image.shape == (20, 40, 3)
    warnings = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert warnings == [
        f"{tmp_path / 'phone.jpg'}: EXIF orientation 6 (the file asks viewers to rotate or "
        "mirror it) is not applied: the image is read, and its nuclei are written, as "
        "its pixels are stored"
    ]
