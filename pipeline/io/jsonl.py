"""JSON Lines files, plain or gzip-compressed, written atomically so a failed run leaves no half file."""

from __future__ import annotations

import codecs
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.io.atomic import atomic_path


def is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz", ".ndjson"))


def _open_binary(path: Path, mode: str) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw UTF-8 bytes) for every line, blank ones included.

    A UTF-8 byte-order mark is dropped; a file that starts with a UTF-16/32 mark is decoded and handed on
    as UTF-8. Lines stay undecoded otherwise, so one bad line stays one error.
    """
    from pipeline.io.files import text_encoding

    with _open_binary(path, "rb") as handle:
        encoding = text_encoding(handle.read(4))
        handle.seek(0)
        if encoding in ("utf-16", "utf-32"):
            with io.TextIOWrapper(handle, encoding=encoding, errors="replace", newline="") as text:
                for number, line in enumerate(text, start=1):
                    yield number, line.encode("utf-8")
            return
        for number, line in enumerate(handle, start=1):
            if number == 1 and encoding == "utf-8-sig":
                line = line.removeprefix(codecs.BOM_UTF8)
            yield number, line


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes) for each non-blank line (see `read_lines`)."""
    for number, line in read_lines(path):
        if line.strip():
            yield number, line


@dataclass(frozen=True)
class BadLine:
    """A line that is not a JSON value; `reason` is one line for a person (not valid UTF-8 / JSON)."""

    number: int
    reason: str


def json_problem(line: bytes, exc: json.JSONDecodeError) -> str:
    """The whole of a JSON parser's complaint about one line: what, at which column, and the character."""
    message = exc.msg if exc.msg.endswith(" at") else f"{exc.msg} at"
    text = line.decode("utf-8", "replace")
    found = f" (found {text[exc.pos]!r})" if exc.pos < len(text) else " (the line ends there)"
    return f"not valid JSON: {message} column {exc.colno}{found}"


def read_jsonl(path: Path, blank: list[int] | None = None) -> Iterator[tuple[int, Any]]:
    """The one JSONL reader: (line number from 1, parsed value) for each non-blank line.

    A line that cannot be parsed gives a `BadLine` as its value, so each caller decides whether that is a
    reject, a problem to list or an error; blank lines are skipped, their numbers appended to `blank`.
    Plain or gzip, UTF-8 (with or without BOM) or UTF-16/32 (see `read_lines`).
    """
    for number, raw in read_lines(Path(path)):
        if not raw.strip():
            if blank is not None:
                blank.append(number)
            continue
        try:
            yield number, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield number, BadLine(number, f"not valid UTF-8 ({exc.reason})")
        except json.JSONDecodeError as exc:
            yield number, BadLine(number, json_problem(raw, exc))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL (gzip when the name ends in .gz) via a temporary file; returns the row count."""
    count = 0
    with atomic_path(Path(path)) as partial, _open_binary(partial, "wb") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
    return count
