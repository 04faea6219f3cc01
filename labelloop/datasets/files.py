"""Where exported files go (a folder or a zip) and the file names frames get there."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from labelloop.datasets.records import DatasetError, Sink
from labelloop.images import IMAGE_SUFFIXES

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _checked(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DatasetError(f"{path!r} is not a path inside the dataset")
    return relative


class DirectorySink(Sink):
    """Files under ``root`` (made if missing); refuses to overwrite, so exports never mix."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, path: str, data: bytes) -> None:
        target = self.root.joinpath(*_checked(path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("xb") as out:  # "x": a second file of that name is an error
            out.write(data)


class ZipSink(Sink):
    """Files into an open zip archive (deflated; images are stored as they are)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.written: set[str] = set()

    def put(self, path: str, data: bytes) -> None:
        name = str(_checked(path))
        if name in self.written:
            raise DatasetError(f"{name} was written twice")
        self.written.add(name)
        compress = zipfile.ZIP_STORED if _is_image(name) else zipfile.ZIP_DEFLATED
        self.archive.writestr(name, data, compress_type=compress)


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def file_names(names: list[str]) -> dict[str, str]:
    """Each frame's image file name in an export: its own name when that is plain (what its
    owner knows it by), else a readable form with a hash. Stems are unique, ignoring case,
    because YOLO and VOC name each frame's annotation file after its image's stem."""
    stems = {name: _plain_stem(name) for name in names}
    taken: dict[str, int] = {}
    for stem in stems.values():
        if stem is not None:
            taken[stem.lower()] = taken.get(stem.lower(), 0) + 1
    chosen = {}
    for name, stem in stems.items():
        suffix = PurePosixPath(name).suffix
        if _UNSAFE.search(suffix):
            suffix = ""
        if stem is None or taken[stem.lower()] > 1:
            readable = _UNSAFE.sub("_", PurePosixPath(name).stem).lstrip(".")[-80:]
            chosen[name] = f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}{suffix}"
        else:
            chosen[name] = stem + suffix
    return chosen


def _plain_stem(name: str) -> str | None:
    stem = PurePosixPath(name).stem
    if not stem or stem.startswith(".") or _UNSAFE.search(stem):
        return None
    return stem


def stem_of(file_name: str) -> str:
    return PurePosixPath(file_name).stem


def extract_zip(data: Path | IO[bytes], root: Path, *, max_bytes: int) -> None:
    """Unpack an export into the empty folder ``root``: no path outside it, none twice, and
    at most ``max_bytes`` unpacked (a zip bomb stops there)."""
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} is not empty; an export goes into a folder of its own")
    sink = DirectorySink(root)
    total = 0
    with zipfile.ZipFile(data) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            total += info.file_size
            if total > max_bytes:
                raise DatasetError(f"the export unpacks to over {max_bytes:,} bytes")
            sink.put(info.filename, archive.read(info))
