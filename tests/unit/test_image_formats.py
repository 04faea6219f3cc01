"""Every kind of image ingest accepts trains and serves, in one orientation (issue 14, item 7).

Each kind is made with Pillow from one displayed picture: a red block at the top left, a blue
block at the bottom right, green elsewhere. Whatever its format, mode or EXIF orientation,
ingest must record the displayed size, and serving (labeler-assist's decoder) and the trainer's
dataset must hold those displayed pixels as 8-bit RGB; what cannot be (an animated GIF) is
refused by ingest with a reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.domain import ImageInfo, Rejection, inspect_image
from labeler_assist.detectors import prepare_image
from trainer.dataset import LabeledFrame, write_dataset

WIDTH, HEIGHT = 48, 32  # as displayed
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 160, 30)
WHITE = (255, 255, 255)
MAX_PIXELS = 10_000_000
# (x0, y0, x1, y1) regions of the displayed picture, and the pixels they hold
TOP_LEFT, BOTTOM_RIGHT, MIDDLE = (2, 2, 14, 10), (34, 22, 46, 30), (18, 12, 30, 20)


def displayed(background: tuple[int, ...] = GREEN, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (WIDTH, HEIGHT), background)
    image.paste(RED if mode == "RGB" else (*RED, 255), (0, 0, 16, 12))
    image.paste(BLUE if mode == "RGB" else (*BLUE, 255), (32, 20, 48, 32))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gray(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    value = Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))
    assert isinstance(value, int)
    return (value, value, value)


def sixteen_bit_png() -> bytes:
    """A 16-bit grayscale PNG: 8-bit viewers show each sample's high byte."""
    samples = np.full((HEIGHT, WIDTH), 10_000, dtype=np.uint16)
    samples[0:12, 0:16], samples[20:32, 32:48] = 30_000, 60_000
    image = Image.fromarray(samples)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def exif_rotated_jpeg() -> bytes:
    """Stored 32x48, EXIF orientation 6 (rotate 90° clockwise to display): shown 48x32."""
    stored = displayed().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def transparent_png() -> bytes:
    """Transparent (black, alpha 0) except the two blocks: the page shows white there."""
    return encode(displayed((0, 0, 0, 0), "RGBA"), "PNG")


Expected = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]
KINDS: dict[str, tuple[Callable[[], bytes], Expected, int]] = {
    # name: (bytes, (top left, bottom right, middle) as displayed, tolerance per channel)
    "webp": (lambda: encode(displayed(), "WEBP", lossless=True), (RED, BLUE, GREEN), 2),
    "bmp": (lambda: encode(displayed(), "BMP"), (RED, BLUE, GREEN), 0),
    "tiff": (lambda: encode(displayed(), "TIFF"), (RED, BLUE, GREEN), 0),
    "gif": (lambda: encode(displayed(), "GIF"), (RED, BLUE, GREEN), 0),
    "png-alpha": (transparent_png, (RED, BLUE, WHITE), 0),
    "png-16-bit": (sixteen_bit_png, ((117, 117, 117), (234, 234, 234), (39, 39, 39)), 1),
    "jpeg-grayscale": (
        lambda: encode(displayed().convert("L"), "JPEG", quality=95),
        (gray(RED), gray(BLUE), gray(GREEN)),
        8,
    ),
    "jpeg-cmyk": (
        lambda: encode(displayed().convert("CMYK"), "JPEG", quality=95),
        (RED, BLUE, GREEN),
        12,
    ),
    "jpeg-exif-rotated": (exif_rotated_jpeg, (RED, BLUE, GREEN), 12),
}


