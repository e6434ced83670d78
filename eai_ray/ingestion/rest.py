"""REST connector: JSON endpoints with auth, pagination, retries and a client-side rate limit.

Records become Arrow the way JSON files do (nested -> struct, a field whose type
changes -> JSON text); every row keeps ``_eai_raw`` (the record as JSON) and
``_eai_position`` ("page N" or "cursor=<value>").

Failures are typed: 401/403 -> AuthenticationFailed, 404 -> SourceNotFound,
429 -> RateLimited, 5xx / timeouts / refused connections -> SourceUnavailable, both
retried ``max_retries`` times by the ``http`` policy of ``eai_ray/retry.py`` (jittered
exponential backoff; the Retry-After of a 429 or 503, seconds or an HTTP date, is
honoured up to 5 minutes, a longer one fails fast). Secrets are resolved when a request
is built and never appear in messages.

Example::

    conn = RestConnector(RestSource(kind="rest", name="crm", base_url="https://api.example.com",
                                    auth={"type": "bearer", "token": "${CRM_TOKEN}"},
                                    resources=[{"name": "people", "path": "/people",
                                                "records_path": "data",
                                                "pagination": {"type": "page", "page_size": 100}}]))
    for batch in conn.read("people"):
        ...
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import RestResource, RestSource
from eai_ray.errors import AuthenticationFailed, RateLimited, SourceError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import POSITION_COLUMN, RAW_COLUMN, Batch, DiscoveredSchema, cursor_value, merge_checkpoints
from eai_ray.ingestion.discovery import infer_columns, records_to_table
from eai_ray.retry import HTTP, parse_retry_after

_RECORD_KEYS = ("data", "items", "results", "records")  # where lists usually live when records_path is unset


class TokenBucket:
    """At most ``rate`` acquisitions per second, bursts up to ``capacity``.

    The clock and sleep are arguments so tests can drive time by hand.
    """

    def __init__(self, rate: float, *, capacity: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.capacity = rate, capacity
        self.clock, self.sleep = clock, sleep
        self.tokens = capacity
        self.last = clock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds slept."""
        self._refill()
        waited = 0.0
        if self.tokens < 1:
            waited = (1 - self.tokens) / self.rate
            self.sleep(waited)
            self._refill()
        self.tokens = max(self.tokens - 1, 0.0)
        return waited

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now


