"""Content digests: the identity of a labelled data set, a model folder or an input item."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def _update_from_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_digest(paths: Sequence[Path]) -> str:
    """sha256 over the files' names and bytes, in the given order: the identity of a labelled data set."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labelled data file not found")
        digest.update(path.name.encode() + b"\0")
        _update_from_file(digest, path)
        digest.update(b"\0")
    return digest.hexdigest()


def folder_digest(path: Path) -> str:
    """A short content digest of a folder (relative names and bytes): a model folder's version outside the
    registry."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        _update_from_file(digest, file)
    return digest.hexdigest()[:16]
