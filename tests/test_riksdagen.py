"""The Riksdag client against a real local HTTP server that serves constructed fixtures in the API's shapes.

No test touches the network: the server listens on 127.0.0.1 and answers from tests/fixtures/riksdagen/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.config import IngestConfig, RiksdagenQuery
from pipeline.ingest import ingest
from pipeline.io.documents import read_documents
from pipeline.io.rejects import Reject
from pipeline.io.riksdagen import RiksdagenClient, RiksdagenError, riksdagen_documents
from pipeline.schema import Document
from pipeline.segment import clean_text, describe_answer

FIXTURES = Path(__file__).parent / "fixtures" / "riksdagen"


@dataclass
class FixtureServer:
    """What the fake API saw, and the failures it should serve before answering properly."""

    base_url: str = ""
    requests: list[str] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)

    def fixture_for(self, path: str, query: dict[str, list[str]]) -> Path | None:
        if path.rstrip("/") == "/dokumentlista":
            doc_type, page = query.get("doktyp", ["frs"])[0], query.get("p", ["1"])[0]
            return FIXTURES / f"dokumentlista_{doc_type}_p{page}.json"
        if path.startswith("/dokumentstatus/"):
            return FIXTURES / f"dokumentstatus_{path.rsplit('/', 1)[1]}"
        if path.startswith("/dokument/"):
            return FIXTURES / path.rsplit("/", 1)[1]
        return None


@pytest.fixture
def api() -> Iterator[FixtureServer]:
    state = FixtureServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            state.requests.append(self.path)
            queued = state.failures.get(parts.path)
            if queued:
                status, headers = queued.pop(0)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                return
            fixture = state.fixture_for(parts.path, parse_qs(parts.query))
            if fixture is None or not fixture.is_file():
                self.send_error(404, "Not Found")
                return
            body = fixture.read_bytes()
            self.send_response(200)
            kind = "application/json" if fixture.suffix == ".json" else "text/html"
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _query(api: FixtureServer, tmp_path: Path, **overrides: object) -> RiksdagenQuery:
    settings: dict[str, object] = {
        "search": "terrorism",
        "doc_types": ["frs"],
        "session": "2020/21",
        "date_from": "2021-01-01",
        "date_to": "2021-06-30",
        "base_url": api.base_url,
        "cache_dir": tmp_path / "cache",
        "requests_per_second": 1000.0,
        "max_retries": 2,
        "backoff_s": 0.01,
    }
    settings.update(overrides)
    return RiksdagenQuery.model_validate(settings)


def test_lists_follows_next_page_and_sends_the_query(api: FixtureServer, tmp_path: Path) -> None:
    query = _query(api, tmp_path)
    entries = list(RiksdagenClient.from_query(query).list_documents(query))
    assert [e["dok_id"] for e in entries] == ["H8129999", "H8129998", "H8129997"]
    first = parse_qs(urlsplit(api.requests[0]).query)
    assert first["sok"] == ["terrorism"] and first["doktyp"] == ["frs"] and first["rm"] == ["2020/21"]
    assert first["from"] == ["2021-01-01"] and first["tom"] == ["2021-06-30"] and first["utformat"] == ["json"]
    assert parse_qs(urlsplit(api.requests[1]).query)["p"] == ["2"]  # the http: next-page link, on our server


def test_list_stops_at_max_documents(api: FixtureServer, tmp_path: Path) -> None:
    query = _query(api, tmp_path, max_documents=1)
    assert [e["dok_id"] for e in RiksdagenClient.from_query(query).list_documents(query)] == ["H8129999"]
    assert len(api.requests) == 1


def test_documents_with_metadata_and_a_reject_for_the_missing_one(api: FixtureServer, tmp_path: Path) -> None:
    items = list(riksdagen_documents(_query(api, tmp_path)))
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [d.id for d in docs] == ["riksdagen:H8129999", "riksdagen:H8129998"]
    first = docs[0]
    assert first.title == "Exempelfrågan om stöd till anhöriga" and first.date == "2021-05-26"
    assert first.metadata["asker"] == "Karin Påhittad" and first.metadata["party"] == "M"
    assert first.metadata["minister"] == "Per Exempel" and first.metadata["rm"] == "2020/21"
    assert first.metadata["questions"] == [
        {"id": "2020/21:9999", "title": "Stöd till anhöriga"},
        {"id": "2020/21:9996", "title": "Fler åtgärder"},
    ]
    assert first.metadata["attribution"] == "Källa: Sveriges riksdag"
    assert "10 miljoner kronor per år." in clean_text(first.text)
    answer = describe_answer(clean_text(first.text))
    assert answer is not None and [q.id for q in answer.questions] == ["2020/21:9999", "2020/21:9996"]
    assert answer.date == "2021-05-26" and answer.minister == "Per Exempel"
    # single objects instead of lists, HTML fetched from /dokument/<id>.html
    second = docs[1]
    assert second.metadata["asker"] == "Olle Fiktiv" and second.metadata["minister"] is None
    assert second.metadata["questions"] == [{"id": "2020/21:9998", "title": "Tryggheten i skolan"}]
    assert "Skolorna får mer stöd." in second.text
    assert "/dokument/H8129998.html" in api.requests
    [reject] = rejects
    assert reject.id == "riksdagen:H8129997" and "HTTP 404" in reject.reason
    assert "/dokumentstatus/H8129997.json" in reject.reason


def test_interpellation_answer_is_the_ministers_first_speech(api: FixtureServer, tmp_path: Path) -> None:
    query = _query(api, tmp_path, doc_types=["ip"])
    [doc] = list(riksdagen_documents(query))
    assert isinstance(doc, Document) and doc.metadata["doktyp"] == "ip"
    text = clean_text(doc.text)
    assert text.startswith("Herr talman! Sara Exempelsson har frågat mig") and "5 miljoner kronor" in text
    assert "tackar för svaret" not in text and "Vi återkommer" not in text
    assert doc.metadata["minister"] == "Per Exempel" and doc.metadata["asker"] == "Sara Exempelsson"


def test_cache_serves_the_second_run_without_requests(api: FixtureServer, tmp_path: Path) -> None:
    query = _query(api, tmp_path)
    first = list(riksdagen_documents(query))
    seen = len(api.requests)
    client = RiksdagenClient.from_query(query)
    again = [client.fetch_answer(e["dok_id"]) for e in client.list_documents(query) if e["dok_id"] != "H8129997"]
    assert len(api.requests) == seen and client.network_requests == 0
    assert again == [d for d in first if isinstance(d, Document)]
    assert list((tmp_path / "cache").rglob("*.body"))  # failures (the 404) are not cached:
    with pytest.raises(RiksdagenError, match="404"):
        client.fetch_answer("H8129997")
    assert len(api.requests) == seen + 1


def test_listings_expire_while_document_texts_stay_cached(api: FixtureServer, tmp_path: Path) -> None:
    import os
    import time

    query = _query(api, tmp_path, listing_ttl_s=60)
    first = list(riksdagen_documents(query))
    listings = [r for r in api.requests if r.startswith("/dokumentlista/")]
    documents = [r for r in api.requests if not r.startswith("/dokumentlista/")]
    old = time.time() - 3600  # every cached body an hour old: past the listing TTL
    for body in (tmp_path / "cache").rglob("*.body"):
        os.utime(body, (old, old))
    api.requests.clear()
    again = list(riksdagen_documents(query))
    assert again == first
    assert sorted(r for r in api.requests if r.startswith("/dokumentlista/")) == sorted(listings)  # refetched
    # only the document that was never cached (its 404 is not stored) is asked for again
    assert [r for r in api.requests if not r.startswith("/dokumentlista/")] == [r for r in documents if "H8129997" in r]


def test_retries_a_503_with_backoff_then_succeeds(api: FixtureServer, tmp_path: Path) -> None:
    api.failures["/dokumentstatus/H8129999.json"] = [(503, {}), (503, {"Retry-After": "0"})]
    client = RiksdagenClient.from_query(_query(api, tmp_path))
    doc = client.fetch_answer("H8129999")
    assert doc.metadata["asker"] == "Karin Påhittad"
    assert api.requests.count("/dokumentstatus/H8129999.json") == 3


def test_gives_up_after_max_retries_with_a_clear_error(api: FixtureServer, tmp_path: Path) -> None:
    api.failures["/dokumentstatus/H8129999.json"] = [(503, {})] * 5
    client = RiksdagenClient.from_query(_query(api, tmp_path, max_retries=2))
    with pytest.raises(RiksdagenError, match=r"dokumentstatus/H8129999\.json: failed after 3 attempts.*HTTP 503"):
        client.fetch_answer("H8129999")
    assert api.requests.count("/dokumentstatus/H8129999.json") == 3


def test_404_is_not_retried_and_names_the_url(api: FixtureServer, tmp_path: Path) -> None:
    client = RiksdagenClient.from_query(_query(api, tmp_path))
    with pytest.raises(RiksdagenError, match=r"GET http://127\.0\.0\.1:\d+/dokumentstatus/NOPE\.json: HTTP 404"):
        client.fetch_status("NOPE")
    assert len(api.requests) == 1


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    client = RiksdagenClient("http://127.0.0.1:9", tmp_path, max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(RiksdagenError, match="failed after 2 attempts; last error: ConnectionError"):
        client.get("/dokumentstatus/X.json")


def test_keeps_a_polite_request_rate(api: FixtureServer, tmp_path: Path) -> None:
    client = RiksdagenClient.from_query(_query(api, tmp_path, requests_per_second=20.0))
    began = time.monotonic()
    for dok_id in ("A1", "A2", "A3", "A4", "A5"):
        with pytest.raises(RiksdagenError):
            client.fetch_status(dok_id)
    assert time.monotonic() - began >= 4 / 20 - 0.01


def test_ingest_from_riksdagen(api: FixtureServer, tmp_path: Path) -> None:
    cfg = IngestConfig(
        source="riksdagen",
        riksdagen=_query(api, tmp_path),
        output=tmp_path / "documents.jsonl",
        rejects=tmp_path / "rejects.jsonl",
    )
    result = ingest(cfg)
    assert (result.documents, result.rejects) == (2, 1)
    docs = [d for d in read_documents(cfg.output) if isinstance(d, Document)]
    assert docs[0].metadata["answer"]["questions"][1]["title"] == "Fler åtgärder"
    assert '"riksdagen:H8129997"' in cfg.rejects.read_text()
