"""REST connector against real local HTTP servers: pagination, retries, rate limits, auth."""
from __future__ import annotations

import email.utils
import json
import time

import pyarrow as pa
import pytest

from eai_ray.config import RestSource
from eai_ray.errors import AuthenticationFailed, RateLimited, SourceError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import POSITION_COLUMN, RAW_COLUMN, merge_checkpoints
from eai_ray.ingestion.rest import RestConnector, TokenBucket
from eai_ray.retry import parse_retry_after as _retry_after
from tests.integration.cases_files_rest import LocalServer, Request, Response

ITEMS = [{"id": i, "v": f"item {i}"} for i in range(1, 24)]  # 23 items: pages of 10 end short


@pytest.fixture
def serve():
    servers = []

    def start(app):
        s = LocalServer(app)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def rest(url, resource=None, *, clock=None, sleep=None, **source) -> RestConnector:
    """A connector of one resource; `clock` and `sleep` (fakes) drive its waits instead of real time."""
    res = {"name": "items", "path": "/items", **(resource or {})}
    timing = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
    return RestConnector(RestSource.model_validate({"kind": "rest", "name": "api", "base_url": url,
                                                    "resources": [res], **source}), backoff_base=0.01, **timing)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def read(conn, checkpoint=None, batch_rows=1000):
    batches = list(conn.read("items", checkpoint=checkpoint, batch_rows=batch_rows))
    tables = [b.table for b in batches if b.table.num_rows]
    cp = checkpoint
    for b in batches:
        cp = merge_checkpoints(cp, b.checkpoint)
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return table, cp


def ids(table):
    return table.column("id").to_pylist() if table.num_rows else []


# --------------------------------------------------------------------------- pagination
def test_page_pagination_with_records_path(serve):
    def app(req: Request) -> Response:
        page, size = int(req.query["p"]), int(req.query["n"])
        return Response(body={"result": {"items": ITEMS[(page - 1) * size: page * size]}})

    server = serve(app)
    conn = rest(server.url, {"records_path": "result.items",
                             "pagination": {"type": "page", "page_param": "p", "size_param": "n", "page_size": 10}})
    t, _ = read(conn)
    assert ids(t) == list(range(1, 24))
    assert [r.query["p"] for r in server.requests] == ["1", "2", "3"]  # the short third page ends it
    assert t.column(POSITION_COLUMN).to_pylist()[::10] == ["page 1", "page 2", "page 3"]
    assert json.loads(t.column(RAW_COLUMN)[0].as_py()) == ITEMS[0]


def test_offset_pagination_with_total(serve):
    def app(req: Request) -> Response:
        off, lim = int(req.query["offset"]), int(req.query["limit"])
        return Response(body={"data": ITEMS[off: off + lim], "total": 20})

    server = serve(app)
    conn = rest(server.url, {"pagination": {"type": "offset", "page_size": 10, "total_path": "total"}})
    assert ids(read(conn)[0]) == list(range(1, 21))
    assert [r.query["offset"] for r in server.requests] == ["0", "10"]  # total reached: no third call


def test_cursor_pagination(serve):
    def app(req: Request) -> Response:
        start = int(req.query.get("after", 0))
        page = ITEMS[start: start + 10]
        nxt = str(start + 10) if start + 10 < len(ITEMS) else None
        return Response(body={"items": page, "meta": {"next": nxt}})

    server = serve(app)
    conn = rest(server.url, {"records_path": "items",
                             "pagination": {"type": "cursor", "cursor_param": "after", "cursor_path": "meta.next"}})
    t, _ = read(conn)
    assert ids(t) == list(range(1, 24))
    assert [r.query.get("after") for r in server.requests] == [None, "10", "20"]
    assert sorted(set(t.column(POSITION_COLUMN).to_pylist())) == ["cursor=10", "cursor=20", "page 1"]


def test_link_header_pagination(serve):
    def app(req: Request) -> Response:
        page = int(req.query.get("page", 1))
        headers = {"Link": f'</items?page={page + 1}&x=1>; rel="next", </items?page=1>; rel="first"'} \
            if page < 3 else {}
        return Response(body=ITEMS[(page - 1) * 10: page * 10], headers=headers)

    server = serve(app)
    conn = rest(server.url, {"params": {"x": 1}, "pagination": {"type": "link"}})
    assert ids(read(conn)[0]) == list(range(1, 24))
    assert [r.query for r in server.requests] == [{"x": "1"}, {"page": "2", "x": "1"}, {"page": "3", "x": "1"}]


