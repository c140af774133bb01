"""Reading microscopy images and binary masks into fixed array formats.

Every reader in the project (dataset conversion, training mappers, the predict tool) goes
through these two functions, so that all of them accept the same files:

* PNG, JPEG, BMP, ... are decoded by OpenCV, TIFF (``.tif``/``.tiff``) by ``tifffile``, or
  by OpenCV where tifffile would need the optional ``imagecodecs`` (compressed TIFFs such as
  LZW; libtiff does not reject every corrupt compressed strip, it may decode one wrongly);
* grayscale, grayscale + alpha, palette, RGB and RGBA images (alpha is dropped, not
  composited);
* 8-bit, 16-bit, other integer and floating-point pixels. Anything that is not ``uint8``
  is mapped to ``uint8`` by a **per-image min/max stretch** over all colour channels
  jointly: ``(x - min) / (max - min) * 255``, rounded. Microscopes often store 12 bits in
  a 16-bit container, so dividing by 257 would give near-black images; the stretch uses the
  full 8-bit range, keeps every intensity ordering and the colour balance, and clips
  nothing (a single hot pixel does compress the contrast of the rest). A constant image
  maps to zeros;
* any size, down to 1x1;
* pixels as stored: an EXIF orientation tag (a camera's "rotate me", JPEG and PNG) is not
  applied, and a warning names the file (once per process);
* multi-channel TIFFs (CYX or YXC, ImageJ hyperstacks, OME-TIFF; axes from ``tifffile``'s
  series metadata, an axis the metadata leaves unnamed taken as the channels): one channel is
  read, chosen by 0-based index or by name (OME channel names, ImageJ slice labels). Without
  a choice such a file is refused with a message listing its channels; the chosen plane is
  then read as a grayscale image (stretched on its own). On an RGB(A) image a choice picks a
  colour (0 ``red``, 1 ``green``, 2 ``blue``); a grayscale image is read as it is;
* one 2-D image per file: a Z or T axis (a z-stack, a time series) or several images in one
  TIFF are refused with a message naming the axis, never read as their first plane alone.

Files that are missing, empty, truncated or otherwise undecodable raise
:class:`ImageReadError`, whose message names the file and the reason.
"""

import io
import logging
import os
import xml.etree.ElementTree as ElementTree
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import tifffile

__all__ = [
    "ImageReadError",
    "check_channel_choice",
    "parse_channel",
    "read_image_rgb",
    "read_image_unchanged",
    "read_label_image",
    "read_mask",
]

PathLike = Union[str, "os.PathLike[str]"]
# A channel choice: None (none), a 0-based index, or a channel's name (see parse_channel).
Channel = Union[None, int, str]


class ImageReadError(OSError):
    """An image or mask file that cannot be read.

    Attributes:
        path (str): the file at fault.
        reason (str): why it could not be read.
    """

    def __init__(self, path: PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):
        # Keep the (path, reason) signature when sent between processes.
        return (type(self), (self.path, self.reason))


_TIFF_SUFFIXES = (".tif", ".tiff")
_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_WARNED = set()  # files whose EXIF orientation was reported (once per process)