class RestConnector:
    """Reads JSON resources from one REST API (``RestSource``)."""

    kind = "rest"

    def __init__(self, source: RestSource, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, backoff_base: float = HTTP.base,
                 backoff_max: float = HTTP.max_wait, max_retry_after: float | None = HTTP.retry_after_cap) -> None:
        self.source = source
        self.name = source.name
        self.clock, self.sleep = clock, sleep
        # the `http` policy of eai_ray/retry.py, with this source's attempts; a Retry-After longer than
        # max_retry_after fails fast (the scheduler retries later)
        self.policy = HTTP.replace(attempts=source.max_retries + 1, base=backoff_base, max_wait=backoff_max,
                                   retry_after_cap=max_retry_after)
        self.bucket = TokenBucket(source.rate_limit, clock=clock, sleep=sleep) if source.rate_limit else None
        self._session = None

    # ------------------------------------------------------------------ protocol
    def check(self) -> None:
        """Fetch the first page of the first resource."""
        res = self.source.resources[0]
        self._get(self._url(res.path), self._first_params(res), res.name)

    def resources(self) -> list[str]:
        return [r.name for r in self.source.resources]

    def discover(self, resource: str, *, sample_rows: int = 10_000, sample_pages: int = 5) -> DiscoveredSchema:
        """Infer column types from the first pages (up to ``sample_pages`` pages or ``sample_rows`` records)."""
        res = self._resource(resource)
        records: list[Any] = []
        pages = self._pages(res, None)
        for n, (_, page) in enumerate(pages, 1):
            records.extend(page)
            if len(records) >= sample_rows or n >= sample_pages:
                break
        pages.close()
        table = records_to_table([r for r in records[:sample_rows] if isinstance(r, dict)])
        columns = infer_columns(table, sample_rows=sample_rows)
        for c in columns:
            c.primary_key = c.name in res.primary_key
        return DiscoveredSchema(resource, columns, list(res.primary_key))

    def read(self, resource: str, *, checkpoint: dict[str, Any] | None = None,
             partition=None, batch_rows: int = 250_000) -> Iterator[Batch]:
        """Yield batches of records after ``checkpoint``; only the last batch carries the new checkpoint.

        Pages may come in any cursor order, so a checkpoint is only safe once
        every page of this read is committed; an interrupted read starts over
        from the previous checkpoint (bronze may get duplicates, silver drops them).
        """
        res = self._resource(resource)
        since = (checkpoint or {}).get("cursor")
        if since is None and res.incremental is not None:
            since = res.incremental.initial
        pending: pa.Table | None = None
        new_checkpoint = checkpoint
        for table in self._tables(res, since, batch_rows):
            if res.incremental is not None:
                table = _after(table, res.incremental.cursor, since)
                new_checkpoint = merge_checkpoints(
                    new_checkpoint, _cursor_checkpoint(table, res.incremental.cursor))
            if table.num_rows == 0:
                continue
            if pending is not None:
                yield Batch(pending)
            pending = table
        if pending is not None or new_checkpoint != checkpoint:
            yield Batch(pending if pending is not None else pa.table({}), new_checkpoint)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------------ records
    def _tables(self, res: RestResource, since: Any, batch_rows: int) -> Iterator[pa.Table]:
        """Group pages into tables of about ``batch_rows`` records (fewer, wider batches)."""
        records: list[Any] = []
        positions: list[str] = []
        for label, page in self._pages(res, since):
            records.extend(page)
            positions.extend([label] * len(page))
            if len(records) >= batch_rows:
                yield _to_table(records, positions)
                records, positions = [], []
        if records:
            yield _to_table(records, positions)

    def _pages(self, res: RestResource, since: Any) -> Generator[tuple[str, list[Any]], None, None]:
        """(position label, records) per page, following the resource's pagination."""
        p = res.pagination
        params = self._first_params(res)
        if res.incremental is not None and res.incremental.param and since is not None:
            params[res.incremental.param] = since
        url = self._url(res.path)
        page, offset, seen, seen_cursors = p.start_page, 0, 0, set()
        for n in range(1, (p.max_pages or 10**9) + 1):
            body, links = self._get(url, params, res.name)
            records = _records(body, res.records_path)
            label = f"cursor={params[p.cursor_param]}" if p.type == "cursor" and p.cursor_param in params \
                else f"page {n}"
            yield label, records
            seen += len(records)
            if p.type == "none" or not records or _last_page(body, records, p, seen):
                return
            if p.type == "page":
                page += 1
                params[p.page_param] = page
            elif p.type == "offset":
                offset += len(records)
                params[p.offset_param] = offset
            elif p.type == "cursor":
                nxt = _dig(body, p.cursor_path) if p.cursor_path else None
                if nxt in (None, "") or nxt in seen_cursors:  # a repeated cursor would loop forever
                    return
                seen_cursors.add(nxt)
                params[p.cursor_param] = nxt
            elif p.type == "link":
                nxt = links.get("next", {}).get("url")
                if not nxt:
                    return
                url, params = self._next_link(urljoin(url, nxt), res.name), {}  # it carries its own query

    def _first_params(self, res: RestResource) -> dict[str, Any]:
        p = res.pagination
        params = dict(res.params)
        if p.type == "page":
            params[p.page_param] = p.start_page
            if p.size_param and p.page_size:
                params[p.size_param] = p.page_size
        elif p.type == "offset":
            params[p.offset_param] = 0
            params[p.limit_param] = p.page_size or 100
        elif p.type in ("link", "cursor") and p.size_param and p.page_size:
            params[p.size_param] = p.page_size
        return params

    # ------------------------------------------------------------------ HTTP
    def _client(self):
        if self._session is None:
            self._session = _origin_bound_session(origin(self.source.base_url), self._credential_headers())
        return self._session

    def _credential_headers(self) -> set[str]:
        """Header names that carry credentials or configured values: never sent to another origin."""
        names = {"authorization", *(h.lower() for h in self.source.headers)}
        if self.source.auth.type == "header":
            names.add(self.source.auth.header_name.lower())
        return names

    def _next_link(self, url: str, resource: str) -> str:
        """The next page's URL, when it may be followed: same origin, or foreign links allowed (then
        it is fetched without credentials, see ``_get``). A downgrade to http is another origin."""
        if origin(url) == origin(self.source.base_url) or self.source.follow_foreign_links:
            return url
        raise SourceError(f"source '{self.name}': the next page of '{resource}' is on another origin "
                          f"({_shown(url)}, not {origin(self.source.base_url)}); credentials are sent only to "
                          "the configured base_url. Set follow_foreign_links: true on the source to follow "
                          "it without credentials", source=self.name, resource=resource)

    def _auth(self, url: str | None = None) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Headers and basic-auth pair for `url`, resolved now so secrets live only as long as a request.

        Only a request to the configured base origin gets credentials and custom headers.
        """
        if url is not None and origin(url) != origin(self.source.base_url):
            return {"Accept": "application/json"}, None
        headers = {"Accept": "application/json", **self.source.headers}
        a = self.source.auth
        if a.type == "bearer":
            return {**headers, "Authorization": f"Bearer {_resolve(a.token)}"}, None
        if a.type == "header":
            return {**headers, a.header_name: _resolve(a.token)}, None
        if a.type == "basic":
            return headers, (a.username or "", _resolve(a.password))
        return headers, None

    def _get(self, url: str, params: dict[str, Any], resource: str) -> tuple[Any, dict]:
        """GET under the ``http`` retry policy; returns (JSON body, parsed Link header).

        Timeouts, refused connections and 5xx raise ``SourceUnavailable``, 429 ``RateLimited``;
        the policy retries both with jittered backoff, or waits the ``Retry-After`` of a 429/503
        (up to ``max_retry_after``; a longer one fails fast).
        """
        import requests

        where = _shown(url)
        tries = 0

        def once() -> tuple[Any, dict]:
            nonlocal tries
            tries += 1
            if self.bucket is not None:
                self.bucket.acquire()
            headers, basic = self._auth(url)
            try:
                resp = self._client().get(url, params=params, headers=headers, auth=basic,
                                          timeout=self.source.timeout)
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise SourceUnavailable(
                    f"source '{self.name}': {where} did not answer after {_attempts(tries)} "
                    f"({type(exc).__name__})", source=self.name, resource=resource) from None
            status = resp.status_code
            if status == 429:
                raise RateLimited(f"source '{self.name}': {where} answered 429 (rate limited)",
                                  source=self.name, resource=resource,
                                  retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            if status >= 500:
                wait = parse_retry_after(resp.headers.get("Retry-After")) if status == 503 else None
                raise SourceUnavailable(f"source '{self.name}': {where} answered {status} "
                                        f"after {_attempts(tries)}", source=self.name,
                                        resource=resource, status=status, retry_after=wait)
            return self._body(resp, where, resource), resp.links

        return self.policy.call(once, sleep=self.sleep)

    def _body(self, resp, where: str, resource: str) -> Any:
        status = resp.status_code
        if status in (401, 403):
            raise AuthenticationFailed(f"source '{self.name}': {where} answered {status}; "
                                       f"check auth ({self.source.auth.type})",
                                       source=self.name, resource=resource, status=status)
        if status == 404:
            raise SourceNotFound(f"source '{self.name}': {where} answered 404", source=self.name,
                                 resource=resource, status=status)
        if status >= 400:
            raise SourceError(f"source '{self.name}': {where} answered {status}", source=self.name,
                              resource=resource, status=status)
        try:
            return resp.json()
        except ValueError:
            raise SourceError(f"source '{self.name}': {where} did not answer JSON "
                              f"(content type {resp.headers.get('Content-Type')!r})",
                              source=self.name, resource=resource) from None

    # ------------------------------------------------------------------ misc
    def _resource(self, name: str) -> RestResource:
        for r in self.source.resources:
            if r.name == name:
                return r
        raise SourceNotFound(f"source '{self.name}' has no resource '{name}'; known: {self.resources()}",
                             source=self.name, resource=name)

    def _url(self, path: str) -> str:
        if "://" in path:
            return path
        return self.source.base_url.rstrip("/") + "/" + path.lstrip("/")


# --------------------------------------------------------------------------- helpers
def origin(url: str) -> str:
    """scheme://host:port of a URL (default ports made explicit), the unit credentials are bound to."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _origin_bound_session(home: str, sensitive: set[str]):
    """A requests Session that drops credential headers on any redirect away from `home`.

    requests itself strips only ``Authorization`` when the host changes; an API key in a custom
    header would follow a redirect to another host, or from https to http.
    """
    import requests

    class _Session(requests.Session):
        def rebuild_auth(self, prepared_request, response):
            if origin(prepared_request.url) != home:
                for name in list(prepared_request.headers):
                    if name.lower() in sensitive:
                        del prepared_request.headers[name]
                prepared_request.headers.pop("Authorization", None)
                return
            super().rebuild_auth(prepared_request, response)

    return _Session()


