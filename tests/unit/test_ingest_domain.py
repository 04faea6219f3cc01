"""ingest's pure decisions: keys, image validation, manifests."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ingest.domain import (
    MAX_FRAME_NAME,
    FrameKey,
    ImageInfo,
    ManifestError,
    ManifestKey,
    OutsideTask,
    Rejection,
    inspect_image,
    missing_frames,
    parse_key,
    parse_manifest,
)


def png(width: int = 8, height: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("tasks/t1/data/a.jpg", FrameKey("t1", "a.jpg")),
        ("tasks/t1/manifest.json", ManifestKey("t1")),
        ("models/t1/1/model.onnx", None),
        ("tasks/t1/other/x", None),
        ("tasks/../data/x", None),
    ],
)
def test_parse_key(key: str, expected: object) -> None:
    assert parse_key(key) == expected


@pytest.mark.parametrize(
    "key", ["tasks/t1/data/../../t2/data/x.jpg", "tasks/t1/data/sub/x.jpg", "tasks/t1/data/.."]
)
def test_keys_escaping_the_data_folder_are_outside_the_task(key: str) -> None:
    ref = parse_key(key)
    assert isinstance(ref, OutsideTask) and ref.task_id == "t1"
    assert "outside tasks/t1/data/" in ref.reason


def test_valid_image() -> None:
    assert inspect_image(png(), max_pixels=1000) == ImageInfo(8, 6, "PNG")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"plain text, not pixels", "not_an_image"),
        (png()[:-30], "truncated"),
    ],
)
def test_bad_bytes_are_rejected_with_a_reason(data: bytes, code: str) -> None:
    result = inspect_image(data, max_pixels=10_000)
    assert isinstance(result, Rejection) and result.code == code and result.reason


def test_decompression_bomb_refused_from_its_header() -> None:
    # 10000 x 10000 px of one colour: a small file that would decode to 300 MB
    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buffer, "PNG", optimize=True)
    assert len(buffer.getvalue()) < 200_000
    result = inspect_image(buffer.getvalue(), max_pixels=50_000_000)
    assert isinstance(result, Rejection) and result.code == "too_many_pixels"
    assert "100,000,000 pixels" in result.reason


def test_manifest_forms() -> None:
    digest = "a" * 64
    entries = parse_manifest(
        b'{"files": ["1.jpg", {"name": "2.jpg", "sha256": "' + digest.encode() + b'"}]}'
    )
    assert [(e.name, e.sha256) for e in entries] == [("1.jpg", None), ("2.jpg", digest)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not JSON"),
        (b'{"files": []}', "non-empty"),
        (b'{"files": ["a.jpg", "a.jpg"]}', "more than once"),
        (b'{"files": ["../x.jpg"]}', "not a plain file name"),
        (b'{"files": [{"name": "a.jpg", "sha256": "xyz"}]}', "64 lowercase hex"),
        (b'{"files": [3]}', "must be a name"),
        (b'{"files": ["' + b"n" * 256 + b'.jpg"]}', "260 characters, over the limit of 255"),
    ],
)
def test_bad_manifests_say_why(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_missing_frames_keeps_manifest_order() -> None:
    assert missing_frames(["c", "a", "b"], {"a"}) == ["c", "b"]


def test_a_frame_name_too_long_for_its_row_gets_a_rejection_that_fits() -> None:
    """Else the frame never gets an outcome (its row cannot be written)."""
    names = [f"{'x' * 300}{index}.jpg" for index in range(2)]
    refs = [parse_key(f"tasks/t1/data/{name}") for name in names]
    assert all(isinstance(ref, OutsideTask) for ref in refs)
    shortened = [ref.name for ref in refs if isinstance(ref, OutsideTask)]
    assert all(len(name) <= MAX_FRAME_NAME for name in shortened)
    assert len(set(shortened)) == 2, "two long names stay two frames"
    assert "at most 255 characters; this one has 305" in refs[0].reason  # type: ignore[union-attr]
    assert parse_key(f"tasks/t1/data/{'y' * 251}.jpg") == FrameKey("t1", f"{'y' * 251}.jpg")
