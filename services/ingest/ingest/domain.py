"""Pure decisions of ingest: which object a key names, whether bytes are a usable image,
what a manifest declares, and when a task's data is complete."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from labelloop.images import UnusableImage, decode_frame
from schemas.events import FrameRejectCode

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_FRAME_NAME = 255
"""Characters in a frame's file name (the ``frames.name`` column): refused at presign and in
the manifest; an object stored under a longer name is rejected with a shortened name."""


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
    code: FrameRejectCode
    reason: str


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo | Rejection:
    """Decode ``data`` fully with the decoder the trainer and labeler-assist use; refuse what
    cannot be used as a frame.

    So every frame accepted here trains and serves; its size is the displayed one (EXIF
    orientation applied, see :mod:`labelloop.images`). The pixel count is checked from the
    header before any pixel is decoded, so a decompression bomb costs nothing.
    """
    try:
        frame = decode_frame(data, max_pixels=max_pixels)
    except UnusableImage as unusable:
        return Rejection(unusable.code, unusable.reason)
    return ImageInfo(frame.width, frame.height, frame.format)


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
