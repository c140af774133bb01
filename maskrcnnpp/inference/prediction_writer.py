"""The output folder of a prediction run: per-image label images, overlays and measurement
CSVs, the extra outputs asked for, and one COCO results file for the run; every file is
written atomically.

Layout of ``output_dir``::

    labels/<name>.png         16-bit label image: 0 background, 1..N the nuclei (an image
                              with more than 65535 nuclei: labels/<name>.tif, 32-bit)
    overlays/<name>.png       the image with each nucleus outlined in its own colour
    measurements/<name>.csv   one row per nucleus (MEASUREMENT_COLUMNS, floats to 4 decimals)
    coco_instances_results.json   COCO results (RLE masks) of every image
    coco_images.json          {"images": [{"id", "file_name", "output_name", "height",
                               "width", "num_tiles"}], "categories": [{"id": 1, "name": "nucleus"}]}
                              (file_name: the input file; output_name: its <name> above)
    .predict_progress.jsonl   while a run is under way: one line per finished image (its
                              coco_images entry and COCO results), read by --resume; removed
                              once the COCO files are written

and, with ``extra_outputs`` (tools/predict.py ``--extra-outputs``; the files:
:mod:`maskrcnnpp.inference.exchange_formats`)::

    geojson/<name>.geojson    "geojson": QuPath detections, one Feature per nucleus
    rois/<name>.zip           "imagej-rois": ImageJ / Fiji ROI set, one ROI per nucleus
    labels_tiff/<name>.tif    "label-tiff": the label image as a TIFF (napari labels layer)

Label ``k`` of an image is row ``k`` of its CSV, its ``k``-th result in the COCO file, and the
``nucleus-<k>`` of its GeoJSON and ROI set. The COCO files list exactly the images whose files
are all complete (also after an interrupt or a failed write, see tools/predict.py): an image
whose files cannot all be written has the ones written removed. :func:`finished_images` reads
a stopped run's finished images back (``--resume``). One run per folder:
:func:`check_output_dir` refuses a non-empty folder unless ``--overwrite``, and
:func:`prepare_output_dir` then removes only the files of the layout above (every format's,
whichever the new run writes).
"""

import contextlib
import csv
import fnmatch
import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..utils.atomic_io import atomic_open, atomic_write_png
from ..utils.output_folder import OutputFolderError, check_writable_folder
from ..utils.visualization import draw_labels
from .coco_results import NUCLEUS_CATEGORY_ID, coco_instance_results
from .exchange_formats import (
    label_image_outlines,
    write_imagej_rois,
    write_label_tiff,
    write_qupath_geojson,
)
from .measurements import MEASUREMENT_COLUMNS, measure_nuclei

__all__ = [
    "EXTRA_OUTPUTS",
    "OutputFolderError",
    "PredictionWriter",
    "check_output_dir",
    "finished_images",
    "prepare_output_dir",
]

MAX_LABELS_16_BIT = 2**16 - 1

COCO_FILES = ("coco_instances_results.json", "coco_images.json")
# One JSON line per finished image while a run is under way (removed by PredictionWriter.close).
PROGRESS_FILE = ".predict_progress.jsonl"
# The extra outputs by the name --extra-outputs takes: (folder, file extension).
EXTRA_OUTPUTS = {
    "geojson": ("geojson", ".geojson"),
    "imagej-rois": ("rois", ".zip"),
    "label-tiff": ("labels_tiff", ".tif"),
}
# Every per-image folder of the layout and its files' extension.
_IMAGE_FILES = {
    "labels": ".png",
    "overlays": ".png",
    "measurements": ".csv",
    **dict(EXTRA_OUTPUTS.values()),
}
# The files a prediction run writes (and the temporaries atomic_open may leave), relative to
# the output folder: all that --overwrite removes.
_RUN_FILE_PATTERNS = {
    "": [*COCO_FILES, *(f".{name}.*.tmp" for name in COCO_FILES), PROGRESS_FILE],
    **{folder: [f"*{ext}", f".*{ext}.*.tmp"] for folder, ext in _IMAGE_FILES.items()},
}
# an image with more nuclei than a 16-bit PNG holds gets labels/<name>.tif (32-bit) instead
LABELS_32_BIT_EXTENSION = ".tif"
_RUN_FILE_PATTERNS["labels"] += [
    f"*{LABELS_32_BIT_EXTENSION}",
    f".*{LABELS_32_BIT_EXTENSION}.*.tmp",
]


