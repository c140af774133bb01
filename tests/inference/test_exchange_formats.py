"""
maskrcnnpp/inference/exchange_formats.py and the writer's --extra-outputs: what is written (QuPath
GeoJSON, ImageJ ROI set, label TIFF) reads back (json, roifile.roiread, tifffile) to outlines
whose rasterisation is each nucleus' mask (IoU >= 0.95 asked; they are exact), for a convex
blob, a ring, a two-part nucleus, parts and holes touching at a pixel corner, an island in a
hole, one-pixel nuclei, an image without nuclei and more than 255 nuclei; the files are
atomic and removed by --overwrite.
"""

import json
import os

import cv2
import numpy as np
import pytest
import roifile
import tifffile

from maskrcnnpp.inference import measure_nuclei
from maskrcnnpp.inference.exchange_formats import (
    label_image_outlines,
    mask_outlines,
    write_imagej_rois,
    write_label_tiff,
    write_qupath_geojson,
)
from maskrcnnpp.inference.prediction_writer import PredictionWriter, prepare_output_dir
from maskrcnnpp.inference.predictor import NucleiPrediction


def rasterise(rings, shape):
    """The pixels whose centres lie inside ``rings`` (x, y pixel-corner coordinates, the
    even-odd rule over all rings, as ImageJ's composite ROIs), with cv2.fillPoly: drawn at
    twice the resolution, where pixel (r, c)'s centre is the point (2c + 1, 2r + 1) and no
    outline passes through a centre."""
    fine = np.zeros((2 * shape[0] + 2, 2 * shape[1] + 2), np.uint8)
    cv2.fillPoly(fine, [np.round(np.asarray(r, np.float64) * 2).astype(np.int32) for r in rings], 1)
    return fine[1 : 2 * shape[0] : 2, 1 : 2 * shape[1] : 2].astype(bool)


def geojson_mask(geometry, shape):
    polygons = (
        geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    )
    assert geometry["type"] == ("MultiPolygon" if len(polygons) > 1 else "Polygon")
    mask = np.zeros(shape, bool)
    for polygon in polygons:  # parts filled one by one: they touch at most at corners
        for ring in polygon:
            assert ring[0] == ring[-1]  # GeoJSON rings are closed
        mask |= rasterise(polygon, shape)
    return mask


def assert_same_mask(found, expected):
    iou = (found & expected).sum() / max((found | expected).sum(), 1)
    assert iou >= 0.95
    np.testing.assert_array_equal(found, expected)  # pixel outlines: exact


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def case_labels(name):
    """The label images of the cases."""
    shape = (48, 64)
    labels = np.zeros(shape, np.int32)
    if name == "convex_blob":
        labels[disc(shape, (20, 30), 9)] = 1
    elif name == "ring":
        labels[disc(shape, (24, 30), 12) & ~disc(shape, (24, 30), 5)] = 1
    elif name == "two_parts":
        labels[disc(shape, (10, 10), 5) | disc(shape, (30, 45), 7)] = 1
        labels[disc(shape, (35, 12), 4)] = 2
    elif name == "one_pixel":
        labels[5, 7] = 1
        labels[0, 0] = 2  # in the image's corner
        labels[47, 63] = 3
    elif name == "corner_touching":
        labels[10:14, 10:14] = 1
        labels[14:18, 14:18] = 1  # touches the first square at one corner only
        labels[30:36, 30:36] = 2
        labels[30, 30] = 0  # a notch in the corner, and ...
        labels[31, 31] = 0  # ... a one-pixel hole touching it (the outside) at a corner
        labels[33:35, 33:35] = 0  # another hole
        labels[20:26, 40:46] = 3
        labels[21, 41] = 0  # a one-pixel hole touching ...
        labels[22, 42] = 0  # ... another one-pixel hole at a corner
    elif name == "island_in_hole":
        target = disc(shape, (24, 32), 14) & ~disc(shape, (24, 32), 9) | disc(shape, (24, 32), 4)
        labels[target] = 1
    elif name == "no_nuclei":
        pass
    elif name == "many":  # > 255 nuclei, touching each other
        labels = np.zeros((60, 80), np.int32)
        labels[:, :] = (np.arange(60)[:, None] // 3) * 20 + np.arange(80)[None, :] // 4 + 1
        labels[::7, ::5] = 0
    else:
        raise KeyError(name)
    return labels


CASES = [
    "convex_blob",
    "ring",
    "two_parts",
    "one_pixel",
    "corner_touching",
    "island_in_hole",
    "no_nuclei",
    "many",
]


def write_all(tmp_path, labels):
    image = np.dstack([(labels * 37 % 256).astype(np.uint8)] * 3)
    rows = measure_nuclei(labels, np.linspace(0.9, 0.5, labels.max()), image)
    paths = {
        "geojson": tmp_path / "x.geojson",
        "rois": tmp_path / "x.zip",
        "tiff": tmp_path / "x.tif",
    }
    write_qupath_geojson(str(paths["geojson"]), labels, rows)
    write_imagej_rois(str(paths["rois"]), labels)
    write_label_tiff(str(paths["tiff"]), labels)
    return paths, rows


@pytest.mark.parametrize("name", CASES)
def test_formats_read_back_to_the_masks(name, tmp_path):
    labels = case_labels(name)
    num = int(labels.max())
    if name == "many":
        assert num > 255
    paths, rows = write_all(tmp_path, labels)

    # GeoJSON, standard library only
    with open(paths["geojson"]) as f:
        collection = json.load(f)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == num
    for k, feature in enumerate(collection["features"], 1):
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["name"] == f"nucleus-{k}"
        assert properties["classification"] == {"name": "Nucleus"}
        assert properties["measurements"] == dict(rows[k - 1])
        assert_same_mask(geojson_mask(feature["geometry"], labels.shape), labels == k)

    # ImageJ ROI set
    rois = roifile.roiread(str(paths["rois"])) if num else []
    assert [roi.name for roi in rois] == [f"nucleus-{k}" for k in range(1, num + 1)]
    for k, roi in enumerate(rois, 1):
        rings = roi.coordinates(multi=True)
        polygons = mask_outlines(labels == k)
        assert len(rings) == sum(len(polygon) for polygon in polygons)
        simple = len(rings) == 1  # one part without holes: a traced ROI, else a composite one
        assert roi.composite != simple
        if simple:
            assert roi.roitype == roifile.ROI_TYPE.TRACED
        assert_same_mask(rasterise(rings, labels.shape), labels == k)
        # the bounding box ImageJ reads
        ys, xs = np.nonzero(labels == k)
        assert (roi.left, roi.top, roi.right, roi.bottom) == (
            xs.min(),
            ys.min(),
            xs.max() + 1,
            ys.max() + 1,
        )
    if not num:
        import zipfile

        with zipfile.ZipFile(paths["rois"]) as archive:
            assert archive.namelist() == []

    # label TIFF
    read = tifffile.imread(str(paths["tiff"]))
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, labels)


