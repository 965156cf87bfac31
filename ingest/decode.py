"""Decode stage: image bytes -> checked RGB image -> the encoder's input tensor, in worker threads.

PIL's decoder and resampler and torch's tensor ops release the GIL, so threads overlap decoding
with the encoder's forward pass. Every failure becomes a reason, never an exception.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from asif_vdb import InputError, load_image


@dataclass(frozen=True)
class DecodeFailure:
    reason: str  # corrupt_image, decompression_bomb, image_too_small
    detail: str


def _reason(message: str) -> str:
    text = message.lower()
    if "decompression bomb" in text:
        return "decompression_bomb"
    if "no pixels" in text:
        return "image_too_small"
    return "corrupt_image"


class Decoder:
    """`decoder(data, ref)` returns the preprocessed input (or the RGB image when `transform` is
    None, as in a dry run) or a DecodeFailure."""

    def __init__(self, transform: Callable[[Image.Image], Any] | None, *, min_side: int,
                 max_pixels: int) -> None:
        self.transform = transform
        self.min_side = min_side
        self.max_pixels = max_pixels

    def __call__(self, data: bytes, ref: str) -> Any:
        try:
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                width, height = probe.size
        except Image.DecompressionBombError as e:
            return DecodeFailure("decompression_bomb", f"{ref}: {e}")
        except Exception as e:  # PIL raises many types for garbage input
            return DecodeFailure("corrupt_image",
                                 f"{ref}: not a readable image ({type(e).__name__})")
        if width * height > self.max_pixels:
            return DecodeFailure("decompression_bomb",
                                 f"{ref}: {width}x{height} exceeds {self.max_pixels} pixels")
        try:
            image = load_image(data)
        except InputError as e:
            return DecodeFailure(_reason(str(e)), f"{ref}: {e}")
        except Exception as e:  # a decoder bug on hostile input must not stop the run
            return DecodeFailure("corrupt_image", f"{ref}: {type(e).__name__}: {e}")
        if min(image.size) < self.min_side:
            width, height = image.size
            return DecodeFailure("image_too_small",
                                 f"{ref}: {width}x{height} is under {self.min_side} px")
        if self.transform is None:
            return image
        try:
            return self.transform(image)
        except Exception as e:
            return DecodeFailure("corrupt_image", f"{ref}: preprocessing failed: {e}")
