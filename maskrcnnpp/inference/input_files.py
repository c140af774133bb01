"""Turn the command line's input paths (files, folders, globs) into a list of image files,
and give each an output name unique within the run."""

import glob
import os
import re
from collections import Counter
from typing import List, Sequence, Tuple

__all__ = [
    "IMAGE_EXTENSIONS",
    "collect_image_files",
    "looks_like_config_key",
    "unique_output_names",
]

# Files taken from a folder (a file named explicitly is tried whatever its extension).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def looks_like_config_key(item: str) -> bool:
    """Whether a command-line word that names no file is a config key (``MODEL.WEIGHTS``): the
    KEY VALUE overrides placed before an option were taken as its arguments."""
    return bool(_CONFIG_KEY.match(item)) and not os.path.exists(item)


def _is_glob(path: str) -> bool:
    return glob.has_magic(path)


def collect_image_files(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """
    Args:
        inputs (list[str]): files (any extension), folders (their image files, not
            recursive, hidden files skipped) and glob patterns (``**`` recurses).

    Returns:
        (list[str], list[(str, str)]): the image files in input order (a folder's and a
        glob's files sorted; a path reached twice is listed once; a symbolic link and its
        target are two inputs, each predicted), and ``(input, reason)`` for each input that
        named nothing and each symbolic link in a folder whose target is missing.
    """
    files, problems, seen = [], [], set()

    def add(path):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        if os.path.isdir(item):
            for entry in sorted(os.listdir(item)):
                link = os.path.join(item, entry)
                if (
                    entry.lower().endswith(IMAGE_EXTENSIONS)
                    and os.path.islink(link)
                    and not os.path.exists(link)
                ):
                    problems.append(
                        (link, f"a symbolic link to {os.readlink(link)}, which does not exist")
                    )
            found = sorted(
                os.path.join(item, entry)
                for entry in os.listdir(item)
                if not entry.startswith(".")
                and entry.lower().endswith(IMAGE_EXTENSIONS)
                and os.path.isfile(os.path.join(item, entry))
            )
            if not found:
                problems.append(
                    (item, f"folder holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
                )
            for path in found:
                add(path)
        elif os.path.exists(item):
            add(item)
        elif _is_glob(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                problems.append((item, "pattern matches no file"))
            for path in found:
                add(path)
        elif looks_like_config_key(item):
            problems.append(
                (
                    item,
                    "no such file; it looks like a config key: put KEY VALUE overrides last, "
                    "after --output DIR",
                )
            )
        else:
            problems.append((item, "no such file or folder"))
    return files, problems


def unique_output_names(files: Sequence[str]) -> List[str]:
    """
    Args:
        files (list[str]): input files.

    Returns:
        list[str]: one output stem per file: the file name without extension; where two files
        share it, the extension is kept (``a_png``, ``a_tif``); where they still clash, the
        second and later get ``-2``, ``-3``, ... . Characters other than letters, digits,
        ``._-`` become ``_``.
    """

    def clean(text):
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    stems = [clean(os.path.splitext(os.path.basename(f))[0]) or "image" for f in files]
    stem_counts = Counter(stems)
    with_ext = [
        clean(os.path.basename(f).replace(".", "_")) if stem_counts[stem] > 1 else stem
        for f, stem in zip(files, stems)
    ]
    names, used = [], set()
    for name in with_ext:
        candidate, copy = name, 1
        while candidate in used:
            copy += 1
            candidate = f"{name}-{copy}"
        used.add(candidate)
        names.append(candidate)
    return names