logger = logging.getLogger(__name__)
_COLOUR_NAMES = ("red", "green", "blue")
# tifffile's letters for axes that are not one 2-D image's: what to call them in a refusal.
_STACK_AXES = {"Z": "a Z axis (depth) of {n} slices", "T": "a T axis (time) of {n} frames"}
_CHANNEL_HINT = "choose the nuclear channel with --channel (0-based index, or name)"
_LABEL_HINT = "a label image has one channel"


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not a file") from None
    except OSError as e:
        raise ImageReadError(path, e.strerror or str(e)) from e
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def parse_channel(value) -> Channel:
    """A channel choice from the command line or a config (``TEST.PREDICT.CHANNEL``).

    Args:
        value: None or "" (no choice), an int or a string of digits (a 0-based index), or
            other text (a channel's name).

    Returns:
        None, an int >= 0 or a non-empty str.

    Raises:
        ValueError: a negative index, or a value of another type (float, list, ...).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("-").isdigit():
            value = int(value)
        else:
            return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"channel {value!r}: give a 0-based index (0, 1, ...) or a channel name")
    if value < 0:
        raise ValueError(f"channel {value}: indices start at 0 (the first channel is 0)")
    return value


def _select_channel(
    path: str, names: Sequence[Optional[str]], channel: Channel, what: str, hint: str
) -> int:
    """The index of ``channel`` among ``len(names)`` channels (``names[i]`` None: unnamed)."""
    listed = ", ".join(f"{i} {name!r}" if name else str(i) for i, name in enumerate(names))
    listing = f"{len(names)} channels ({what}): {listed}"
    if channel is None:
        raise ImageReadError(path, f"{listing}; {hint}")
    if isinstance(channel, int):
        if channel >= len(names):
            raise ImageReadError(path, f"no channel {channel} (0-based): {listing}")
        return channel
    matches = [i for i, name in enumerate(names) if name == channel] or [
        i for i, name in enumerate(names) if name and name.casefold() == channel.casefold()
    ]
    if len(matches) != 1:
        problem = "several channels" if matches else "no channel"
        raise ImageReadError(path, f"{problem} named {channel!r}: {listing}")
    return matches[0]


def _ome_channel_names(tif: "tifffile.TiffFile") -> List[Optional[str]]:
    """The channel names of the first OME image, [] when the XML has none or is unreadable."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except (ElementTree.ParseError, TypeError, ValueError):
        return []
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return []
    return [c.get("Name") for c in pixels if c.tag.rsplit("}", 1)[-1] == "Channel"]


def _tiff_channels(
    path: str, tif: "tifffile.TiffFile", channel: Channel, hint: str
) -> Tuple[tuple, str, bool]:
    """Which plane of the first series to read, from its axes alone (no pixels are read).

    Returns:
        (an index into the series' array, the axes it leaves, e.g. "YX", "SYX", "YXS",
        whether it picks one of several channels).

    Raises:
        ImageReadError: several series, a Z, T or other non-image axis, a channel axis
            without ``channel`` (the message lists the channels) or without that channel.
    """
    if len(tif.series) == 0:
        raise ImageReadError(path, "TIFF holds no image")
    if len(tif.series) > 1:
        raise ImageReadError(
            path,
            f"multi-image TIFF ({len(tif.series)} separate images): only single-image files "
            "are read; save each image as its own file (e.g. tifffile, or Fiji's Image > "
            "Stacks > Stack to Images)",
        )
    series = tif.series[0]
    axes, shape = series.axes, tuple(series.shape)
    described = f"axes {axes}, shape {shape}"
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(path, f"no Y and X axes ({described}): not a 2-D image")
    channel_axes, unnamed = [], []
    for axis, (letter, size) in enumerate(zip(axes, shape)):
        if size == 1 or letter in "YXS":
            continue
        if letter == "C":
            channel_axes.append(axis)
        elif letter in "QI":  # tifffile: unknown / a plain sequence of pages
            unnamed.append(axis)
        else:
            what = _STACK_AXES.get(letter, "an axis {letter} of size {n}").format(
                letter=letter, n=size
            )
            raise ImageReadError(
                path,
                f"{what} ({described}): only 2-D images (with channels) are read; save "
                "each plane as its own file, or a projection (Fiji: Image > Stacks > Stack to "
                "Images, or Z Project)",
            )
    if not channel_axes and len(unnamed) == 1:
        channel_axes, what = (
            unnamed,
            f"{described}; axis {axes[unnamed[0]]} unnamed in the metadata, taken as channels",
        )
    elif unnamed:
        raise ImageReadError(
            path, f"axes the metadata does not name ({described}): cannot tell channels from planes"
        )
    else:
        what = described
    index = tuple(slice(None) if letter in "YXS" else 0 for letter in axes)
    if not channel_axes:
        return index, "".join(letter for letter in axes if letter in "YXS"), False
    if len(channel_axes) > 1:
        raise ImageReadError(
            path, f"several channel axes ({described}): cannot tell which to choose from"
        )
    (axis,) = channel_axes
    if "S" in axes and shape[axes.index("S")] > 1:
        raise ImageReadError(path, f"channels of several samples each ({described}): not supported")
    names: List[Optional[str]] = [None] * shape[axis]
    if tif.is_ome:
        what += ", OME-TIFF"
        found = _ome_channel_names(tif)
        names = found if len(found) == len(names) else names
    elif tif.is_imagej:
        what += ", ImageJ hyperstack"
        labels = (tif.imagej_metadata or {}).get("Labels")
        names = (
            list(labels)
            if isinstance(labels, (list, tuple)) and len(labels) == len(names)
            else names
        )
    chosen = _select_channel(path, names, channel, what, hint)
    index = index[:axis] + (chosen,) + index[axis + 1 :]
    return index, "".join(letter for letter in axes if letter in "YXS"), True