def test_no_pagination_and_max_pages(serve):
    server = serve(lambda req: Response(body=ITEMS[:5]))
    assert ids(read(rest(server.url))[0]) == [1, 2, 3, 4, 5]
    assert len(server.requests) == 1
    endless = serve(lambda req: Response(body={"data": ITEMS[:2]}))
    conn = rest(endless.url, {"pagination": {"type": "page", "max_pages": 3}})
    assert len(ids(read(conn)[0])) == 6
    assert len(endless.requests) == 3


def test_repeated_cursor_stops_instead_of_looping(serve):
    server = serve(lambda req: Response(body={"data": ITEMS[:2], "next": "same"}))
    conn = rest(server.url, {"pagination": {"type": "cursor", "cursor_path": "next"}})
    assert len(ids(read(conn)[0])) == 4
    assert len(server.requests) == 2


# --------------------------------------------------------------------------- retries
def test_429_retry_after_is_honoured(serve):
    def app(req: Request) -> Response:
        if len(server.requests) == 1:
            return Response(429, {"error": "slow down"}, {"Retry-After": "1"})
        return Response(body=ITEMS[:3])

    server = serve(app)
    t = FakeTime()
    assert ids(read(rest(server.url, clock=t.clock, sleep=t.sleep))[0]) == [1, 2, 3]
    assert t.slept == [1.0] and len(server.requests) == 2  # waited the Retry-After once, then asked again


def test_retry_after_http_date():
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= _retry_after(soon) <= 30
    assert _retry_after("2") == 2.0
    assert _retry_after("garbage") is None
    assert _retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0


def test_429_forever_raises_rate_limited(serve):
    server = serve(lambda req: Response(429, {}, {"Retry-After": "0"}))
    with pytest.raises(RateLimited) as info:
        read(rest(server.url, max_retries=2))
    assert info.value.transient and info.value.context["retry_after"] == 0.0
    assert len(server.requests) == 3


def test_long_retry_after_fails_fast(serve):
    server = serve(lambda req: Response(429, {}, {"Retry-After": "3600"}))
    t = FakeTime()
    with pytest.raises(RateLimited):
        read(rest(server.url, clock=t.clock, sleep=t.sleep))
    assert t.slept == [] and len(server.requests) == 1  # no wait at all, no second request


def test_5xx_then_success(serve):
    def app(req: Request) -> Response:
        if len(server.requests) <= 2:
            return Response(503, {"error": "busy"})
        return Response(body=ITEMS[:2])

    server = serve(app)
    assert ids(read(rest(server.url, max_retries=3))[0]) == [1, 2]
    assert len(server.requests) == 3


def test_5xx_forever_raises_source_unavailable(serve):
    server = serve(lambda req: Response(500, {"error": "boom"}))
    with pytest.raises(SourceUnavailable, match="answered 500 after 3 attempts") as info:
        read(rest(server.url, max_retries=2))
    assert info.value.transient and info.value.context["status"] == 500


def test_timeouts_are_retried_then_source_unavailable(serve):
    def app(req: Request) -> Response:
        time.sleep(1.0)
        return Response(body=[])

    server = serve(app)
    t = FakeTime()
    with pytest.raises(SourceUnavailable, match="did not answer after 3 attempts") as info:
        rest(server.url, clock=t.clock, sleep=t.sleep, timeout=0.2, max_retries=2).check()
    assert info.value.transient
    assert len(server.requests) == 3 and len(t.slept) == 2  # a backoff between attempts, none after the last


def test_backoff_is_exponential_with_jitter():
    slept = []
    conn = RestConnector(RestSource.model_validate({
        "kind": "rest", "name": "api", "base_url": "http://127.0.0.1:9", "max_retries": 3,
        "resources": [{"name": "items", "path": "/items"}]}), sleep=slept.append, backoff_base=0.5)
    with pytest.raises(SourceUnavailable, match="did not answer after 4 attempts"):
        conn.check()
    assert len(slept) == 3  # wait n is drawn from [h/2, h], h = 0.5 * 2**(n-1) (the `http` policy)
    for n, wait in enumerate(slept, 1):
        assert 0.25 * 2 ** (n - 1) <= wait <= 0.5 * 2 ** (n - 1)