def test_outline_conventions():
    """Pixel-corner coordinates, exact areas, exteriors positive and holes negative (shoelace,
    x right and y up), no ring touching itself."""
    pixel = np.zeros((3, 4), bool)
    pixel[1, 2] = True
    ((ring,),) = mask_outlines(pixel)
    assert sorted(map(tuple, ring.tolist())) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert mask_outlines(np.zeros((3, 3), bool)) == []

    def area(ring):
        x, y = ring[:, 0], ring[:, 1]
        return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))

    rng = np.random.default_rng(0)
    for _ in range(300):
        mask = rng.random(rng.integers(1, 10, size=2)) < rng.uniform(0.2, 0.9)
        polygons = mask_outlines(mask, offset=(5, 7))
        total = 0.0
        for exterior, *holes in polygons:
            assert area(exterior) > 0 and all(area(h) < 0 for h in holes)
            for r in (exterior, *holes):
                assert len({tuple(p) for p in r.tolist()}) == len(r)  # simple ring
            total += area(exterior) + sum(area(h) for h in holes)
        assert total == mask.sum()
        found = np.zeros(mask.shape, bool)
        for polygon in polygons:
            found |= rasterise([r - (5, 7) for r in polygon], mask.shape)
        np.testing.assert_array_equal(found, mask)


def test_corner_touching_parts_are_separate_polygons():
    labels = case_labels("corner_touching")
    outlines = label_image_outlines(labels)
    assert [len(p) for p in outlines[1]] == [1, 1]  # two squares sharing a corner, no hole
    assert [len(p) for p in outlines[2]] == [3]  # one exterior and two holes, one touching it
    assert [len(p) for p in outlines[3]] == [3]  # one exterior, two holes touching at a corner
    exterior, *holes = ({tuple(p) for p in ring.tolist()} for ring in outlines[2][0])
    assert sorted(len(exterior & hole) for hole in holes) == [0, 1]
    assert set.union(*(exterior & hole for hole in holes)) == {(31, 31)}


def test_label_tiff_beyond_65535_nuclei(tmp_path):
    labels = np.arange(300 * 240, dtype=np.int64).reshape(300, 240)  # 0 .. 71999
    write_label_tiff(str(tmp_path / "big.tif"), labels)
    read = tifffile.imread(str(tmp_path / "big.tif"))
    assert read.dtype == np.uint32
    np.testing.assert_array_equal(read, labels)


# --------------------------------------------------------------------------------------------
# The writer: --extra-outputs files, atomic, removed by --overwrite
# --------------------------------------------------------------------------------------------