def _resolve(secret) -> str:
    if secret is None:
        return ""
    return secret.resolve() if hasattr(secret, "resolve") else str(secret)


def _shown(url: str) -> str:
    """The URL without query or credentials, safe for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def _dig(body: Any, path: str | None) -> Any:
    """Follow a dotted path ('data.items', 'meta.next'); numbers index lists."""
    node = body
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            idx = int(part)
            node = node[idx] if -len(node) <= idx < len(node) else None
        else:
            return None
    return node


def _records(body: Any, records_path: str | None) -> list[Any]:
    if records_path:
        found = _dig(body, records_path)
        return found if isinstance(found, list) else ([] if found is None else [found])
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in _RECORD_KEYS:
            if isinstance(body.get(key), list):
                return body[key]
        return [body]
    return []


def _last_page(body: Any, records: list[Any], p, seen: int) -> bool:
    """True when the page says there is nothing more: a short page, or ``total_path`` records seen."""
    size = p.page_size or (100 if p.type == "offset" else None)
    if p.type in ("page", "offset") and size and len(records) < size:
        return True
    total = _dig(body, p.total_path) if p.total_path else None
    return isinstance(total, (int, float)) and seen >= total


def _to_table(records: list[Any], positions: list[str]) -> pa.Table:
    """Records -> Arrow with raw JSON and position; non-objects keep only their raw text."""
    objects = [r if isinstance(r, dict) else {} for r in records]
    table = records_to_table(objects)
    raws = pa.array([json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records], pa.string())
    table = table.append_column(POSITION_COLUMN, pa.array(positions, pa.string()))
    return table.append_column(RAW_COLUMN, raws)


def _after(table: pa.Table, column: str, since: Any) -> pa.Table:
    """Rows whose cursor is strictly greater than ``since`` (servers often filter with >=)."""
    if since is None or table.num_rows == 0:
        return table
    if column not in table.column_names:
        return table
    col = table.column(column)
    try:
        bound = pa.scalar(since).cast(col.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        col, bound = pc.cast(col, pa.string()), pa.scalar(str(since))
    return table.filter(pc.fill_null(pc.greater(col, bound), False))


def _cursor_checkpoint(table: pa.Table, column: str) -> dict[str, Any] | None:
    value = cursor_value(table, column)
    return None if value is None else {"cursor": value}
