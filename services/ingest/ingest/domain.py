"""Pure decisions of ingest: which object a key names, whether bytes are a usable image,
what a manifest declares, and when a task's data is complete."""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from schemas.events import FrameRejectCode

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
MAX_FRAME_NAME = 255
"""Characters in a frame's file name (the ``frames.name`` column): refused at presign and in
the manifest; an object stored under a longer name is rejected with a shortened name."""

RejectCode = FrameRejectCode


@dataclass(frozen=True)
class FrameKey:
    task_id: str
    name: str


@dataclass(frozen=True)
class ManifestKey:
    task_id: str


@dataclass(frozen=True)
class OutsideTask:
    """A key under ``tasks/<id>/`` that escapes the task's flat ``data/`` folder."""

    task_id: str
    name: str
    reason: str


ObjectRef = FrameKey | ManifestKey | OutsideTask


def parse_key(key: str) -> ObjectRef | None:
    """What an object key under ``tasks/`` is; None for keys that are not labelloop's."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "tasks" or not TASK_ID.match(parts[1]):
        return None
    task_id = parts[1]
    if parts[2:] == ["manifest.json"]:
        return ManifestKey(task_id)
    if parts[2] != "data":
        return None
    name = "/".join(parts[3:])
    if len(parts) != 4 or name in {"", ".", ".."} or "\\" in name or "\x00" in name:
        return OutsideTask(
            task_id,
            name or key,
            f"key `{key}` is outside tasks/{task_id}/data/: frames go directly in that folder "
            "(no sub-folders, no `..`)",
        )
    if len(name) > MAX_FRAME_NAME:
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]
        return OutsideTask(
            task_id,
            f"{name[: MAX_FRAME_NAME - 14]}…{digest}",  # fits the column, stays distinct
            f"frame names are at most {MAX_FRAME_NAME} characters; this one has {len(name)}",
        )
    return FrameKey(task_id, name)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Rejection:
    code: RejectCode
    reason: str


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo | Rejection:
    """Decode ``data`` fully with a real decoder; refuse what cannot be used as a frame.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        return Rejection("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own limit (below) decides; Pillow still raises past twice its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image_format = image.format or "unknown"
                if width * height > max_pixels:
                    return _too_many_pixels(width, height, max_pixels)
                if image_format not in SUPPORTED_FORMATS:
                    return Rejection(
                        "unsupported",
                        f"{image_format} images are not supported "
                        f"(use one of {', '.join(sorted(SUPPORTED_FORMATS))})",
                    )
                image.load()
    except UnidentifiedImageError:
        return Rejection("not_an_image", "not an image: no known image format was recognised")
    except Image.DecompressionBombError as error:
        return Rejection("too_many_pixels", f"refused as a decompression bomb: {error}")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        return Rejection("truncated", f"the image is truncated or corrupt: {error}")
    return ImageInfo(width, height, image_format)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> Rejection:
    return Rejection(
        "too_many_pixels",
        f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
        "(a decompression bomb, or a frame far larger than annotation needs)",
    )


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    sha256: str | None = None


class ManifestError(ValueError):
    """The manifest cannot be used; the message says why."""


def parse_manifest(raw: bytes) -> list[ManifestEntry]:
    """``{"files": ["000.jpg", {"name": "001.jpg", "sha256": "…"}, ...]}`` → entries."""
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest.json is not JSON: {error}") from error
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list) or not files:
        raise ManifestError('manifest.json needs a non-empty "files" list')
    entries: list[ManifestEntry] = []
    for index, item in enumerate(files):
        if isinstance(item, str):
            entry = ManifestEntry(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            digest = item.get("sha256")
            if digest is not None and not (
                isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)
            ):
                raise ManifestError(f"files[{index}].sha256 must be 64 lowercase hex digits")
            entry = ManifestEntry(item["name"], digest)
        else:
            raise ManifestError(f'files[{index}] must be a name or {{"name", "sha256"}}')
        if not entry.name or "/" in entry.name or entry.name in {".", ".."}:
            raise ManifestError(f"files[{index}]: `{entry.name}` is not a plain file name")
        if len(entry.name) > MAX_FRAME_NAME:
            raise ManifestError(
                f"files[{index}]: the name has {len(entry.name)} characters, over the limit "
                f"of {MAX_FRAME_NAME}"
            )
        entries.append(entry)
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise ManifestError("manifest.json names a file more than once")
    return entries


def missing_frames(declared: list[str], recorded: set[str]) -> list[str]:
    """Declared frames that are neither processed nor rejected yet."""
    return [name for name in declared if name not in recorded]