def _is_run_file(relative: str) -> bool:
    folder, name = os.path.split(relative)
    return any(fnmatch.fnmatchcase(name, p) for p in _RUN_FILE_PATTERNS.get(folder, ()))


def _folder_contents(output_dir: str) -> List[str]:
    """Every file and folder under ``output_dir``, relative to it (folders with a trailing /)."""
    found = []
    for root, dirs, files in os.walk(output_dir):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), output_dir))
        if root != output_dir and not dirs and not files:
            found.append(os.path.relpath(root, output_dir) + "/")
    return sorted(found)


def check_output_dir(output_dir: str, *, overwrite: bool) -> None:
    """
    Check, before any work and without creating anything, that ``output_dir`` can take a run:
    it is a folder (or can be created as one), writable, and empty unless ``overwrite``
    (a run's outputs are only consistent within one run: a reused folder would mix them).

    Raises:
        OutputFolderError: naming the folder and the fault.
    """
    where = f"--output {output_dir}"
    check_writable_folder(output_dir, "--output")
    if not os.path.isdir(output_dir):
        return
    contents = _folder_contents(output_dir)
    if not contents:
        return
    if not overwrite:
        raise OutputFolderError(
            f"{where} is not empty ({len(contents)} file(s), e.g. {contents[0]}): choose a new "
            "folder, or pass --overwrite to replace a previous prediction run's outputs there"
        )
    if not os.access(output_dir, os.W_OK) or not os.stat(output_dir).st_mode & 0o222:
        raise OutputFolderError(f"{where} is not writable (read-only)")


def prepare_output_dir(output_dir: str, *, overwrite: bool) -> List[str]:
    """
    Create ``output_dir`` and, with ``overwrite``, remove the files a previous prediction run
    left there (``labels/*.png``, ``overlays/*.png``, ``measurements/*.csv``, the extra
    outputs' ``geojson/*.geojson``, ``rois/*.zip``, ``labels_tiff/*.tif``, the two COCO files,
    PROGRESS_FILE and the temporaries; nothing else); without, only the temporaries a killed
    run left. Call :func:`check_output_dir` first.

    Returns:
        list[str]: the removed files, relative to ``output_dir``.
    """
    os.makedirs(output_dir, exist_ok=True)
    removed = []
    for relative in _folder_contents(output_dir):
        # without overwrite (--resume), the temporaries of a killed run only
        if _is_run_file(relative) and (overwrite or relative.endswith(".tmp")):
            os.remove(os.path.join(output_dir, relative))
            removed.append(relative)
    return removed


