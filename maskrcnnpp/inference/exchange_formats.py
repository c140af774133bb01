"""The nuclei of a label image in the files other tools open: QuPath's GeoJSON, an ImageJ / Fiji
ROI set, and a label TIFF for napari. ``tools/predict.py --extra-outputs`` writes them.

Outlines follow the pixel edges. Coordinates are (x, y) = (column, row) in pixels with (0, 0)
the top-left corner of the top-left pixel, QuPath's and ImageJ's convention: pixel (r, c)
is the square [c, c + 1] x [r, r + 1], every vertex is an integer, and the area inside an
outline is exactly the nucleus' pixel count (a one-pixel nucleus is a unit square). To
rasterise an outline back, a pixel is inside when its centre (c + 0.5, r + 0.5) is. (The
measurements, as in the CSV, give centroids with (0, 0) the centre of the top-left pixel:
add 0.5 to compare them with the outlines.)

A nucleus is a list of polygons, one per 4-connected part (pixels sharing an edge), each
``[exterior, *holes]``; every ring is an (N, 2) int64 array of (x, y) vertices, not repeated at
the end, exteriors with a positive shoelace area (x right, y up: counter-clockwise, as
GeoJSON's right-hand rule asks), holes negative. Pixels that meet only at a corner are two
polygons sharing that vertex; background that meets the outside (or another hole) only at a
corner is a hole sharing that vertex with the exterior (or that hole). So no ring touches
itself and every polygon's interior is connected: the geometries are valid simple features
(what JTS, in QuPath, and shapely check).
"""

import io
import json
import zipfile
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from scipy import ndimage

from ..utils.atomic_io import atomic_open, atomic_write_bytes

__all__ = [
    "label_image_outlines",
    "mask_outlines",
    "nucleus_name",
    "write_imagej_rois",
    "write_label_tiff",
    "write_qupath_geojson",
]

Ring = np.ndarray
Polygon = List[Ring]

QUPATH_CLASSIFICATION = "Nucleus"


def nucleus_name(label: int) -> str:
    """The name of nucleus ``label`` in the GeoJSON and the ROI set: ``nucleus-<label>``, the
    value of its pixels in the label images and its ``label`` in the CSV."""
    return f"nucleus-{label}"


def _signed_area(ring: Ring) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _lattice_corners(contour: np.ndarray) -> np.ndarray:
    """The pixel-corner walk of an OpenCV contour traced on the lattice image (twice the
    resolution, see :func:`_part_outline`): the 8-connected tracer cuts each concave corner
    with a diagonal step between the two edge midpoints; the corner goes back in, and only the
    corners (both lattice coordinates even) are kept, halved."""
    points = contour.reshape(-1, 2)
    following = np.roll(points, -1, axis=0)
    walk = []
    for (x0, y0), (x1, y1) in zip(points.tolist(), following.tolist()):
        walk.append((x0, y0))
        if x0 != x1 and y0 != y1:  # a diagonal step: one of its two corners is a pixel corner
            walk.append((x1, y0) if x1 % 2 == 0 and y0 % 2 == 0 else (x0, y1))
    return np.array([p for p in walk if p[0] % 2 == 0 and p[1] % 2 == 0], np.int64) // 2


def _drop_collinear(ring: Ring) -> Ring:
    before, after = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - before[:, 0]) * (after[:, 1] - ring[:, 1]) - (
        ring[:, 1] - before[:, 1]
    ) * (after[:, 0] - ring[:, 0])
    return ring[cross != 0]


def _part_outline(part: np.ndarray) -> Polygon:
    """``[exterior, *holes]`` of a 4-connected set of pixels (module docstring)."""
    height, width = part.shape
    # Pixel (r, c) paints the 3 x 3 block at (2r, 2c) of a lattice image of twice the
    # resolution plus one: the lattice's boundary pixels lie on the pixel edges. One background
    # pixel of margin keeps the contours off the lattice's border.
    lattice = np.zeros((2 * height + 3, 2 * width + 3), np.uint8)
    for dy in range(3):
        for dx in range(3):
            lattice[1 + dy : 1 + dy + 2 * height : 2, 1 + dx : 1 + dx + 2 * width : 2] |= part
    contours, hierarchy = cv2.findContours(lattice, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    exterior, holes = None, []
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        ring = _drop_collinear(_lattice_corners(contour - 1))  # - 1: the margin
        if (_signed_area(ring) > 0) != (parent < 0):  # exterior positive, holes negative
            ring = ring[::-1]
        if parent < 0:
            assert exterior is None, "a 4-connected part has one exterior"
            exterior = ring
        else:
            holes.append(ring)
    return [exterior, *holes]


def mask_outlines(mask: np.ndarray, offset=(0, 0)) -> List[Polygon]:
    """
    The outlines of the pixels of ``mask`` along the pixel edges (conventions: module
    docstring): one polygon ``[exterior, *holes]`` per 4-connected part, traced by
    ``cv2.findContours`` (RETR_CCOMP: exterior and holes) on a lattice image of twice the
    resolution, whose contours, halved, follow the pixel edges.

    Parts are 4-connected (pixels sharing an edge) so that each polygon's interior is
    connected, as valid polygons need: pixels meeting only at a corner are two polygons
    touching at that vertex, and background meeting the outside only at a corner is a hole
    touching the exterior there.

    Args:
        mask (ndarray): (H, W) bool (or 0/1) mask.
        offset (tuple): (x, y) added to every vertex (the mask's position in its image).

    Returns:
        list[list[ndarray]]: the polygons, largest first; empty for an empty mask.
    """
    mask = np.asarray(mask).astype(np.uint8)
    count, parts, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    polygons = []
    for part in sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA]):
        x, y, w, h = stats[part, :4]
        crop = (parts[y : y + h, x : x + w] == part).astype(np.uint8)
        shift = np.array([offset[0] + x, offset[1] + y], np.int64)
        polygons.append([ring + shift for ring in _part_outline(crop)])
    return polygons


