"""Riksdag open data: list answers to written questions (frs) and interpellations (ip), fetch their text.

The client caches every successful response on disk (keyed by URL; listings for `listing_ttl_s`, document
texts for good, since a published answer does not change), keeps to a polite request rate,
retries transient failures (connection errors, 429, 5xx) with exponential backoff, and raises
`RiksdagenError` naming the URL and the problem otherwise. Source: Sveriges riksdag (data.riksdagen.se).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from pipeline.config_sections import RiksdagenQuery
from pipeline.io.atomic import write_bytes_atomic
from pipeline.io.html import html_to_text
from pipeline.io.rejects import Reject
from pipeline.schema import Document

_TRANSIENT = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 60.0
ATTRIBUTION = "Källa: Sveriges riksdag"


class RiksdagenError(RuntimeError):
    """A request to the Riksdag API failed for good, or returned something unusable."""


def _as_list(block: Any, key: str) -> list[dict[str, Any]]:
    """The API gives a single object instead of a one-element list, or null; always return a list."""
    if not isinstance(block, dict):
        return []
    value = block.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class RiksdagenClient:
    """A small client for data.riksdagen.se with a disk cache, retries and a request-rate limit."""

    def __init__(
        self,
        base_url: str = "https://data.riksdagen.se",
        cache_dir: Path | None = None,
        *,
        requests_per_second: float = 3.0,
        max_retries: int = 4,
        timeout_s: float = 30.0,
        backoff_s: float = 1.0,
        listing_ttl_s: float | None = 3600.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.min_interval_s = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.listing_ttl_s = listing_ttl_s
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "ct-policy-pipeline (research; polite client)")
        self.network_requests = 0
        self._last_request = -float("inf")

    @classmethod
    def from_query(cls, query: RiksdagenQuery, session: requests.Session | None = None) -> RiksdagenClient:
        return cls(
            query.base_url,
            query.cache_dir,
            requests_per_second=query.requests_per_second,
            max_retries=query.max_retries,
            timeout_s=query.timeout_s,
            backoff_s=query.backoff_s,
            listing_ttl_s=query.listing_ttl_s,
            session=session,
        )

    # --- transport -------------------------------------------------------------------------------------

    def _url(self, path_or_url: str, params: dict[str, Any] | None = None) -> str:
        if path_or_url.startswith(("http://", "https://", "//")):
            # Links from the API point at data.riksdagen.se (sometimes as http:); keep our base URL.
            parts = urlsplit(path_or_url)
            path_or_url = parts.path + (f"?{parts.query}" if parts.query else "")
        url = self.base_url + "/" + path_or_url.lstrip("/")
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return url

    def _cache_file(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.body"

    def _wait_for_turn(self) -> None:
        pause = self._last_request + self.min_interval_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last_request = time.monotonic()

    def _retry_pause(self, attempt: int, response: requests.Response | None) -> float:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), _MAX_RETRY_AFTER_S)
        return self.backoff_s * 2**attempt

    def get(self, path_or_url: str, params: dict[str, Any] | None = None, *, max_age_s: float | None = None) -> bytes:
        """The body of a GET, from the cache when there (and younger than `max_age_s`, when given); network
        failures are retried, then raised."""
        url = self._url(path_or_url, params)
        cache_file = self._cache_file(url)
        fresh = cache_file is not None and cache_file.is_file()
        if fresh and max_age_s is not None:
            fresh = time.time() - cache_file.stat().st_mtime <= max_age_s
        if fresh:
            return cache_file.read_bytes()
        problem = ""
        for attempt in range(self.max_retries + 1):
            self._wait_for_turn()
            self.network_requests += 1
            response = None
            try:
                response = self.session.get(url, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    self._store(cache_file, response.content)
                    return response.content
                problem = f"HTTP {response.status_code} {response.reason}"
                if response.status_code not in _TRANSIENT:
                    hint = " (no such document?)" if response.status_code == 404 else ""
                    raise RiksdagenError(f"GET {url}: {problem}{hint}")
            if attempt < self.max_retries:
                time.sleep(self._retry_pause(attempt, response))
        raise RiksdagenError(f"GET {url}: failed after {self.max_retries + 1} attempts; last error: {problem}")

    def _store(self, cache_file: Path | None, body: bytes) -> None:
        if cache_file is None:
            return
        write_bytes_atomic(cache_file, body)

    def get_json(
        self, path_or_url: str, params: dict[str, Any] | None = None, *, max_age_s: float | None = None
    ) -> Any:
        body = self.get(path_or_url, params, max_age_s=max_age_s)
        try:
            return json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            url = self._url(path_or_url, params)
            cache_file = self._cache_file(url)
            if cache_file is not None:
                cache_file.unlink(missing_ok=True)  # never keep a bad body
            raise RiksdagenError(f"GET {url}: response is not JSON ({exc})") from None

    # --- the API ---------------------------------------------------------------------------------------

    def list_documents(self, query: RiksdagenQuery) -> Iterator[dict[str, Any]]:
        """Listing entries (dicts in the API's shape) for the query, newest first, up to max_documents."""
        yielded = 0
        for doc_type in query.doc_types:
            params: dict[str, Any] = {"sok": query.search, "doktyp": doc_type}
            if query.session:
                params["rm"] = query.session
            if query.date_from:
                params["from"] = query.date_from
            if query.date_to:
                params["tom"] = query.date_to
            params.update({"sort": "datum", "sortorder": "desc", "utformat": "json", "p": 1})
            page: str | None = self._url("/dokumentlista/", params)
            seen_pages: set[str] = set()
            while page and page not in seen_pages:
                seen_pages.add(page)
                listing = self.get_json(page, max_age_s=self.listing_ttl_s)
                block = listing.get("dokumentlista") if isinstance(listing, dict) else None
                if not isinstance(block, dict):
                    raise RiksdagenError(f"GET {page}: no 'dokumentlista' in the response")
                for entry in _as_list(block, "dokument"):
                    if yielded >= query.max_documents:
                        return
                    if entry.get("dok_id"):
                        yielded += 1
                        yield entry
                next_page = block.get("@nasta_sida")
                page = self._url(next_page) if next_page else None

    def fetch_status(self, dok_id: str) -> dict[str, Any]:
        """The `dokumentstatus` block of one document."""
        data = self.get_json(f"/dokumentstatus/{dok_id}.json")
        status = data.get("dokumentstatus") if isinstance(data, dict) else None
        if not isinstance(status, dict) or not isinstance(status.get("dokument"), dict):
            raise RiksdagenError(f"{dok_id}: dokumentstatus response has no 'dokument' block")
        return status

    def fetch_answer(self, dok_id: str) -> Document:
        """The answer text and metadata of an `frs` (written answer) or `ip` (interpellation) document."""
        status = self.fetch_status(dok_id)
        doc = status["dokument"]
        doc_type = (doc.get("doktyp") or doc.get("typ") or "").lower()
        people = _as_list(status.get("dokintressent"), "intressent")
        minister = _person(people, "besvaradav") or _person(people, "stalldtill")
        if doc_type == "ip":
            text = _interpellation_answer(dok_id, status, minister)
        else:
            markup = doc.get("html") or self.get(f"/dokument/{dok_id}.html").decode("utf-8", "replace")
            text, _ = html_to_text(markup)
        if not text.strip():
            raise RiksdagenError(f"{dok_id}: the document has no text")
        askers = [p for p in people if (p.get("roll") or "").lower() == "undertecknare"]
        metadata: dict[str, Any] = {
            "source": "riksdagen",
            "attribution": ATTRIBUTION,
            "dok_id": dok_id,
            "doktyp": doc_type,
            "rm": doc.get("rm"),
            "beteckning": doc.get("beteckning"),
            "organ": doc.get("organ"),
            "subtitle": doc.get("subtitel") or doc.get("undertitel"),
            "asker": askers[0].get("namn") if askers else None,
            "party": askers[0].get("partibet") if askers else None,
            "minister": minister.get("namn") if minister else None,
            "questions": [
                {"id": f"{r.get('ref_dok_rm')}:{r.get('ref_dok_bet')}", "title": r.get("ref_dok_titel")}
                for r in _as_list(status.get("dokreferens"), "referens")
                if r.get("ref_dok_bet")
            ],
        }
        date = (doc.get("datum") or "")[:10] or None
        return Document(id=f"riksdagen:{dok_id}", text=text, title=doc.get("titel"), date=date, metadata=metadata)


def _person(people: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    return next((p for p in people if (p.get("roll") or "").lower() == role), None)


def _interpellation_answer(dok_id: str, status: dict[str, Any], minister: dict[str, Any] | None) -> str:
    """The minister's first speech in the interpellation debate (replies and follow-ups left out)."""
    speeches = _as_list(status.get("debatt"), "anforande")
    name = (minister or {}).get("namn", "").lower()

    def by_minister(speech: dict[str, Any]) -> bool:
        speaker = (speech.get("talare") or "").lower()
        return bool(name and name in speaker) or "minister" in speaker or "statsråd" in speaker

    answers = [s for s in speeches if by_minister(s) and (s.get("replik") or "N").upper() != "Y"]
    answers = answers or [s for s in speeches if by_minister(s)]
    if not answers:
        raise RiksdagenError(f"{dok_id}: no answer by the minister in the interpellation debate")
    text, _ = html_to_text(answers[0].get("anforandetext") or "")
    return text


def riksdagen_documents(query: RiksdagenQuery, session: requests.Session | None = None) -> Iterator[Document | Reject]:
    """Answers matching the query; a document that cannot be fetched becomes a Reject (the run goes on).

    A failing listing request raises `RiksdagenError`: without a listing there is nothing to go on.
    """
    client = RiksdagenClient.from_query(query, session)
    for entry in client.list_documents(query):
        dok_id = entry["dok_id"]
        try:
            yield client.fetch_answer(dok_id)
        except RiksdagenError as exc:
            yield Reject(id=f"riksdagen:{dok_id}", source=client.base_url, reason=str(exc))
