"""How a frame's bytes become pixels: one decoder for ingest, the trainer and labeler-assist.

Ingest accepts a frame only if this decoder turns it into pixels, and the trainer and
labeler-assist decode it with the same function, so every frame that is accepted trains and
serves, and all three agree on its size and orientation.

- **Orientation**: the displayed one. The EXIF ``Orientation`` tag is applied, as browsers and
  labelling tools show the image; ingest records the width and height after it, labels are
  drawn on it, the trainer writes it and labeler-assist's boxes are in it.
- **Pixels**: 8-bit RGB. Grayscale and palette images are expanded; 16-bit samples keep their
  high byte (as browsers show them); CMYK is converted without colour management (ICC profiles
  are ignored everywhere); transparent pixels are composited on white, the page a browser
  shows them over.
- **Still images only**: an animated GIF or WEBP, or a multi-page TIFF, is refused: nobody can
  say which of its frames the labels were drawn on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
"""Image formats a frame may be in (as Pillow names them)."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
"""File suffixes of those formats: what a folder of frames or a dataset is searched for."""

UnusableCode = Literal["empty", "not_an_image", "too_many_pixels", "unsupported", "truncated"]

_ORIENTATION = 0x0112
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_TO_RGB = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"})
_WITH_ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
WHITE = (255, 255, 255)


class UnusableImage(ValueError):
    """The bytes cannot become a frame; ``code`` is ingest's reject code, ``reason`` why."""

    def __init__(self, code: UnusableCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class DecodedFrame:
    """A frame as every service sees it: displayed orientation, 8-bit RGB."""

    image: Image.Image
    format: str
    as_stored: bool = False
    """The stored bytes already hold exactly these pixels in a form every decoder reads alike
    (an 8-bit RGB JPEG or PNG, no EXIF rotation, no transparency): they may be used as they
    are, as the trainer does, instead of a re-encoded copy."""

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def decode_frame(data: bytes, *, max_pixels: int | None = None) -> DecodedFrame:
    """Decode ``data`` fully into the frame's displayed RGB pixels, or raise
    :class:`UnusableImage` saying why not.

    ``max_pixels`` is checked from the header before any pixel is decoded, so a decompression
    bomb costs nothing.
    """
    if not data:
        raise UnusableImage("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # The caller's limit decides; Pillow still raises past twice its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                rgb, as_stored = _displayed_rgb(image, max_pixels)
                return DecodedFrame(rgb, image.format or "unknown", as_stored)
    except UnusableImage:
        raise
    except UnidentifiedImageError as error:
        raise UnusableImage(
            "not_an_image", "not an image: no known image format was recognised"
        ) from error
    except Image.DecompressionBombError as error:
        raise UnusableImage(
            "too_many_pixels", f"refused as a decompression bomb: {error}"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnusableImage("truncated", f"the image is truncated or corrupt: {error}") from error


def _displayed_rgb(image: Image.Image, max_pixels: int | None) -> tuple[Image.Image, bool]:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise UnusableImage(
            "too_many_pixels",
            f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            "(a decompression bomb, or a frame far larger than annotation needs)",
        )
    image_format = image.format or "unknown"
    if image_format not in SUPPORTED_FORMATS:
        raise UnusableImage(
            "unsupported",
            f"{image_format} images are not supported "
            f"(use one of {', '.join(sorted(SUPPORTED_FORMATS))})",
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise UnusableImage(
            "unsupported",
            f"an animated or multi-page {image_format} ({frames} frames) is not a still frame: "
            "upload each frame as its own image",
        )
    image.load()  # PNG's eXIf chunk may follow the pixels: read the orientation after them
    rgb = _to_rgb(image)
    method = _TRANSPOSE.get(_orientation(image))
    as_stored = (
        method is None
        and image.mode == "RGB"
        and image_format in {"JPEG", "PNG"}
        and "transparency" not in image.info
    )
    return (rgb.transpose(method) if method is not None else rgb), as_stored


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: as stored); unreadable EXIF counts as none, as browsers do."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception:  # any failure of the EXIF parser means no orientation
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        # convert("L") clips 16-bit samples at 255; keep the high byte instead.
        wide = image if mode == "I" else image.convert("I")
        return wide.point(lambda value: value * (1 / 256)).convert("L").convert("RGB")
    if mode in _WITH_ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if mode in _TO_RGB:
        return image.convert("RGB")
    raise UnusableImage(
        "unsupported", f"{mode} pixels are not supported (8- or 16-bit grayscale, RGB or CMYK)"
    )