def test_503_retry_after_is_honoured_and_capped(serve):
    server = serve(lambda req: Response(503, {"error": "busy"}, {"Retry-After": "7"}))
    slept = []
    conn = RestConnector(RestSource.model_validate({"kind": "rest", "name": "api", "base_url": server.url,
                                                    "max_retries": 2, "resources": [{"name": "items",
                                                                                     "path": "/items"}]}),
                         sleep=slept.append)
    with pytest.raises(SourceUnavailable, match="answered 503 after 3 attempts") as info:
        conn.check()
    assert slept == [7.0, 7.0] and info.value.context["retry_after"] == 7.0
    slept.clear()
    capped = RestConnector(conn.source, sleep=slept.append, max_retry_after=5)
    with pytest.raises(SourceUnavailable, match="answered 503 after 1 attempt"):
        capped.check()  # a Retry-After beyond the cap fails fast instead of waiting
    assert slept == [] and len(server.requests) == 4


# --------------------------------------------------------------------------- rate limit
def test_client_side_rate_limit_spaces_requests(serve):
    server = serve(lambda req: Response(body={"data": ITEMS[:1]}))
    t = FakeTime()  # the HTTP round trips take no time on it: every gap is the bucket's wait
    conn = rest(server.url, {"pagination": {"type": "page", "max_pages": 6}}, clock=t.clock, sleep=t.sleep,
                rate_limit=10)
    read(conn)
    assert len(server.requests) == 6
    assert t.slept == pytest.approx([0.1] * 5)  # 10 per second: 5 gaps of 0.1 s


def test_token_bucket_with_a_fake_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.acquire()
    assert slept == pytest.approx([0.25] * 4)
    now[0] += 10  # an idle spell refills only up to capacity: no burst afterwards
    bucket.acquire()
    bucket.acquire()
    assert slept[-1] == pytest.approx(0.25)


# --------------------------------------------------------------------------- auth and errors
@pytest.mark.parametrize("auth, expected", [
    ({"type": "bearer", "token": "${EAI_T_SECRET}"}, ("authorization", "Bearer s3cr3t-value")),
    ({"type": "header", "token": "${EAI_T_SECRET}", "header_name": "X-Key"}, ("x-key", "s3cr3t-value")),
    ({"type": "basic", "username": "bob", "password": "${EAI_T_SECRET}"},
     ("authorization", "Basic Ym9iOnMzY3IzdC12YWx1ZQ==")),
])
def test_auth_styles(serve, monkeypatch, auth, expected):
    monkeypatch.setenv("EAI_T_SECRET", "s3cr3t-value")
    header, value = expected

    def app(req: Request) -> Response:
        if req.headers.get(header) != value:
            return Response(401, {"error": "no"})
        return Response(body=ITEMS[:1])

    server = serve(app)
    assert ids(read(rest(server.url, auth=auth))[0]) == [1]
    monkeypatch.setenv("EAI_T_SECRET", "wrong-secret-value")
    with pytest.raises(AuthenticationFailed) as info:
        rest(server.url, auth=auth).check()
    assert "wrong-secret-value" not in str(info.value) + str(info.value.to_dict())
    assert not info.value.transient


def test_403_404_and_other_4xx(serve):
    def app(req: Request) -> Response:
        return {"/forbidden": Response(403, {}), "/items": Response(400, {"e": "bad"})}.get(req.path, Response(404, {}))

    server = serve(app)
    with pytest.raises(AuthenticationFailed):
        rest(server.url, {"path": "/forbidden"}).check()
    with pytest.raises(SourceNotFound, match="answered 404"):
        rest(server.url, {"path": "/missing"}).check()
    with pytest.raises(SourceError, match="answered 400"):
        rest(server.url).check()


def test_non_json_answer(serve):
    server = serve(lambda req: Response(body=b"<html>hi</html>"))
    with pytest.raises(SourceError, match="did not answer JSON"):
        rest(server.url).check()


# --------------------------------------------------------------------------- records and incremental
def test_nested_records_and_type_conflicts(serve):
    records = [{"id": 1, "who": {"name": "a", "tags": ["x"]}, "v": 1},
               {"id": 2, "who": {"name": "b", "tags": []}, "v": "two"}]
    server = serve(lambda req: Response(body=records))
    t, _ = read(rest(server.url))
    assert pa.types.is_struct(t.schema.field("who").type)
    assert t.column("v").to_pylist() == ["1", '"two"']
    schema = rest(server.url).discover("items")
    assert [c.name for c in schema.columns] == ["id", "who", "v"]