def label_image_outlines(labels: np.ndarray) -> Dict[int, List[Polygon]]:
    """:func:`mask_outlines` of each nucleus of a label image (0 background), by label, each
    traced in its bounding box."""
    labels = np.asarray(labels)
    outlines = {}
    for label, box in enumerate(ndimage.find_objects(labels.astype(np.int32, copy=False)), start=1):
        if box is not None:
            outlines[label] = mask_outlines(labels[box] == label, (box[1].start, box[0].start))
    return outlines


def _closed(ring: Ring) -> List[List[int]]:
    return np.concatenate([ring, ring[:1]]).tolist()


def write_qupath_geojson(
    path: str, labels: np.ndarray, measurements: Sequence[Dict], outlines: Optional[Dict] = None
) -> None:
    """
    Write the nuclei as a GeoJSON FeatureCollection that QuPath imports (File > Import objects,
    or drag and drop) as detections, atomically.

    One Feature per nucleus, in label order: ``geometry`` a Polygon (holes as interior rings)
    or a MultiPolygon (a nucleus in several parts), in pixel coordinates (module docstring);
    ``properties``: ``objectType`` "detection", ``name`` :func:`nucleus_name`,
    ``classification`` {"name": "Nucleus"} and ``measurements`` the nucleus' row of the CSV
    ({column: value}, as QuPath 0.4+ writes them).

    Args:
        path (str): the .geojson file.
        labels (ndarray): (H, W) label image, nuclei 1..K.
        measurements (list[dict]): row ``k - 1`` the measurements of nucleus ``k``.
        outlines (dict): :func:`label_image_outlines` of ``labels``, when already traced.
    """
    if outlines is None:
        outlines = label_image_outlines(labels)
    features = []
    for row in measurements:
        label = int(row["label"])
        polygons = [[_closed(ring) for ring in polygon] for polygon in outlines[label]]
        if len(polygons) == 1:
            geometry = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "objectType": "detection",
                    "name": nucleus_name(label),
                    "classification": {"name": QUPATH_CLASSIFICATION},
                    "measurements": dict(row),
                },
            }
        )
    with atomic_open(path, "w") as f:
        json.dump({"type": "FeatureCollection", "features": features}, f, separators=(",", ":"))


def _imagej_roi(polygons: List[Polygon], name: str):
    """One ImageJ ROI of a nucleus: a traced polygon ROI (what ImageJ's wand and Analyze
    Particles make) when it is one part without holes, else a composite (shape) ROI whose
    path holds every ring, filled by the even-odd rule as ImageJ does, so holes stay holes."""
    from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi

    if len(polygons) == 1 and len(polygons[0]) == 1:
        ring = polygons[0][0]
        roi = ImagejRoi.frompoints(ring, name=name)
        roi.roitype = ROI_TYPE.TRACED
        roi.options &= ROI_OPTIONS.SUB_PIXEL_RESOLUTION  # beyond ImageJ's integer range only
        # the vertices are pixel corners: the box ends at the largest (frompoints adds one)
        roi.right, roi.bottom = (int(v) for v in ring.max(axis=0))
        return roi
    path = []
    for ring in (ring for polygon in polygons for ring in polygon):
        path += [0, *ring[0]]  # MOVETO
        for x, y in ring[1:]:
            path += [1, x, y]  # LINETO
        path.append(4)  # CLOSE
    points = np.concatenate([ring for polygon in polygons for ring in polygon])
    roi = ImagejRoi()
    roi.roitype = ROI_TYPE.RECT  # with shape_roi_size > 0: a composite ROI
    roi.name = name
    roi.multi_coordinates = np.array(path, np.float32)
    roi.shape_roi_size = len(path)
    roi.left, roi.top = (int(v) for v in points.min(axis=0))
    roi.right, roi.bottom = (int(v) for v in points.max(axis=0))
    return roi


def write_imagej_rois(path: str, labels: np.ndarray, outlines: Optional[Dict] = None) -> None:
    """
    Write the nuclei as an ImageJ / Fiji ROI set (ROI Manager > More > Open), atomically: a
    .zip of one ``<name>.roi`` per nucleus in label order, named :func:`nucleus_name`, encoded
    with ``roifile``. A nucleus of one part without holes is a traced polygon ROI; one with
    holes or several parts is one composite ROI (so that the set holds one ROI, one row of
    ImageJ's measurements, per nucleus). An image without nuclei gives an empty set.

    Args:
        path (str): the .zip file.
        labels (ndarray): (H, W) label image, nuclei 1..K.
        outlines (dict): :func:`label_image_outlines` of ``labels``, when already traced.
    """
    if outlines is None:
        outlines = label_image_outlines(labels)
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
        for label, polygons in sorted(outlines.items()):
            name = nucleus_name(label)
            archive.writestr(name + ".roi", _imagej_roi(polygons, name).tobytes())


def write_label_tiff(path: str, labels: np.ndarray) -> None:
    """
    Write the label image as a single-page TIFF (deflate-compressed), atomically: uint16, or
    uint32 beyond 65535 nuclei; 0 background, nucleus ``k`` of value ``k``. napari opens it
    as a labels layer (``viewer.add_labels(tifffile.imread(path))``), Fiji as an image.

    Args:
        path (str): the .tif file.
        labels (ndarray): (H, W) label image, nuclei 1..K.
    """
    import tifffile

    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    encoded = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare descriptor
    tifffile.imwrite(encoded, labels.astype(dtype), photometric="minisblack", compression="zlib")
    atomic_write_bytes(path, encoded.getvalue())
