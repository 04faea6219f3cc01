"""Read a dataset with Datumaro and print what it found as one JSON object.

Run only under the Datumaro venv (``tests/tool_venvs.py``), never the project's: it imports
nothing from labelloop, only the standard library and datumaro.

Usage: ``python datumaro_probe.py FORMAT DIR``. Exits non-zero when Datumaro fails, or reports
(or silently does) something that drops data: a logged warning, a box without a label, an item
whose image is missing, or (YOLO) a label file it skipped.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any


class _Warnings(logging.Handler):
    """Datumaro logs what it skips (unknown image ids, skipped files) as warnings, then goes on."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _score(attributes: dict[str, Any]) -> float | None:
    """COCO keeps ``score`` a number; CVAT and VOC attributes come back as text."""
    value = attributes.get("score")
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _skipped_yolo_labels(root: Path, item_ids: set[str]) -> list[str]:
    """Label files Datumaro's YOLO importer ignored: it keeps only files whose first line has
    exactly 5 plain numbers (no sign, no exponent, no 6th confidence column), without a word."""
    labels = [p for p in root.glob("[Ll]abels/**/*.txt")]
    labels += [p for p in root.glob("[Aa]nnotations/**/*.txt")]
    return sorted(str(p.relative_to(root)) for p in labels if p.stem not in item_ids)


def probe(fmt: str, root: Path) -> tuple[dict[str, Any], list[str]]:
    """What Datumaro reads, and the problems that mean it dropped something."""
    import datumaro as dm
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.contexts.importer import FailingImportErrorPolicy

    handler = _Warnings()
    logging.getLogger().addHandler(handler)
    # An explicit error policy makes the import eager, so item and annotation errors raise here.
    dataset = dm.Dataset.import_from(str(root), fmt, error_policy=FailingImportErrorPolicy())
    categories = dataset.categories().get(AnnotationType.label)
    names = [label.name for label in categories] if categories is not None else []
    problems = list(handler.messages)

    frames: dict[str, Any] = {}
    for item in dataset:
        if item.id in frames:
            problems.append(f"item id {item.id!r} occurs in more than one subset")
        media = item.media
        path = getattr(media, "path", None)
        if media is None or (path and not Path(path).is_file()):
            problems.append(f"item {item.id!r}: image not found ({path})")
        size = getattr(media, "size", None) if media is not None else None
        boxes = []
        for ann in item.annotations:
            if ann.type != AnnotationType.bbox:
                continue
            if ann.label is None:
                problems.append(f"item {item.id!r}: a box without a (declared) label")
            label = names[ann.label] if ann.label is not None else None
            boxes.append([label, ann.x, ann.y, ann.w, ann.h, _score(ann.attributes)])
        frames[item.id] = {"size": list(size) if size else None, "boxes": boxes}

    if fmt.startswith("yolo"):
        for label_file in _skipped_yolo_labels(root, set(frames)):
            problems.append(f"label file skipped by Datumaro: {label_file}")

    result = {
        "format": fmt,
        "items": len(dataset),
        "labels": names,
        "subsets": {name: len(subset) for name, subset in sorted(dataset.subsets().items())},
        "frames": frames,
    }
    return result, problems


def main(argv: list[str]) -> int:
    """Print the JSON on the real stdout only: Datumaro's own prints go to stderr."""
    if len(argv) != 2:
        print("usage: datumaro_probe.py FORMAT DIR", file=sys.stderr)
        return 2
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        result, problems = probe(argv[0], Path(argv[1]))
    except Exception as error:
        traceback.print_exc()
        # Datumaro wraps the real reason ("Failed to import dataset ..."): end with the chain.
        chain = []
        cause: BaseException | None = error
        while cause is not None:
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        print("datumaro_probe: " + "\n  caused by ".join(chain), file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout
    for problem in problems:
        print(f"datumaro_probe: {problem}", file=sys.stderr)
    print(json.dumps(result, sort_keys=True))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
