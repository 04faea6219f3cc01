"""What ingest checks is what was announced: reads are pinned to the notified ETag and capped
at the size limit, on the real object store (both servers: marker object_store)."""

from __future__ import annotations

import pytest

from labelloop.storage import ObjectChanged, ObjectReadError, ObjectStore, ObjectTooLarge

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


async def test_reads_on_the_event_loop_keep_the_same_rules(store: ObjectStore, unique: str) -> None:
    """Ingest's reads (aiohttp, signed with the minio client's SigV4) on both servers: any key
    a frame may have, pinned, capped, and the store's refusals named."""
    key = f"pinning/{unique}/ünï cødé+%20(1)~.jpg"
    store.put_bytes(key, b"first version")
    [listed] = store.list_objects(f"pinning/{unique}/")
    assert await store.fetch_bytes(key, etag=listed.etag, max_bytes=1024) == b"first version"
    with pytest.raises(ObjectTooLarge):
        await store.fetch_bytes(key, etag=listed.etag, max_bytes=5)
    store.put_bytes(key, b"swapped after it was validated")
    with pytest.raises(ObjectChanged):
        await store.fetch_bytes(key, etag=listed.etag)
    assert await store.fetch_bytes(key) == b"swapped after it was validated"
    with pytest.raises(ObjectReadError) as refused:
        await store.fetch_bytes(f"pinning/{unique}/missing.jpg")
    assert refused.value.status == 404 and refused.value.code in {"NoSuchKey", "NoSuchObject"}
    await store.aclose()
