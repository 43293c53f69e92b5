"""The HLE ``search`` and ``browse`` tools behind one backend interface, plus a per-run result cache.

Two backends implement :class:`SearchBackend`:

- :class:`LocalSearchBackend` answers offline from a local document collection through a
  SQLite FTS5 index ranked by bm25. The index is a file built once and rebuilt only when
  the collection's content hash changes, so runs over the same collection share it safely.
- :class:`HttpSearchBackend` calls a real web-search API. It speaks the JSON shape of the
  Serper ``/search`` endpoint (``POST {"q": ..., "num": ...}``, answer ``{"organic": [{"title",
  "link", "snippet"}]}``), which several search providers and proxies also accept; ``browse``
  fetches the page itself over HTTP(S) and reduces its HTML to text. It is configured by:

  ``HLE_SEARCH_URL``          the search endpoint (required; no default, so nothing is called by accident)
  ``HLE_SEARCH_API_KEY``      the API key (required); read at each call, never stored, logged or echoed
  ``HLE_SEARCH_KEY_HEADER``   the header that carries the key (default ``X-API-KEY``)
  ``HLE_SEARCH_TIMEOUT_S``    per-request timeout in seconds (default 20)

:class:`ToolResultCache` keeps tool answers for one run in an SQLite file inside that run's
directory; a cache is shared between runs only when a caller passes the same file path
explicitly, because a shared cache makes one run's tool answers depend on another's.
"""

from __future__ import annotations

import gzip
import hashlib
import html.parser
import json
import logging
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

SEARCH_RESULTS = 10
BROWSE_MAX_CHARS = 8000
SNIPPET_TOKENS = 24
INDEX_SCHEMA = 1
REDACTED = "***"
ERROR_DETAIL_CHARS = 200
TITLE_WEIGHT = 2.0  # bm25 column weight of a title match relative to a body match

ENV_URL = "HLE_SEARCH_URL"
ENV_KEY = "HLE_SEARCH_API_KEY"
ENV_KEY_HEADER = "HLE_SEARCH_KEY_HEADER"
ENV_TIMEOUT = "HLE_SEARCH_TIMEOUT_S"
DEFAULT_KEY_HEADER = "X-API-KEY"
DEFAULT_TIMEOUT_S = 20.0


class ToolError(HarnessError):
    """A search or browse call failed in a way the model should be told about, in one line."""


@dataclass(frozen=True)
class Document:
    id: str
    url: str
    title: str
    text: str


@dataclass(frozen=True)
class SearchHit:
    id: str
    url: str
    title: str
    snippet: str


@dataclass(frozen=True)
class Page:
    id: str
    url: str
    title: str
    text: str  # clipped to the browse limit
    total_chars: int

    @property
    def clipped(self) -> bool:
        return len(self.text) < self.total_chars

    def render(self) -> str:
        head = f"{self.title}\n{self.url}\n\n{self.text}"
        if self.clipped:
            head += f"\n[page clipped at {len(self.text)} of {self.total_chars} characters]"
        return head


class SearchBackend(Protocol):
    """What the search and browse tools need; ``name`` keys the cache so backends never share answers."""

    name: str

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[SearchHit]: ...

    def browse(self, url_or_id: str, max_chars: int = BROWSE_MAX_CHARS) -> Page: ...


def render_hits(hits: Sequence[SearchHit]) -> str:
    """The search tool's answer as the model reads it."""
    if not hits:
        return "No results."
    lines = []
    for rank, hit in enumerate(hits, 1):
        lines.append(f"{rank}. {hit.title}\n   id: {hit.id}  url: {hit.url}\n   {hit.snippet}")
    return "\n".join(lines)


# -- offline backend ------------------------------------------------------------------------------


def load_documents(path: Path) -> list[Document]:
    """Documents from a JSONL file (optionally gzipped), one ``{id, url, title, text}`` object a line."""
    opener = gzip.open if path.suffix == ".gz" else open
    documents = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    documents.append(Document(str(row["id"]), row["url"], row["title"], row["text"]))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"document collection {path}: line {number} is not a document ({exc})"
                    ) from None
    except OSError as exc:
        raise ConfigError(f"document collection {path}: cannot read it ({exc.strerror or exc})") from None
    return documents