class PredictionWriter:
    """Writes each image's outputs as it comes, and the run's COCO files at :meth:`close`.

    Args:
        output_dir (str): the output folder.
        extra_outputs (list[str]): names of :data:`EXTRA_OUTPUTS` to write too (none: the
            label images, overlays, CSVs and COCO files only).
    """

    def __init__(self, output_dir: str, extra_outputs: Sequence[str] = ()):
        unknown = [name for name in extra_outputs if name not in EXTRA_OUTPUTS]
        if unknown:
            raise ValueError(
                f"unknown extra output {unknown[0]!r} (choose from {', '.join(EXTRA_OUTPUTS)})"
            )
        self.output_dir = output_dir
        self.extra_outputs = [name for name in EXTRA_OUTPUTS if name in extra_outputs]
        self.images: List[Dict] = []
        self.results: List[Dict] = []
        self._progress = None  # PROGRESS_FILE, opened at the first finished image

    def path(self, kind: str, name: str) -> str:
        """Path of image ``name``'s file in folder ``kind`` of the layout ("labels",
        "overlays", "measurements", "geojson", "rois" or "labels_tiff")."""
        return os.path.join(self.output_dir, kind, name + _IMAGE_FILES[kind])

    def write_image(
        self, image_id: int, name: str, file_name: str, image: np.ndarray, prediction
    ) -> int:
        """
        Write image ``name``'s files and record it as finished; when any of its files cannot be
        written (a full disk), the ones written are removed and the error is raised.

        Args: as :meth:`_write_files`.

        Returns:
            int: the number of nuclei written.
        """
        try:
            entry, results = self._write_files(image_id, name, file_name, image, prediction)
        except BaseException:
            self._remove_files(name)
            raise
        self._record(entry, results)
        return len(results)

    def _write_files(self, image_id: int, name: str, file_name: str, image: np.ndarray, prediction):
        """
        Args:
            image_id (int): the image's id in the COCO files.
            name (str): output file stem, unique within the run.
            file_name (str): the input file, as recorded in ``coco_images.json``.
            image (ndarray): (H, W, 3) uint8 RGB image as predicted on.
            prediction (NucleiPrediction): its nuclei.

        Returns:
            (dict, list[dict]): its ``coco_images.json`` entry and its COCO results.
        """
        labels, scores = prediction.labels, prediction.scores
        measurements = measure_nuclei(labels, scores, image)
        if labels.max(initial=0) > MAX_LABELS_16_BIT:
            # a 16-bit PNG cannot number them: the label image as a 32-bit TIFF instead
            path = self.labels_path(name, labels)
            write_label_tiff(path, labels)
            tqdm.write(
                f"note: {file_name}: {labels.max()} nuclei do not fit a 16-bit PNG (at most "
                f"{MAX_LABELS_16_BIT}): its label image is {path}, a 32-bit TIFF",
                file=sys.stderr,
            )
        else:
            atomic_write_png(self.path("labels", name), labels.astype(np.uint16))
        atomic_write_png(self.path("overlays", name), draw_labels(image, labels, fill_alpha=0.0))
        rows = [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in measurements
        ]
        with atomic_open(self.path("measurements", name), "w") as f:
            writer = csv.DictWriter(f, fieldnames=MEASUREMENT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        self._write_extra_outputs(name, labels, rows)
        entry = {
            "id": image_id,
            "file_name": file_name,
            "output_name": name,
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "num_tiles": int(prediction.num_tiles),
        }
        return entry, coco_instance_results(image_id, labels, measurements)

    def _write_extra_outputs(self, name: str, labels: np.ndarray, rows: List[Dict]) -> None:
        outlines = None
        for output in self.extra_outputs:
            path = self.path(EXTRA_OUTPUTS[output][0], name)
            if output == "label-tiff":
                write_label_tiff(path, labels)
                continue
            if outlines is None:  # traced once for the GeoJSON and the ROI set
                outlines = label_image_outlines(labels)
            if output == "geojson":
                write_qupath_geojson(path, labels, rows, outlines=outlines)
            else:
                write_imagej_rois(path, labels, outlines=outlines)

    def labels_path(self, name: str, labels: np.ndarray) -> str:
        """``labels/<name>.png`` (16-bit), or ``labels/<name>.tif`` (32-bit) for an image with
        more than 65535 nuclei."""
        if labels.max(initial=0) > MAX_LABELS_16_BIT:
            return os.path.join(self.output_dir, "labels", name + LABELS_32_BIT_EXTENSION)
        return self.path("labels", name)

    def image_files(self, name: str) -> List[str]:
        """The paths of the files this run writes for image ``name``: its label image (the
        16-bit PNG, or the 32-bit TIFF where that was written), overlay, measurements and extra
        outputs."""
        tiff = os.path.join(self.output_dir, "labels", name + LABELS_32_BIT_EXTENSION)
        kinds = ["overlays", "measurements"] + [EXTRA_OUTPUTS[o][0] for o in self.extra_outputs]
        labels = tiff if os.path.isfile(tiff) else self.path("labels", name)
        return [labels] + [self.path(kind, name) for kind in kinds]

    def _remove_files(self, name: str) -> None:
        tiff = os.path.join(self.output_dir, "labels", name + LABELS_32_BIT_EXTENSION)
        for path in [*self.image_files(name), tiff, self.path("labels", name)]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def _record(self, entry: Dict, results: List[Dict], *, remove_on_failure: bool = True) -> None:
        """Record a finished image (its files complete) in memory and in PROGRESS_FILE;
        on a failure (a full disk) remove its files (unless ``remove_on_failure`` is False:
        a stopped run's image) and raise."""
        try:
            if self._progress is None:
                self._progress = open(os.path.join(self.output_dir, PROGRESS_FILE), "a")
                if self._progress.tell():  # a stopped run's record, maybe with a torn last line
                    self._progress.write("\n")
            self._progress.write(json.dumps({"image": entry, "results": results}) + "\n")
            self._progress.flush()
            os.fsync(self._progress.fileno())
        except BaseException:
            if remove_on_failure:
                self._remove_files(entry["output_name"])
            raise
        self.images.append(entry)
        self.results.extend(results)

    def add_finished(self, image_id: int, entry: Dict, results: List[Dict]) -> None:
        """Take over an image a stopped run finished (:func:`finished_images`) as image
        ``image_id`` of this run."""
        self._record(
            dict(entry, id=image_id),
            [dict(r, image_id=image_id) for r in results],
            remove_on_failure=False,  # its files stay for the next --resume
        )

    def close(self) -> None:
        """Write ``coco_instances_results.json`` and ``coco_images.json`` (images by id),
        then remove PROGRESS_FILE."""
        images = sorted(self.images, key=lambda entry: entry["id"])
        results = sorted(self.results, key=lambda result: result["image_id"])  # stable
        with atomic_open(os.path.join(self.output_dir, "coco_instances_results.json"), "w") as f:
            json.dump(results, f)
        with atomic_open(os.path.join(self.output_dir, "coco_images.json"), "w") as f:
            json.dump(
                {
                    "images": images,
                    "categories": [{"id": NUCLEUS_CATEGORY_ID, "name": "nucleus"}],
                },
                f,
                indent=1,
            )
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.output_dir, PROGRESS_FILE))


