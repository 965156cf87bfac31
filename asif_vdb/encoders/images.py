"""Turning what users hand us (paths, PIL images, arrays) into RGB PIL images, or a clear error."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from asif_vdb.errors import InputError

ImageInput = Union[str, os.PathLike[str], Image.Image, np.ndarray, bytes]

#: Images larger than this many pixels are refused as decompression bombs (about 16k x 11k).
MAX_IMAGE_PIXELS = 178_956_970
#: File suffixes read as images wherever a folder is scanned (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

ImageFile.LOAD_TRUNCATED_IMAGES = False


def describe(image: Any) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"PIL image {image.size[0]}x{image.size[1]} {image.mode}"
    if isinstance(image, np.ndarray):
        return f"array {image.shape} {image.dtype}"
    if isinstance(image, bytes):
        return f"{len(image)} bytes of image data"
    return repr(type(image).__name__)


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, CMYK, palette and alpha images become RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _open_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            if img.size[0] * img.size[1] > max_pixels:
                raise InputError(
                    f"{name}: {img.size[0]}x{img.size[1]} pixels exceeds the limit of "
                    f"{max_pixels} (decompression bomb?)"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{name}: refused as a decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise InputError(f"{name}: not a readable image (corrupt or unknown format)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: cannot decode image: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return img


def read_bytes(image: str | os.PathLike[str]) -> bytes:
    path = Path(image)
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{path}: image file not found") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: is a directory, expected an image file") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read image file: {e}") from e


def load_image(image: ImageInput, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode any supported image input into an RGB PIL image, raising InputError on bad input
    (images over ``max_pixels`` are refused as decompression bombs)."""
    name = describe(image)
    if isinstance(image, (str, os.PathLike)):
        img = _open_bytes(read_bytes(image), name, max_pixels)
    elif isinstance(image, bytes):
        img = _open_bytes(image, name, max_pixels)
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        img = _array_to_image(image, name)
    else:
        raise InputError(
            f"image of type {type(image).__name__} is not supported; "
            "give a file path, PIL image, HxW(xC) array or encoded bytes"
        )
    if img.size[0] < 1 or img.size[1] < 1:
        raise InputError(f"{name}: image has no pixels")
    return to_rgb(img)


def _array_to_image(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected an HxW, HxWx3 or HxWx4 array")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: array holds NaN or infinite values")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0 and arr.min() >= 0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def image_digest(image: ImageInput) -> str:
    """A content hash of the image: file bytes for paths and bytes, pixels for in-memory images."""
    h = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        h.update(read_bytes(image))
    elif isinstance(image, bytes):
        h.update(image)
    elif isinstance(image, Image.Image):
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    elif isinstance(image, np.ndarray):
        h.update(f"{image.dtype}{image.shape}".encode())
        h.update(np.ascontiguousarray(image).tobytes())
    else:
        raise InputError(f"image of type {type(image).__name__} is not supported")
    return h.hexdigest()


def image_reference(image: ImageInput) -> str:
    """What a payload records as the image's reference: its absolute path (so that it is found from
    any working directory), or a description of an in-memory image."""
    if isinstance(image, (str, os.PathLike)):
        return os.path.abspath(os.fspath(image))
    return describe(image)


def as_inputs(items: Any) -> list[Any]:
    """A single image or text as a list of one; anything else (a sequence of them) as a list."""
    if isinstance(items, (str, bytes, os.PathLike)) or hasattr(items, "getpixel") \
            or (isinstance(items, np.ndarray) and items.ndim in (2, 3) and items.dtype == np.uint8):
        return [items]
    return list(items)
