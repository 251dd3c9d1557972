"""`Client`: the bulkgen JSON API (/api/v1) over requests.

Uploads go straight to storage (presigned PUTs) where the server offers it, and through the
multipart `POST /api/v1/uploads` where it does not (older servers answer 404 to the presign call).
Storage URLs (presigned PUTs, output downloads) are fetched without the API token: they carry their
own signature, and S3 refuses a request that carries two kinds of authorization.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from bulkgen_client.naming import OutputNamer, content_type_for

DEFAULT_URL = "http://127.0.0.1:5000"
FINISHED = ("succeeded", "failed", "cancelled")
# Files sent at once: enough to hide per-request latency, few enough not to swamp a small server.
PARALLEL = 4
# The server answers a `Prefer: wait` request after at most this long (web/live.py).
MAX_WAIT_S = 60
PRESIGN_BATCH = 100
# A multipart request holds its files in the server's memory: keep each one modest.
MULTIPART_FILES = 20
MULTIPART_BYTES = 16 * 1024 * 1024
ITEMS_PAGE = 1000
CHUNK = 256 * 1024
# Storage and wait requests that fail this many times in a row give up (a server restart is shorter).
TRIES = 4

Progress = Callable[[int, int], None]


class ApiError(Exception):
    """An error answer from the API (`{"error": {"code", "message", "field"}}`), or no answer at all
    (status 0, code `unreachable`)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"HTTP {self.status} " if self.status else ""
        return f"{status}{self.code}: {self.message}{where}"


class UploadRejected(ApiError):
    """The server refused some of the files. `rejected`: one `{"path", "name", "error"}` per refused
    file; `assets`: the asset for each path in the order given, None for a refused one."""

    def __init__(self, rejected: list[dict[str, Any]], assets: list[dict[str, Any] | None]) -> None:
        names = ", ".join(f"{r['name']} ({r['error']})" for r in rejected[:5])
        more = f" and {len(rejected) - 5} more" if len(rejected) > 5 else ""
        super().__init__(400, "rejected", f"{len(rejected)} file(s) refused: {names}{more}")
        self.rejected, self.assets = rejected, assets


