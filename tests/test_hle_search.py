"""search/browse: the SQLite FTS5 backend, the HTTP backend against a real local server, the per-run cache."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.hle.search import (
    ENV_KEY,
    ENV_URL,
    CachedSearchBackend,
    Document,
    HttpSearchBackend,
    HttpSearchConfig,
    LocalSearchBackend,
    Page,
    SearchHit,
    ToolError,
    ToolResultCache,
    fts_query,
    html_to_text,
    load_documents,
    render_hits,
)
from harness.errors import ConfigError

DOCS = [
    Document(
        "d-zorbium", "https://docs.invalid/zorbium", "Zorbium", "Zorbium is a metal first smelted in Qelvar."
    ),
    Document(
        "d-qelvar",
        "https://docs.invalid/qelvar",
        "Qelvar",
        "Qelvar is a river town famous for smelting zorbium ore.",
    ),
    Document(
        "d-tea", "https://docs.invalid/tea", "Tea", "Tea is brewed from leaves; nothing about metals here."
    ),
] + [
    Document(
        f"d-filler-{i:02d}",
        f"https://docs.invalid/filler/{i}",
        f"Filler {i}",
        f"Filler page {i} mentions smelting once.",
    )
    for i in range(15)
]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalSearchBackend]:
    backend = LocalSearchBackend(DOCS, tmp_path / "index.sqlite")
    yield backend
    backend.close()


def test_search_ranks_by_bm25_and_returns_at_most_ten(local: LocalSearchBackend) -> None:
    hits = local.search("zorbium")
    assert [h.id for h in hits] == ["d-zorbium", "d-qelvar"]  # the title match outranks the body-only match
    assert hits[0] == SearchHit("d-zorbium", "https://docs.invalid/zorbium", "Zorbium", hits[0].snippet)
    assert "Zorbium is a metal" in hits[0].snippet
    many = local.search("smelting")
    assert len(many) == 10
    assert {h.id for h in many} <= {d.id for d in DOCS}
    assert len(local.search("smelts")) == 10  # porter stemming: no page has the word "smelts"


def test_model_text_never_reaches_fts5_syntax(local: LocalSearchBackend) -> None:
    assert fts_query('zorbium" OR NEAR(x  -tea*') == '"zorbium" OR "or" OR "near" OR "x" OR "tea"'
    assert local.search('"unbalanced AND (qelvar -')[0].id == "d-qelvar"
    assert local.search("  ?!  ") == []


def test_index_is_built_once_and_rebuilt_when_the_collection_changes(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    LocalSearchBackend(DOCS, path).close()
    built = path.stat().st_ino, path.stat().st_mtime_ns
    again = LocalSearchBackend(DOCS, path)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == built
    assert again.search("plumbago") == []
    again.close()
    changed = LocalSearchBackend(
        [*DOCS, Document("d-new", "https://docs.invalid/new", "Plumbago", "A new page.")], path
    )
    assert path.stat().st_ino != built[0]
    assert [h.id for h in changed.search("plumbago")] == ["d-new"]
    assert changed.collection_sha256 != again.collection_sha256 and changed.name != again.name
    changed.close()
    assert list(tmp_path.iterdir()) == [path]  # no temporary build file left behind


def test_corrupt_index_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    backend = LocalSearchBackend(DOCS, path)
    assert backend.search("tea")[0].id == "d-tea"
    backend.close()


def test_duplicate_document_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two documents share an id"):
        LocalSearchBackend([DOCS[0], DOCS[0]], tmp_path / "index.sqlite")


def test_browse_by_id_or_url_clips_at_the_stated_limit(local: LocalSearchBackend) -> None:
    page = local.browse("d-qelvar")
    assert page == local.browse("https://docs.invalid/qelvar")
    assert page.text == DOCS[1].text and not page.clipped
    clipped = local.browse("d-qelvar", max_chars=10)
    assert clipped.text == DOCS[1].text[:10] and clipped.clipped
    assert clipped.render().endswith(f"[page clipped at 10 of {len(DOCS[1].text)} characters]")
    with pytest.raises(ToolError, match="no page with id or url 'd-missing'"):
        local.browse("d-missing")


def test_render_hits_numbers_results() -> None:
    assert render_hits([]) == "No results."
    text = render_hits([SearchHit("a", "u", "T", "s")])
    assert text == "1. T\n   id: a  url: u\n   s"


def test_documents_load_from_gzipped_jsonl_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for doc in DOCS[:2]:
            handle.write(json.dumps(doc.__dict__) + "\n")
    assert load_documents(path) == DOCS[:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(DOCS[0].__dict__) + '\n{"id": 1}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl: line 2 is not a document"):
        load_documents(bad)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_documents(tmp_path / "missing.jsonl")


# -- HTTP backend against a real local server ---------------------------------------------------

KEY = "search-key-5f1e9c"
PAGE_HTML = (
    "<html><head><title>Zorbium facts</title><style>p{color:red}</style></head>"
    "<body><script>var secret=1;</script><h1>Zorbium</h1><p>Melts at 1234 K.</p><p>Found in Qelvar.</p></body></html>"
)


class SearchApiServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if self.headers.get("X-API-KEY") != KEY or outer.status != 200:
                    # Like some real APIs, the error echoes the key it was sent.
                    self._send(
                        outer.status if outer.status != 200 else 401,
                        {"message": f"bad key {self.headers.get('X-API-KEY')}"},
                    )
                    return
                organic = [
                    {
                        "title": f"Result {i} for {body['q']}",
                        "link": f"http://127.0.0.1/r{i}",
                        "snippet": f"snippet {i}",
                    }
                    for i in range(15)
                ]
                self._send(200, {"organic": organic})

            def do_GET(self) -> None:
                outer.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                data = PAGE_HTML.encode()
                self.send_response(200 if self.path == "/page" else 404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture
def api() -> Iterator[SearchApiServer]:
    server = SearchApiServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def http_backend(api: SearchApiServer, monkeypatch: pytest.MonkeyPatch) -> HttpSearchBackend:
    monkeypatch.setenv(ENV_URL, api.base + "/search")
    monkeypatch.setenv(ENV_KEY, KEY)
    return HttpSearchBackend(HttpSearchConfig.from_env())


def test_http_config_comes_from_the_environment() -> None:
    with pytest.raises(ConfigError, match=f"{ENV_URL} must be set"):
        HttpSearchConfig.from_env({})
    with pytest.raises(ConfigError, match=f"{ENV_KEY} .* is not set"):
        HttpSearchConfig.from_env({ENV_URL: "http://127.0.0.1:1/search"})
    config = HttpSearchConfig.from_env(
        {
            ENV_URL: "http://127.0.0.1:1/s",
            ENV_KEY: "k",
            "HLE_SEARCH_KEY_HEADER": "Authorization",
            "HLE_SEARCH_TIMEOUT_S": "3",
        }
    )
    assert config == HttpSearchConfig("http://127.0.0.1:1/s", "Authorization", 3.0)
    with pytest.raises(ConfigError, match="HLE_SEARCH_TIMEOUT_S must be a number"):
        HttpSearchConfig.from_env({ENV_URL: "http://x/s", ENV_KEY: "k", "HLE_SEARCH_TIMEOUT_S": "soon"})


def test_http_search_sends_query_and_key_and_returns_ten(
    api: SearchApiServer, http_backend: HttpSearchBackend
) -> None:
    hits = http_backend.search("zorbium melting point")
    assert len(hits) == 10
    assert hits[0] == SearchHit(
        "http://127.0.0.1/r0", "http://127.0.0.1/r0", "Result 0 for zorbium melting point", "snippet 0"
    )
    [request] = api.requests
    assert request["path"] == "/search"
    assert request["body"] == {"q": "zorbium melting point", "num": 10}
    assert request["headers"]["x-api-key"] == KEY
    assert KEY not in repr(http_backend)


def test_http_error_never_shows_the_key(
    api: SearchApiServer, http_backend: HttpSearchBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.status = 403
    with pytest.raises(ToolError) as err:
        http_backend.search("anything")
    assert "HTTP 403" in str(err.value) and "bad key ***" in str(err.value)
    assert KEY not in str(err.value) and KEY not in caplog.text


def test_http_unreachable_api_is_a_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(ENV_KEY, KEY)
    backend = HttpSearchBackend(HttpSearchConfig(f"http://127.0.0.1:{port}/search", timeout_s=2))
    with pytest.raises(ToolError, match="search: cannot reach 127.0.0.1"):
        backend.search("x")


def test_http_browse_reduces_html_to_text(api: SearchApiServer, http_backend: HttpSearchBackend) -> None:
    page = http_backend.browse(api.base + "/page")
    assert page.title == "Zorbium facts"
    assert page.text == "Zorbium\nMelts at 1234 K.\nFound in Qelvar."
    assert "secret" not in page.text and "color" not in page.text
    assert http_backend.browse(api.base + "/page", max_chars=7).text == "Zorbium"
    with pytest.raises(ToolError, match="HTTP 404"):
        http_backend.browse(api.base + "/missing")
    with pytest.raises(ToolError, match="not an http"):
        http_backend.browse("file:///etc/passwd")


def test_html_to_text_passes_plain_text() -> None:
    assert html_to_text("just words\n\n  here ") == ("", "just words\nhere")


# -- cache ---------------------------------------------------------------------------------------


class Counting:
    """A real local backend that counts the calls that reach it."""

    def __init__(self, inner: LocalSearchBackend):
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        self.calls += 1
        return self.inner.search(query, k)

    def browse(self, url_or_id: str, max_chars: int = 8000) -> Page:
        self.calls += 1
        return self.inner.browse(url_or_id, max_chars)


def test_cache_answers_repeats_within_a_run(local: LocalSearchBackend, tmp_path: Path) -> None:
    counting = Counting(local)
    cache = ToolResultCache.for_run(tmp_path / "run-a")
    cached = CachedSearchBackend(counting, cache)
    first = cached.search("zorbium")
    assert cached.search("zorbium") == first
    assert cached.browse("d-tea") == cached.browse("d-tea") == local.browse("d-tea")
    assert counting.calls == 2 and cache.hits == 2
    assert cached.search("zorbium", k=1) == first[:1]  # different arguments are a different entry
    assert counting.calls == 3
    assert (tmp_path / "run-a" / ToolResultCache.FILE_NAME).exists()


def test_cache_is_not_shared_across_runs_unless_a_path_is_passed(
    local: LocalSearchBackend, tmp_path: Path
) -> None:
    counting = Counting(local)
    CachedSearchBackend(counting, ToolResultCache.for_run(tmp_path / "run-a")).search("qelvar")
    CachedSearchBackend(counting, ToolResultCache.for_run(tmp_path / "run-b")).search("qelvar")
    assert counting.calls == 2
    shared = tmp_path / "shared.sqlite"
    CachedSearchBackend(counting, ToolResultCache(shared)).search("qelvar")
    CachedSearchBackend(counting, ToolResultCache(shared)).search("qelvar")
    assert counting.calls == 3


def test_cache_does_not_keep_errors(local: LocalSearchBackend, tmp_path: Path) -> None:
    counting = Counting(local)
    cached = CachedSearchBackend(counting, ToolResultCache.for_run(tmp_path))
    for _ in range(2):
        with pytest.raises(ToolError):
            cached.browse("d-missing")
    assert counting.calls == 2
