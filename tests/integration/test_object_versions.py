"""What ingest checks is what was announced: reads are pinned to the notified ETag and capped
at the size limit, on the real object store (both servers: marker object_store)."""

from __future__ import annotations

import pytest

from labelloop.storage import ObjectChanged, ObjectStore, ObjectTooLarge

pytestmark = [pytest.mark.integration, pytest.mark.object_store]


def test_reads_are_pinned_to_a_version_and_capped(store: ObjectStore, unique: str) -> None:
    key = f"pinning/{unique}/frame.jpg"
    store.put_bytes(key, b"first version")
    [listed] = store.list_objects(f"pinning/{unique}/")
    assert store.get_bytes(key, etag=listed.etag, max_bytes=1024) == b"first version"
    with pytest.raises(ObjectTooLarge):
        store.get_bytes(key, etag=listed.etag, max_bytes=5)
    store.put_bytes(key, b"swapped after it was validated")
    with pytest.raises(ObjectChanged):
        store.get_bytes(key, etag=listed.etag)
    assert store.get_bytes(key) == b"swapped after it was validated"