class _Meter:
    """Bytes sent so far over all threads, reported as (done, total)."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self.callback is not None:
                self.callback(self.done, self.total)


class _Body:
    """A request body read in blocks from bytes and files, counting the file bytes as they go out.

    Its length is known up front, so requests sends a Content-Length (a presigned S3 PUT needs one)."""

    def __init__(self, parts: list[bytes | Path], meter: _Meter) -> None:
        self.parts = parts
        self.meter = meter
        self.length = sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in parts)
        self.sent = 0  # file bytes counted so far (taken back if the request is tried again)
        self._index = 0
        self._offset = 0
        self._file: Any = None

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size is None or size < 0 else size
        while self._index < len(self.parts):
            part = self.parts[self._index]
            if isinstance(part, bytes):
                chunk = part[self._offset : self._offset + size]
                self._offset += len(chunk)
            else:
                if self._file is None:
                    self._file = part.open("rb")
                chunk = self._file.read(size)
                self.sent += len(chunk)
                self.meter.add(len(chunk))
            if chunk:
                return chunk
            self.close()
            self._index += 1
            self._offset = 0
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def take_back(self) -> None:
        """Before a retry: what this attempt counted did not arrive."""
        self.close()
        self.meter.add(-self.sent)


def _multipart(files: list[tuple[Path, str]], meter: _Meter) -> tuple[_Body, str]:
    """A multipart/form-data body with each file as field `files`, streamed from disk."""
    boundary = uuid.uuid4().hex
    parts: list[bytes | Path] = []
    for path, name in files:
        safe = "".join(c for c in name if c not in '\r\n"\\') or "image"
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{safe}"\r\n'
            f"Content-Type: {content_type_for(name)}\r\n\r\n"
        )
        parts += [head.encode(), path, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return _Body(parts, meter), f"multipart/form-data; boundary={boundary}"


def _error(response: requests.Response) -> ApiError:
    try:
        err = response.json()["error"]
        return ApiError(
            response.status_code, err.get("code", "error"), err.get("message", ""), err.get("field")
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = " ".join(response.text.split())[:300] or response.reason or ""
        return ApiError(response.status_code, f"http_{response.status_code}", text)


class Client:
    """The bulkgen API. `url` and `token` default to the environment's BULKGEN_URL and BULKGEN_TOKEN."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        parallel: int = PARALLEL,
    ) -> None:
        self.url = (url or os.environ.get("BULKGEN_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.parallel = max(1, parallel)
        self.session = requests.Session()
        token = token or os.environ.get("BULKGEN_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.storage = requests.Session()  # presigned URLs: never the API token
        # None: not known yet; False: the server has no direct uploads (answered 404).
        self._direct_uploads: bool | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kw: Any) -> requests.Response:
        url = f"{self.url}/api/v1{path}"
        kw.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kw)
        except requests.RequestException as exc:
            raise ApiError(0, "unreachable", f"{method} {url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._call(method, path, **kw).json()

    def _absolute(self, url: str) -> str:
        return urljoin(self.url + "/", url)

    # --- uploads ----------------------------------------------------------------------------

    def upload(self, paths: Iterable[str | os.PathLike[str]], progress: Progress | None = None) -> list[dict]:
        """Upload image files; the assets (`key`, `size`, `sha256`, ...) in the order of `paths`.

        `progress(bytes_done, bytes_total)` is called as bytes go out, from several threads.
        Raises UploadRejected if the server refused any file (the others are uploaded and listed
        on the exception)."""
        files = [Path(p) for p in paths]
        meter = _Meter(sum(p.stat().st_size for p in files), progress)
        if not files:
            return []
        if self._direct_uploads is not False:
            try:
                assets, rejected = self._upload_direct(files, meter)
                self._direct_uploads = True
            except _NoDirectUploads:
                self._direct_uploads = False
        if self._direct_uploads is False:
            assets, rejected = self._upload_multipart(files, meter)
        if rejected:
            raise UploadRejected(rejected, assets)
        return assets  # type: ignore[return-value]

    def _upload_direct(self, files: list[Path], meter: _Meter) -> tuple[list[dict | None], list[dict]]:
        assets: list[dict | None] = []
        rejected: list[dict] = []
        for start in range(0, len(files), PRESIGN_BATCH):
            batch = files[start : start + PRESIGN_BATCH]
            wanted = [
                {"name": p.name, "size": p.stat().st_size, "content_type": content_type_for(p.name)}
                for p in batch
            ]
            try:
                grants = self._json("POST", "/uploads/presign", json={"files": wanted})["uploads"]
            except ApiError as exc:
                if exc.status in (404, 405) and start == 0:
                    raise _NoDirectUploads from exc
                raise
            if len(grants) != len(batch):
                raise ApiError(0, "bad_answer", f"asked to store {len(batch)} files, got {len(grants)} URLs")
            with ThreadPoolExecutor(self.parallel) as pool:
                list(pool.map(lambda pg: self._put(pg[0], pg[1], meter), zip(batch, grants, strict=True)))
            keys = [g["key"] for g in grants]
            done = self._json("POST", "/uploads/complete", json={"keys": keys})
            # An asset names the upload it came from (`upload_key`: it is stored under a key of its own).
            by_key = {a.get("upload_key", a["key"]): a for a in done.get("assets", [])}
            refused = {r["key"]: r for r in done.get("rejected", [])}
            for path, key in zip(batch, keys, strict=True):
                if key in refused:
                    error = refused[key].get("error") or refused[key].get("code")
                    rejected.append({"path": str(path), "name": path.name, "error": error})
                    assets.append(None)
                elif key in by_key:
                    assets.append(by_key[key])
                else:
                    raise ApiError(0, "bad_answer", f"the server did not confirm the upload of {path}")
        return assets, rejected

    def _put(self, path: Path, grant: dict[str, Any], meter: _Meter) -> None:
        for attempt in range(1, TRIES + 1):
            body = _Body([path], meter)
            try:
                r = self.storage.request(
                    grant.get("method", "PUT"),
                    self._absolute(grant["url"]),
                    data=body,
                    headers=grant.get("headers") or {},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                body.take_back()
                if attempt == TRIES:
                    raise ApiError(0, "unreachable", f"storing {path.name} failed: {exc}") from exc
            else:
                body.close()
                if r.status_code < 300:
                    return
                body.take_back()
                if r.status_code < 500 or attempt == TRIES:
                    text = " ".join(r.text.split())[:300]
                    raise ApiError(r.status_code, "storage_refused", f"storing {path.name} failed: {text}")
            time.sleep(0.5 * 2**attempt)

    def _upload_multipart(self, files: list[Path], meter: _Meter) -> tuple[list[dict | None], list[dict]]:
        batches: list[list[int]] = [[]]
        size = 0
        for i, p in enumerate(files):
            n = p.stat().st_size
            if batches[-1] and (len(batches[-1]) >= MULTIPART_FILES or size + n > MULTIPART_BYTES):
                batches.append([])
                size = 0
            batches[-1].append(i)
            size += n

        def send(batch: list[int]) -> list[dict]:
            body, content_type = _multipart([(files[i], files[i].name) for i in batch], meter)
            try:
                return self._json("POST", "/uploads", data=body, headers={"Content-Type": content_type})[
                    "assets"
                ]
            finally:
                body.close()

        assets: list[dict | None] = []
        with ThreadPoolExecutor(self.parallel) as pool:
            for got in pool.map(send, batches):
                assets += got
        return assets, []

    # --- jobs -------------------------------------------------------------------------------

    def create(
        self,
        provider: str,
        inputs: list[str | dict[str, Any]],
        model: str | None = None,
        prompt: str | None = None,
        params: dict[str, Any] | None = None,
        priority: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Submit a job. `inputs`: storage keys, or objects `{"key", "prompt", "negative_prompt",
        "seed", "params", "prompts"}` for what one image gets of its own. `extra`: any other job
        field (`webhook`, `idempotency_key`, `max_concurrency`, ...)."""
        body = {"provider": provider, "inputs": inputs, "model": model, "prompt": prompt, "params": params}
        body.update(priority=priority, **extra)
        return self._json("POST", "/jobs", json={k: v for k, v in body.items() if v is not None})

    def get(
        self,
        job_id: str,
        items_limit: int = 0,
        items_offset: int = 0,
        item_status: str | None = None,
        wait: int | None = None,
    ) -> dict[str, Any]:
        """The job; with `items_limit` > 0, that many of its items from `items_offset` (only those
        in `item_status`, if given). `wait`: answer as soon as the job finishes, or after that many
        seconds (at most 60)."""
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        timeout = self.timeout + (wait or 0)
        params: dict[str, Any] = {"items_limit": items_limit, "items_offset": items_offset}
        if item_status:
            params["item_status"] = item_status
        return self._json("GET", f"/jobs/{job_id}", params=params, headers=headers, timeout=timeout)

    def items(self, job_id: str, status: str | None = None) -> Iterator[dict[str, Any]]:
        """The job's items (those in `status`, if given), in input order, a page at a time."""
        offset: int | None = 0
        while offset is not None:
            page = self.get(job_id, items_limit=ITEMS_PAGE, items_offset=offset, item_status=status)
            yield from page.get("items", [])
            offset = page.get("items_next_offset")

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        interval: int = 2,
    ) -> dict[str, Any]:
        """Block until the job finishes; the finished job (without items).

        Long-polls with `Prefer: wait`: the server answers the moment the job finishes. With
        `on_progress(job)`, asks every `interval` seconds so the callback sees the counts move.
        Raises TimeoutError after `timeout` seconds; rides out a server restart of a few seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            step = float(MAX_WAIT_S if on_progress is None else max(1, interval))
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            try:
                job = self.get(job_id, wait=max(1, int(step)))
                failures = 0
            except ApiError as exc:
                failures += 1
                if (exc.status and exc.status < 500) or failures >= TRIES:
                    raise
                time.sleep(min(2.0**failures, 10.0))
                continue
            if on_progress is not None:
                on_progress(job)
            if job["status"] in FINISHED:
                return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel what has not finished; `{"cancelled": n, "job": {...}}`."""
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def retry(self, job_id: str) -> dict[str, Any]:
        """Run the failed and cancelled items again; `{"retried": n, "job": {...}}`."""
        return self._json("POST", f"/jobs/{job_id}/retry")

    # --- results ----------------------------------------------------------------------------

    def download(
        self,
        job_id: str,
        dest_dir: str | os.PathLike[str],
        names: list[str] | None = None,
        progress: Progress | None = None,
    ) -> list[Path]:
        """Save the outputs of the job's succeeded items into `dest_dir`; the paths written.

        Each file is named after its input (`names[i]` for the job's i-th input, else the input's
        storage key): `cat.jpg` -> `cat.mp4`, further outputs of the same item `cat.poster.png`.
        Nothing is overwritten: a name taken (in this call or already on disk) gets `-2`, `-3`, ...
        `progress(items_done, items_total)` counts items.

        The files come from each item's output URLs (signed, straight from storage, several at
        once), not from the job's zip (GET /api/v1/jobs/{id}/download): that way each result is
        matched to its input by the item's index, named from the caller's local file names (which
        the server may not know), and a large job needs no temporary zip on disk."""
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        namer = OutputNamer(dest)
        # Page by page: output URLs are signed for minutes, so each page is fetched just before use.
        written: list[Path] = []
        counter = _Meter(self.get(job_id)["counts"].get("succeeded", 0), progress)
        offset: int | None = 0
        while offset is not None:
            page = self.get(job_id, items_limit=ITEMS_PAGE, items_offset=offset, item_status="succeeded")
            offset = page.get("items_next_offset")
            plan: list[list[tuple[str, Path]]] = []
            for item in page.get("items", []):
                if item["status"] != "succeeded" or not item.get("outputs"):
                    continue
                index = item["index"]
                source = names[index] if names is not None and index < len(names) else item["input_key"]
                files = namer.reserve(source, item["outputs"])
                plan.append([(o["url"], dest / f) for o, f in zip(item["outputs"], files, strict=True)])

            def fetch_item(outputs: list[tuple[str, Path]]) -> list[Path]:
                got = [self._fetch(url, path) for url, path in outputs]
                counter.add(1)
                return got

            with ThreadPoolExecutor(self.parallel) as pool:
                for got in pool.map(fetch_item, plan):
                    written += got
        return written

    def _fetch(self, url: str, path: Path) -> Path:
        for attempt in range(1, TRIES + 1):
            try:
                with self.storage.get(self._absolute(url), stream=True, timeout=self.timeout) as r:
                    if r.status_code >= 400:
                        text = " ".join(r.text.split())[:300]
                        if r.status_code < 500 or attempt == TRIES:
                            raise ApiError(r.status_code, "download_failed", f"{path.name}: {text}")
                    else:
                        # "x": never replace a file, even one that appeared since the name was chosen.
                        with path.open("xb") as out:
                            try:
                                for chunk in r.iter_content(CHUNK):
                                    out.write(chunk)
                            except BaseException:
                                out.close()
                                path.unlink(missing_ok=True)
                                raise
                        return path
            except requests.RequestException as exc:
                if attempt == TRIES:
                    raise ApiError(0, "unreachable", f"downloading {path.name} failed: {exc}") from exc
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


class _NoDirectUploads(Exception):
    """The server has no presign endpoint: use the multipart upload."""
