"""Detectron2's ``OUTPUT_DIR/metrics.json`` (one JSON object a line, appended during training),
read and repaired so that a run killed mid-write and then resumed leaves no corrupt record."""

import json
import logging
import os

logger = logging.getLogger(__name__)


def read_metrics_json(path):
    """
    Args:
        path (str): a Detectron2 ``metrics.json``.

    Returns:
        list[dict]: its records in file order, with two repairs: a line that is not valid JSON
        (the last line of a run killed mid-write) is skipped with a warning, and when a resumed
        run logs an iteration that was already logged (``--resume`` restarts from the last
        checkpoint), the older records from that iteration on are dropped, so each iteration
        appears once, as the resumed run logged it. (Within one run Detectron2's JSONWriter
        writes each iteration at most once, all its scalars on one line, so a record whose
        iteration is not above the previous one's starts a resumed run.)
    """
    records = []
    with open(path, errors="replace") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning(
                    "%s, line %d: skipping a line that is not JSON (cut short by a kill?)",
                    path,
                    line_number,
                )
                continue
            if not isinstance(record, dict):
                logger.warning(
                    "%s, line %d: skipping a line that is not a JSON object", path, line_number
                )
                continue
            iteration = record.get("iteration")
            if iteration is not None and records and records[-1].get("iteration", -1) >= iteration:
                records = [r for r in records if r.get("iteration", -1) < iteration]
            records.append(record)
    return records


def drop_partial_last_line(path):
    """
    Cut a last line that lacks its newline (a write interrupted by a kill) from ``path``, so
    that the records a resumed run appends start on a line of their own. Returns the number of
    bytes removed (0 when the file is complete or absent).
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # find the last newline, reading backwards in blocks
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            position = block.rfind(b"\n")
            if position >= 0:
                keep = start + position + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    logger.warning("%s: removed a last line cut short by a kill (%d bytes)", path, size - keep)
    return size - keep
