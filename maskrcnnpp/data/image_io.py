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
* one image per file: a multi-page TIFF (a stack, a time series, several images) is refused
  with a message saying so, never read as its first page alone.

Files that are missing, empty, truncated or otherwise undecodable raise
:class:`ImageReadError`, whose message names the file and the reason.
"""

import io
import os
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import tifffile

__all__ = ["ImageReadError", "read_image_rgb", "read_image_unchanged", "read_label_image", "read_mask"]

PathLike = Union[str, "os.PathLike[str]"]

_TIFF_SUFFIXES = (".tif", ".tiff")


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


def _decode_tiff(path: str, data: bytes) -> Optional[np.ndarray]:
    """The TIFF's first series, or None when its compression (LZW, Deflate, JPEG, ...) needs
    the optional ``imagecodecs`` package, which tifffile decodes it with."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if len(tif.series) == 0:
                raise ImageReadError(path, "TIFF holds no image")
            if len(tif.pages) > 1:
                raise ImageReadError(
                    path,
                    f"multi-page TIFF ({len(tif.pages)} pages): only single-image files are "
                    "read; save each page as its own file (e.g. tifffile, or Fiji's Image > "
                    "Stacks > Stack to Images) and give those",
                )
            image = tif.series[0].asarray()
            planar = tif.series[0].axes.startswith("S")
    except ImageReadError:
        raise
    except Exception as e:  # tifffile raises many types on corrupt / truncated files
        if "imagecodecs" in str(e):
            return None
        raise ImageReadError(path, f"invalid or truncated TIFF ({type(e).__name__}: {e})") from e
    if image.ndim == 3 and planar:  # (C, H, W) separate colour planes -> (H, W, C)
        image = np.moveaxis(image, 0, -1)
    return image  # colour order is RGB(A) already


def _decode_with_opencv(path: str, data: bytes) -> np.ndarray:
    # cv2.imdecode (unlike cv2.imread) rejects truncated JPEGs instead of filling them grey.
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not a decodable image (unknown format, corrupt or truncated)")
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


def _decode(path: PathLike) -> Tuple[str, np.ndarray]:
    path = os.fspath(path)
    data = _read_bytes(path)
    if path.lower().endswith(_TIFF_SUFFIXES):
        image = _decode_tiff(path, data)
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
    return path, image


def read_image_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as 8-bit RGB.

    Args:
        path: an image file (PNG, JPEG, TIFF, or anything else OpenCV decodes).

    Returns:
        np.ndarray: (H, W, 3) ``uint8``, RGB order. Grayscale is replicated to the three
        channels, grayscale + alpha keeps the gray, alpha is dropped, and non-8-bit pixels
        are min/max-stretched per image.

    Raises:
        ImageReadError: the file is missing, empty, truncated, undecodable, or not a
            single 2-D image.
    """
    path, image = _decode(path)
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
    path, image = _decode(path)
    if image.ndim == 2:
        return image != 0
    if image.shape[2] == 2:  # gray + alpha
        return image[:, :, 0] != 0
    return np.any(image[:, :, :3] != 0, axis=2)


def read_image_unchanged(path: PathLike) -> np.ndarray:
    """Read an image file with its stored pixels unchanged (no stretch, no channel change).

    Returns:
        np.ndarray: (H, W) or (H, W, C) with C in 2..4 (colour in RGB(A) order), of the
        file's own dtype (``uint16``, ``int32``, ``float32``, ...).

    Raises:
        ImageReadError: as :func:`read_image_rgb`.
    """
    return _decode(path)[1]


def read_label_image(path: PathLike) -> np.ndarray:
    """Read a single-channel label image (a semantic segmentation's class per pixel).

    Returns:
        np.ndarray: (H, W) with the stored integer values unchanged (no stretch).

    Raises:
        ImageReadError: as :func:`read_image_rgb`, or the file has several channels or
            non-integer pixels.
    """
    path, image = _decode(path)
    if image.ndim != 2:
        raise ImageReadError(path, f"a label image must have one channel, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.integer):
        raise ImageReadError(path, f"a label image must hold integers, got {image.dtype}")
    return image