def _decode_tiff(
    path: str, data: bytes, channel: Channel, hint: str
) -> Tuple[Optional[np.ndarray], bool]:
    """The TIFF's image, or its chosen channel, as (H, W) or (H, W, S); None when its
    compression (LZW, Deflate, JPEG, ...) needs the optional ``imagecodecs`` package, which
    tifffile decodes it with. Also whether one of several channels was chosen."""
    chose = False
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            index, kept_axes, chose = _tiff_channels(path, tif, channel, hint)
            image = tif.series[0].asarray()[index]
    except ImageReadError:
        raise
    except Exception as e:  # tifffile raises many types on corrupt / truncated files
        if "imagecodecs" in str(e):
            if chose:  # OpenCV would read the first page only
                raise ImageReadError(
                    path, "compressed multi-plane TIFF: pip install imagecodecs"
                ) from e
            return None, False
        raise ImageReadError(path, f"invalid or truncated TIFF ({type(e).__name__}: {e})") from e
    order = [kept_axes.index(a) for a in "YXS" if a in kept_axes]
    return np.transpose(image, order), chose  # colour order is RGB(A) already


def _warn_exif_orientation(path: str, data: bytes) -> None:
    """Say once per file that its EXIF orientation (a camera's "rotate me" tag) is not applied."""
    if path in _EXIF_WARNED:
        return
    try:
        from PIL import Image  # here: only JPEG / PNG / ... files need it

        with Image.open(io.BytesIO(data)) as opened:
            orientation = int(opened.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # no EXIF, or one Pillow cannot parse: nothing to say
        return
    if orientation != 1:
        _EXIF_WARNED.add(path)
        logger.warning(
            "%s: EXIF orientation %d (the file asks viewers to rotate or mirror it) is not "
            "applied: the image is read, and its nuclei are written, as its pixels are stored",
            path,
            orientation,
        )


def _decode_with_opencv(path: str, data: bytes) -> np.ndarray:
    # cv2.imdecode (unlike cv2.imread) rejects truncated JPEGs instead of filling them grey,
    # and with IMREAD_UNCHANGED ignores the EXIF orientation, as every reader here does.
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not a decodable image (unknown format, corrupt or truncated)")
    _warn_exif_orientation(path, data)
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV decodes to BGR(A)
        image = image[..., [2, 1, 0] + list(range(3, image.shape[2]))]
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Min/max stretch of a non-``uint8`` array to ``uint8`` (see the module docstring)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.uint8)
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    stretched = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    return np.rint(stretched).astype(np.uint8)


def _decode(
    path: PathLike, channel: Channel = None, hint: str = _CHANNEL_HINT
) -> Tuple[str, np.ndarray]:
    """(path, (H, W) or (H, W, 2..4) pixels as stored): the image, or its ``channel``."""
    path, channel = os.fspath(path), parse_channel(channel)
    data = _read_bytes(path)
    chose = False
    if path.lower().endswith(_TIFF_SUFFIXES):
        image, chose = _decode_tiff(path, data, channel, hint)
        if image is None:  # OpenCV's libtiff has the codecs (and OpenCV writes LZW itself)
            image = _decode_with_opencv(path, data)
    else:
        image = _decode_with_opencv(path, data)
    if image.size == 0:
        raise ImageReadError(path, f"image has no pixels (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        raise ImageReadError(
            path, f"unsupported array shape {image.shape}: expected (H, W) or (H, W, 1..4)"
        )
    if (
        channel is not None and not chose and image.ndim == 3
    ):  # a colour, or the gray of gray + alpha
        colour = (
            _select_channel(path, _COLOUR_NAMES, channel, "RGB", hint) if image.shape[2] >= 3 else 0
        )
        image = np.ascontiguousarray(image[:, :, colour])
    return path, image