def collection_sha256(documents: Iterable[Document]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(json.dumps(asdict(doc), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class LocalSearchBackend:
    """bm25 search over a fixed document collection through an on-disk SQLite FTS5 index."""

    def __init__(self, documents: Sequence[Document], index_path: Path):
        self.index_path = Path(index_path)
        self.collection_sha256 = collection_sha256(documents)
        self.name = f"local-fts5:{self.collection_sha256[:16]}"
        if self._stored_hash() != self.collection_sha256:
            _build_index(documents, self.collection_sha256, self.index_path)
        self._db = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def _stored_hash(self) -> str | None:
        if not self.index_path.exists():
            return None
        try:
            with sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True) as db:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return None  # corrupt or foreign file: rebuilt
        if meta.get("schema") != str(INDEX_SCHEMA):
            return None
        return meta.get("collection_sha256")

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[SearchHit]:
        match = fts_query(query)
        if not match:
            return []
        rows = self._db.execute(
            "SELECT pages.doc_id, pages.url, pages.title, "
            "snippet(docs, 1, '', '', ' ... ', ?) FROM docs JOIN pages ON pages.rowid = docs.rowid "
            "WHERE docs MATCH ? ORDER BY bm25(docs, ?, 1.0), pages.doc_id LIMIT ?",
            (SNIPPET_TOKENS, match, TITLE_WEIGHT, k),
        ).fetchall()
        return [SearchHit(*row) for row in rows]

    def browse(self, url_or_id: str, max_chars: int = BROWSE_MAX_CHARS) -> Page:
        key = url_or_id.strip()
        row = self._db.execute(
            "SELECT doc_id, url, title, text FROM pages WHERE doc_id = ? OR url = ? LIMIT 1", (key, key)
        ).fetchone()
        if row is None:
            raise ToolError(f"browse: no page with id or url {key!r} in the local collection")
        doc_id, url, title, text = row
        return Page(doc_id, url, title, text[:max_chars], len(text))


def fts_query(query: str) -> str:
    """A free-text query as an FTS5 OR of quoted terms: model text never reaches FTS5's query syntax."""
    terms = dict.fromkeys(re.findall(r"\w+", query.lower()))
    return " OR ".join(f'"{term}"' for term in terms)


def _build_index(documents: Sequence[Document], sha256: str, path: Path) -> None:
    """Builds into a temporary file beside ``path`` and renames it in place (atomic for concurrent readers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with sqlite3.connect(tmp) as db:
            db.executescript(
                """
                CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE pages(rowid INTEGER PRIMARY KEY, doc_id TEXT UNIQUE NOT NULL, url TEXT NOT NULL,
                                   title TEXT NOT NULL, text TEXT NOT NULL);
                CREATE INDEX pages_url ON pages(url);
                CREATE VIRTUAL TABLE docs USING fts5(title, text, content='pages', content_rowid='rowid',
                                                     tokenize='porter unicode61');
                """
            )
            try:
                db.executemany(
                    "INSERT INTO pages(doc_id, url, title, text) VALUES (?, ?, ?, ?)",
                    ((d.id, d.url, d.title, d.text) for d in documents),
                )
            except sqlite3.IntegrityError:
                raise ConfigError(f"document collection for {path}: two documents share an id") from None
            db.execute("INSERT INTO docs(rowid, title, text) SELECT rowid, title, text FROM pages")
            db.execute("INSERT INTO docs(docs) VALUES ('optimize')")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("schema", str(INDEX_SCHEMA)),
                    ("collection_sha256", sha256),
                    ("documents", str(len(documents))),
                ],
            )
        db.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built search index %s over %d documents", path, len(documents))


# -- HTTP backend ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSearchConfig:
    url: str
    key_header: str = DEFAULT_KEY_HEADER
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HttpSearchConfig:
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL, "")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"search backend: {ENV_URL} must be set to the search API's http(s) URL")
        if not env.get(ENV_KEY):
            raise ConfigError(f"search backend: environment variable {ENV_KEY} (its API key) is not set")
        try:
            timeout = float(env.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ConfigError(f"search backend: {ENV_TIMEOUT} must be a number of seconds") from None
        return cls(url=url, key_header=env.get(ENV_KEY_HEADER, DEFAULT_KEY_HEADER), timeout_s=timeout)


class HttpSearchBackend:
    """A real search API over HTTP; the key is read from the environment at each call and never kept."""

    def __init__(self, config: HttpSearchConfig):
        self.config = config
        self.name = f"http-search:{config.url}"

    def __repr__(self) -> str:
        return f"HttpSearchBackend(url={self.config.url!r})"

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[SearchHit]:
        key = os.environ.get(ENV_KEY, "")
        if not key:
            raise ConfigError(f"search backend: environment variable {ENV_KEY} (its API key) is not set")
        body = json.dumps({"q": query, "num": k}).encode()
        request = urllib.request.Request(
            self.config.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", self.config.key_header: key},
        )
        payload = self._fetch(request, "search", key)
        try:
            organic = json.loads(payload)["organic"]
            hits = [
                SearchHit(
                    id=item["link"],
                    url=item["link"],
                    title=item.get("title", ""),
                    snippet=item.get("snippet", ""),
                )
                for item in organic
            ]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ToolError("search: the search API answered without an 'organic' result list") from None
        return hits[:k]

    def browse(self, url_or_id: str, max_chars: int = BROWSE_MAX_CHARS) -> Page:
        url = url_or_id.strip()
        if not url.startswith(("http://", "https://")):
            raise ToolError(f"browse: {url!r} is not an http(s) URL")
        request = urllib.request.Request(url, headers={"User-Agent": "routing-harness-hle/1"})
        title, text = html_to_text(self._fetch(request, "browse", None).decode("utf-8", "replace"))
        return Page(url, url, title or url, text[:max_chars], len(text))

    def _fetch(self, request: urllib.request.Request, tool: str, secret: str | None) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = _redact(exc.read().decode("utf-8", "replace"), secret)
            raise ToolError(f"{tool}: HTTP {exc.code} from {_host(request)} ({detail})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolError(
                f"{tool}: cannot reach {_host(request)} ({_redact(str(reason), secret)})"
            ) from None


def _host(request: urllib.request.Request) -> str:
    return request.host or request.full_url


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    return text if len(text) <= ERROR_DETAIL_CHARS else text[: ERROR_DETAIL_CHARS - 3] + "..."


class _TextExtractor(html.parser.HTMLParser):
    _SKIPPED = {"script", "style", "noscript", "template"}
    _BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page; plain text passes through unchanged."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return " ".join("".join(parser.title).split()), "\n".join(line for line in lines if line)


# -- per-run cache --------------------------------------------------------------------------------


class ToolResultCache:
    """Tool answers keyed by (backend, tool, arguments) in one SQLite file.

    :meth:`for_run` puts the file in the run's own directory, so separate runs never see
    each other's answers; passing the same ``path`` to two runs shares it on purpose.
    """

    FILE_NAME = "tool-cache.sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_run(cls, run_dir: Path) -> ToolResultCache:
        return cls(Path(run_dir) / cls.FILE_NAME)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def key(backend: str, tool: str, arguments: dict[str, Any]) -> str:
        canonical = json.dumps([backend, tool, arguments], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get(self, backend: str, tool: str, arguments: dict[str, Any]) -> Any | None:
        row = self._db.execute(
            "SELECT value FROM results WHERE key = ?", (self.key(backend, tool, arguments),)
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, backend: str, tool: str, arguments: dict[str, Any], value: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?)",
            (self.key(backend, tool, arguments), json.dumps(value, sort_keys=True, ensure_ascii=False)),
        )


class CachedSearchBackend:
    """A :class:`SearchBackend` that answers repeated calls from a :class:`ToolResultCache`.

    Tool errors are not cached: a transient HTTP failure must not stick for the rest of the run.
    """

    def __init__(self, backend: SearchBackend, cache: ToolResultCache):
        self.backend = backend
        self.cache = cache
        self.name = backend.name

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[SearchHit]:
        args = {"query": query, "k": k}
        cached = self.cache.get(self.name, "search", args)
        if cached is not None:
            return [SearchHit(**hit) for hit in cached]
        hits = self.backend.search(query, k)
        self.cache.put(self.name, "search", args, [asdict(hit) for hit in hits])
        return hits

    def browse(self, url_or_id: str, max_chars: int = BROWSE_MAX_CHARS) -> Page:
        args = {"url_or_id": url_or_id, "max_chars": max_chars}
        cached = self.cache.get(self.name, "browse", args)
        if cached is not None:
            return Page(**cached)
        page = self.backend.browse(url_or_id, max_chars)
        self.cache.put(self.name, "browse", args, asdict(page))
        return page