def region_mean(pixels: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = region
    mean: np.ndarray = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return mean


def assert_displayed(pixels: np.ndarray, expected: Expected, tolerance: int) -> None:
    """``pixels`` is the displayed picture: 8-bit RGB, landscape, blocks where they are shown."""
    assert pixels.dtype == np.uint8 and pixels.shape == (HEIGHT, WIDTH, 3)
    for region, colour in zip((TOP_LEFT, BOTTOM_RIGHT, MIDDLE), expected, strict=True):
        found = region_mean(pixels, region)
        assert np.abs(found - np.array(colour)).max() <= tolerance + 0.5, (region, found, colour)


@pytest.mark.parametrize("kind", list(KINDS))
def test_ingest_accepts_each_kind_with_its_displayed_size(kind: str) -> None:
    data = KINDS[kind][0]()
    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert isinstance(info, ImageInfo), info
    assert (info.width, info.height) == (WIDTH, HEIGHT), "EXIF orientation is applied"


@pytest.mark.parametrize("kind", list(KINDS))
def test_serving_decodes_the_displayed_rgb_pixels(kind: str) -> None:
    make, expected, tolerance = KINDS[kind]
    prepared = prepare_image(make(), imgsz=WIDTH)  # letterboxed unscaled: rows 8 to 40
    assert (prepared.width, prepared.height) == (WIDTH, HEIGHT)
    assert_displayed(prepared.pixels[8:40], expected, tolerance)


def test_the_dataset_holds_what_serving_decodes(tmp_path: Path) -> None:
    """Every kind lands in the YOLO dataset as RGB PNG without EXIF, pixel for pixel what
    serving decodes, at the size ingest recorded (the labels' frame)."""
    box = ("box", 0.0, 0.0, 16.0, 12.0)  # the red block, in displayed pixels
    items = [
        LabeledFrame(f"{kind}.img", make(), WIDTH, HEIGHT, [box])
        for kind, (make, _, _) in KINDS.items()
    ]
    dataset = write_dataset(tmp_path / "ds", items, ["box"])
    assert dataset.skipped == ()
    assert dataset.train_count + dataset.val_count == len(KINDS)
    written = {path.name.split(".img")[0]: path for path in dataset.root.glob("images/*/*")}
    assert set(written) == set(KINDS)
    for kind, path in written.items():
        make, expected, tolerance = KINDS[kind]
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (WIDTH, HEIGHT))
            assert 0x0112 not in image.getexif()
            pixels = np.asarray(image)
        assert_displayed(pixels, expected, tolerance)
        served = prepare_image(make(), imgsz=WIDTH).pixels[8:40]
        assert np.array_equal(pixels, served), f"{kind}: training and serving see other pixels"
        label = (dataset.root / "labels" / path.parent.name / f"{path.stem}.txt").read_text()
        assert label == "0 0.166667 0.187500 0.333333 0.375000\n"


def test_a_frame_whose_labels_were_drawn_on_another_size_is_left_out(tmp_path: Path) -> None:
    """A frame recorded in its stored orientation (before EXIF was applied) does not train on
    boxes drawn for another shape; the dataset says why instead of failing the run."""
    good = [LabeledFrame(f"g{i}.png", KINDS["bmp"][0](), WIDTH, HEIGHT, []) for i in range(2)]
    stale = LabeledFrame("old.jpg", exif_rotated_jpeg(), HEIGHT, WIDTH, [])
    dataset = write_dataset(tmp_path / "ds", [*good, stale], ["box"])
    assert dataset.train_count + dataset.val_count == 2
    assert [name for name, _ in dataset.skipped] == ["old.jpg"]
    assert "48x32" in dataset.skipped[0][1] and "32x48" in dataset.skipped[0][1]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: encode(
                Image.new("RGB", (8, 8), RED),
                "GIF",
                save_all=True,
                append_images=[Image.new("RGB", (8, 8), BLUE)],
            ),
            "animated or multi-page GIF (2 frames)",
        ),
        (
            lambda: encode(
                Image.new("RGB", (8, 8), RED),
                "TIFF",
                save_all=True,
                append_images=[Image.new("RGB", (8, 8), BLUE)],
            ),
            "multi-page TIFF",
        ),
        (lambda: encode(Image.new("F", (8, 8), 0.5), "TIFF"), "F pixels are not supported"),
    ],
    ids=["animated-gif", "multi-page-tiff", "float-tiff"],
)
def test_ingest_refuses_what_cannot_train_with_a_reason(
    make: Callable[[], bytes], words: str
) -> None:
    rejection = inspect_image(make(), max_pixels=MAX_PIXELS)
    assert isinstance(rejection, Rejection)
    assert rejection.code == "unsupported" and words in rejection.reason
