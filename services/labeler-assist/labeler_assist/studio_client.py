"""Label Studio's REST API, as the ML backend calls it: its tasks, their annotations and
images in, predictions out. Only origins the operator named are ever called
(``LABELLOOP_LABEL_STUDIO_URLS``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

PAGE_SIZE = 100
"""Tasks per page of Label Studio's task list."""
PREDICTIONS_PER_CALL = 500
"""Predictions per import call (Label Studio imports them in batches of 500)."""


class StudioUnavailable(Exception):
    """Label Studio answered with an error or not at all (the call may be retried)."""


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL, lower-cased, without a trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def allowed_origins(setting: str) -> frozenset[str]:
    """The comma-separated ``label_studio_urls`` setting as origins."""
    return frozenset(origin(url) for url in setting.split(",") if url.strip())


class StudioClient:
    """One Label Studio instance, called with a project owner's token (from ``/setup``)."""

    def __init__(self, hostname: str, token: str, *, timeout_s: float, max_image_bytes: int):
        self.base = origin(hostname)
        self.max_image_bytes = max_image_bytes
        self._http = httpx.AsyncClient(
            base_url=self.base,
            headers={"Authorization": f"Token {token}"},
            timeout=timeout_s,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as failed:
            raise StudioUnavailable(f"{method} {path}: {failed!r}") from failed
        if response.status_code >= 400:
            raise StudioUnavailable(
                f"{method} {path}: {response.status_code} {response.text[:200]}"
            )
        return response.json()

    async def project(self, project: int) -> dict[str, Any]:
        found: dict[str, Any] = await self._json("GET", f"/api/projects/{project}/")
        return found

    async def tasks(self, project: int) -> AsyncIterator[dict[str, Any]]:
        """Every task of the project, a page at a time (Label Studio answers 404 for a page
        past the end, the first page of a project without tasks included)."""
        page = 1
        while True:
            try:
                response = await self._http.get(
                    f"/api/projects/{project}/tasks/", params={"page": page, "page_size": PAGE_SIZE}
                )
            except httpx.HTTPError as failed:
                raise StudioUnavailable(
                    f"listing project {project}'s tasks: {failed!r}"
                ) from failed
            if response.status_code == 404:
                return
            if response.status_code >= 400:
                answer = f"{response.status_code} {response.text[:200]}"
                raise StudioUnavailable(f"listing project {project}'s tasks: {answer}")
            listed = response.json()
            for task in listed:
                yield task
            if len(listed) < PAGE_SIZE:
                return
            page += 1

    async def annotations(self, task: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._json("GET", f"/api/tasks/{task}/annotations/")
        return found

    async def image(self, url: str) -> bytes:
        """A task's image: a path on Label Studio (its uploads) or a URL on its own origin.

        Images elsewhere (cloud storage, other hosts) are not fetched: the backend calls no
        address the operator did not name.
        """
        target = urljoin(self.base + "/", url)
        if origin(target) != self.base:
            raise StudioUnavailable(f"{url[:120]} is not on Label Studio's origin {self.base}")
        try:
            async with self._http.stream("GET", target) as response:
                if response.status_code >= 400:
                    raise StudioUnavailable(f"GET {url[:120]}: {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_image_bytes:
                        raise StudioUnavailable(f"{url[:120]} is over {self.max_image_bytes} bytes")
                return bytes(body)
        except httpx.HTTPError as failed:
            raise StudioUnavailable(f"GET {url[:120]}: {failed!r}") from failed

    async def import_predictions(self, project: int, predictions: list[dict[str, Any]]) -> int:
        """Add predictions (``task``, ``result``, ``score``, ``model_version``) to the project."""
        created = 0
        for start in range(0, len(predictions), PREDICTIONS_PER_CALL):
            answer = await self._json(
                "POST",
                f"/api/projects/{project}/import/predictions",
                json=predictions[start : start + PREDICTIONS_PER_CALL],
            )
            created += int(answer.get("created", 0))
        return created