def test_incremental_without_param_filters_client_side(serve):
    rows = [{"id": i, "updated": f"2024-01-{i:02d}"} for i in range(1, 11)]
    server = serve(lambda req: Response(body=rows))
    conn = rest(server.url, {"incremental": {"cursor": "updated"}})
    t, cp = read(conn)
    assert ids(t) == list(range(1, 11)) and cp == {"cursor": "2024-01-10"}
    assert read(conn, cp)[0].num_rows == 0
    rows.append({"id": 11, "updated": "2024-01-11"})
    t, cp = read(conn, cp)
    assert ids(t) == [11] and cp == {"cursor": "2024-01-11"}
    assert all("since" not in r.query for r in server.requests)


def test_incremental_param_and_initial_value(serve):
    server = serve(lambda req: Response(body=[{"id": 5, "seq": 5}, {"id": 6, "seq": 6}]))
    conn = rest(server.url, {"incremental": {"cursor": "seq", "param": "since", "initial": 5}})
    t, cp = read(conn)
    assert ids(t) == [6] and cp == {"cursor": 6}  # the server sent seq >= 5; we keep > 5
    assert server.requests[0].query["since"] == "5"
    read(conn, cp)
    assert server.requests[-1].query["since"] == "6"


def test_only_the_last_batch_carries_the_checkpoint(serve):
    def app(req: Request) -> Response:
        page = int(req.query["page"])
        return Response(body=[{"id": i, "seq": i} for i in range(page * 10 - 9, page * 10 + 1)] if page <= 3 else [])

    server = serve(app)
    conn = rest(server.url, {"pagination": {"type": "page"}, "incremental": {"cursor": "seq"}})
    batches = list(conn.read("items", batch_rows=10))
    assert [b.table.num_rows for b in batches] == [10, 10, 10]
    assert [b.checkpoint for b in batches] == [None, None, {"cursor": 30}]


# --------------------------------------------------------------------------- credentials stay with their origin
def _two_origins(serve, *, redirect: bool = False):
    """`home` sends page 2 to `other` (another port: another origin) by Link header or by redirect."""
    def other_app(req: Request) -> Response:
        return Response(body=ITEMS[10:20])

    other = serve(other_app)

    def home_app(req: Request) -> Response:
        if redirect:
            return Response(status=302, headers={"Location": f"{other.url}/items"}, body={})
        return Response(body=ITEMS[:10], headers={"Link": f'<{other.url}/items?page=2>; rel="next"'})

    return serve(home_app), other


def test_link_to_another_origin_stops_without_sending_credentials(serve, monkeypatch):
    monkeypatch.setenv("EAI_TEST_REST_TOKEN", "tok-secret")
    home, other = _two_origins(serve)
    conn = rest(home.url, {"pagination": {"type": "link"}}, auth={"type": "bearer", "token": "${EAI_TEST_REST_TOKEN}"},
                headers={"X-Tenant": "acme"})
    with pytest.raises(SourceError, match="another origin") as err:
        read(conn)
    assert "follow_foreign_links" in str(err.value) and "tok-secret" not in str(err.value)
    assert other.requests == []
    assert home.requests[0].headers["authorization"] == "Bearer tok-secret"


def test_foreign_link_followed_without_credentials_when_allowed(serve, monkeypatch):
    monkeypatch.setenv("EAI_TEST_REST_TOKEN", "tok-secret")
    home, other = _two_origins(serve)
    conn = rest(home.url, {"pagination": {"type": "link"}}, follow_foreign_links=True,
                auth={"type": "header", "header_name": "X-Api-Key", "token": "${EAI_TEST_REST_TOKEN}"},
                headers={"X-Tenant": "acme"})
    assert ids(read(conn)[0]) == list(range(1, 21))
    sent = other.requests[0].headers
    assert "x-api-key" not in sent and "x-tenant" not in sent and "authorization" not in sent
    assert home.requests[0].headers["x-api-key"] == "tok-secret"


def test_redirect_to_another_origin_drops_custom_credential_headers(serve, monkeypatch):
    monkeypatch.setenv("EAI_TEST_REST_TOKEN", "tok-secret")
    home, other = _two_origins(serve, redirect=True)
    conn = rest(home.url, auth={"type": "header", "header_name": "X-Api-Key", "token": "${EAI_TEST_REST_TOKEN}"})
    assert ids(read(conn)[0]) == list(range(11, 21))
    assert "x-api-key" not in other.requests[0].headers