def finished_images(output_dir: str) -> Dict[str, Tuple[Dict, List[Dict]]]:
    """
    The images a stopped prediction run into ``output_dir`` finished: those of its COCO files
    (written at every normal end, interrupt or failed write) and of PROGRESS_FILE (which
    outlives a killed run). A torn last line of PROGRESS_FILE (a full disk) is ignored.

    Returns:
        dict: output name -> (its ``coco_images.json`` entry, its COCO results).
    """
    finished: Dict[str, Tuple[Dict, List[Dict]]] = {}
    try:
        with open(os.path.join(output_dir, COCO_FILES[1])) as f:
            images = json.load(f)["images"]
        with open(os.path.join(output_dir, COCO_FILES[0])) as f:
            results = json.load(f)
    except (OSError, ValueError, KeyError, TypeError):
        images, results = [], []
    by_id: Dict[int, List[Dict]] = {}
    for result in results:
        by_id.setdefault(result.get("image_id"), []).append(result)
    for entry in images:
        if "output_name" in entry:
            finished[entry["output_name"]] = (entry, by_id.get(entry["id"], []))
    try:
        with open(os.path.join(output_dir, PROGRESS_FILE)) as f:
            for line in f:
                try:
                    record = json.loads(line)
                    finished[record["image"]["output_name"]] = (record["image"], record["results"])
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    return finished