def check_channel_choice(path: PathLike, channel: Channel = None) -> None:
    """Check, from a TIFF's metadata alone (no pixels decoded), that :func:`read_image_rgb`
    can read ``channel`` of it: a quick check of many files before a long run. Other formats
    are not opened (their problems show when they are read).

    Raises:
        ImageReadError: as :func:`read_image_rgb` for an axis or channel problem (a file
            that cannot be opened passes: reading it says why).
    """
    path, channel = os.fspath(path), parse_channel(channel)
    if not path.lower().endswith(_TIFF_SUFFIXES):
        return
    try:
        with tifffile.TiffFile(path) as tif:
            _tiff_channels(path, tif, channel, _CHANNEL_HINT)
    except ImageReadError:
        raise
    except Exception:  # missing, unreadable, corrupt: reading the file says why
        return


def read_image_rgb(path: PathLike, channel: Channel = None) -> np.ndarray:
    """Read an image file as 8-bit RGB.

    Args:
        path: an image file (PNG, JPEG, TIFF, or anything else OpenCV decodes).
        channel: of a multi-channel TIFF, the channel to read (0-based index or name; the
            file is refused without one); of an RGB(A) image, a colour (0 or "red", 1
            "green", 2 "blue"); a grayscale image is read whatever it says. The chosen plane
            is read as a grayscale image. Any value :func:`parse_channel` takes ("1" is 1).

    Returns:
        np.ndarray: (H, W, 3) ``uint8``, RGB order. Grayscale is replicated to the three
        channels, grayscale + alpha keeps the gray, alpha is dropped, and non-8-bit pixels
        are min/max-stretched per image.

    Raises:
        ImageReadError: the file is missing, empty, truncated, undecodable, not a single
            2-D image (a Z or T axis), a multi-channel TIFF without ``channel`` (the message
            lists its channels) or without that channel.
        ValueError: ``channel`` is no channel choice (see :func:`parse_channel`).
    """
    path, image = _decode(path, channel)
    image = _to_uint8(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 2:  # gray + alpha
        return np.repeat(image[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def read_mask(path: PathLike) -> np.ndarray:
    """Read a binary mask file.

    Args:
        path: an image file of any format :func:`read_image_rgb` accepts.

    Returns:
        np.ndarray: (H, W) ``bool``, True where any colour channel is non-zero (alpha is
        ignored). Masks stored as 0/1, 0/255 or 0/65535 all read the same.

    Raises:
        ImageReadError: as :func:`read_image_rgb`.
    """
    path, image = _decode(path, hint="a mask must be a single 2-D image")
    if image.ndim == 2:
        return image != 0
    if image.shape[2] == 2:  # gray + alpha
        return image[:, :, 0] != 0
    return np.any(image[:, :, :3] != 0, axis=2)


def read_image_unchanged(path: PathLike, channel: Channel = None) -> np.ndarray:
    """Read an image file, or its ``channel``, with its stored pixels unchanged (no stretch,
    no channel change).

    Args:
        channel: as :func:`read_image_rgb`.

    Returns:
        np.ndarray: (H, W) or (H, W, C) with C in 2..4 (colour in RGB(A) order), of the
        file's own dtype (``uint16``, ``int32``, ``float32``, ...); (H, W) for a channel.

    Raises:
        ImageReadError: as :func:`read_image_rgb`.
    """
    return _decode(path, channel)[1]


def read_label_image(path: PathLike) -> np.ndarray:
    """Read a single-channel label image (a semantic segmentation's class per pixel).

    Returns:
        np.ndarray: (H, W) with the stored integer values unchanged (no stretch).

    Raises:
        ImageReadError: as :func:`read_image_rgb`, or the file has several channels or
            non-integer pixels.
    """
    path, image = _decode(path, hint=_LABEL_HINT)
    if image.ndim != 2:
        raise ImageReadError(path, f"a label image must have one channel, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.integer):
        raise ImageReadError(path, f"a label image must hold integers, got {image.dtype}")
    return image