def prediction_of(labels):
    return NucleiPrediction(labels=labels, scores=np.linspace(0.9, 0.5, labels.max()), num_tiles=1)


def test_writer_extra_outputs_and_overwrite(tmp_path):
    out = tmp_path / "out"
    prepare_output_dir(str(out), overwrite=False)
    writer = PredictionWriter(str(out), extra_outputs=("geojson", "imagej-rois", "label-tiff"))
    labels = case_labels("two_parts")
    image = np.zeros(labels.shape + (3,), np.uint8)
    assert writer.write_image(1, "a", "in/a.png", image, prediction_of(labels)) == 2
    writer.write_image(2, "empty", "in/empty.png", image, prediction_of(np.zeros_like(labels)))
    writer.close()
    written = sorted(
        os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs
    )
    assert written == sorted(
        [
            "coco_images.json",
            "coco_instances_results.json",
            *(
                f"{kind}/{n}.{ext}"
                for n in ("a", "empty")
                for kind, ext in (
                    ("labels", "png"),
                    ("overlays", "png"),
                    ("measurements", "csv"),
                    ("geojson", "geojson"),
                    ("rois", "zip"),
                    ("labels_tiff", "tif"),
                )
            ),
        ]
    )
    with open(out / "geojson" / "a.geojson") as f:
        assert len(json.load(f)["features"]) == 2
    # --overwrite removes all of them (and the temporaries a kill may leave), not the user's
    (out / "rois" / ".a.zip.x1y2.tmp").write_bytes(b"")
    (out / "geojson" / "notes.txt").write_text("mine")
    removed = prepare_output_dir(str(out), overwrite=True)
    assert len(removed) == len(written) + 1
    remaining = [os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs]
    assert remaining == ["geojson/notes.txt"]


def test_writer_default_writes_no_extra_output(tmp_path):
    writer = PredictionWriter(str(tmp_path))
    labels = case_labels("convex_blob")
    writer.write_image(
        1, "a", "a.png", np.zeros(labels.shape + (3,), np.uint8), prediction_of(labels)
    )
    # the progress record of a run under way lies beside the outputs until the writer closes
    assert sorted(os.listdir(tmp_path)) == [
        ".predict_progress.jsonl",
        "labels",
        "measurements",
        "overlays",
    ]
    with pytest.raises(ValueError, match="unknown extra output 'qupath'"):
        PredictionWriter(str(tmp_path), extra_outputs=("qupath",))


def test_failed_extra_output_leaves_no_partial_file(tmp_path, monkeypatch):
    """A write that fails half way (here the ROI set) leaves no .zip and no temporary file."""
    import maskrcnnpp.inference.exchange_formats as formats

    def broken_roi(polygons, name):
        raise OSError("disk full")

    monkeypatch.setattr(formats, "_imagej_roi", broken_roi)
    writer = PredictionWriter(str(tmp_path), extra_outputs=("imagej-rois",))
    labels = case_labels("convex_blob")
    with pytest.raises(OSError, match="disk full"):
        writer.write_image(
            1, "a", "a.png", np.zeros(labels.shape + (3,), np.uint8), prediction_of(labels)
        )
    assert os.listdir(tmp_path / "rois") == []
    assert writer.images == []  # not listed in the COCO files


def test_writer_keeps_more_nuclei_than_a_16_bit_png_holds(tmp_path, capsys):
    """An image with more than 65535 nuclei: its label image is a 32-bit TIFF (the PNG cannot
    number them), every nucleus kept, said on stderr; the napari reader opens it."""
    from maskrcnnpp.napari.reader import read_prediction_outputs

    labels = np.zeros((540, 540), np.int32)
    labels[::2, ::2] = np.arange(1, 270 * 270 + 1, dtype=np.int32).reshape(270, 270)  # 72,900
    out = tmp_path / "out"
    prepare_output_dir(str(out), overwrite=False)
    writer = PredictionWriter(str(out))
    image = np.zeros(labels.shape + (3,), np.uint8)
    assert writer.write_image(1, "dense", "in/dense.png", image, prediction_of(labels)) == 72_900
    writer.close()
    assert not (out / "labels" / "dense.png").exists()
    stored = tifffile.imread(str(out / "labels" / "dense.tif"))
    assert stored.dtype == np.uint32
    np.testing.assert_array_equal(stored, labels)
    assert "72900 nuclei do not fit a 16-bit PNG" in capsys.readouterr().err
    layers = read_prediction_outputs(str(out))
    nuclei = [data for data, _, kind in layers if kind == "labels"]
    assert len(nuclei) == 1 and int(nuclei[0].max()) == 72_900
    # --overwrite removes it too
    prepare_output_dir(str(out), overwrite=True)
    assert not (out / "labels" / "dense.tif").exists()
