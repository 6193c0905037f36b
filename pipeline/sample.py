"""The bundled constructed sample (`data/sample/`): lets the quick start run without the shared material.

Every text in it was written for this project; see `data/sample/README.md`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The repository root is the parent of `pipeline/`; the sample lives beside the package, not inside it.
_SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"

# What the sample holds, relative to its folder; `write_sample` checks these exist before copying.
SAMPLE_FILES: tuple[str, ...] = (
    "README.md",
    "answers.jsonl",
    "corpus.jsonl",
    "labelled/train.jsonl",
    "labelled/dev.jsonl",
)


def sample_dir() -> Path:
    """The folder of the bundled sample; raises FileNotFoundError when this install does not carry it."""
    missing = [name for name in SAMPLE_FILES if not (_SAMPLE_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled sample is incomplete or absent at {_SAMPLE_DIR} (missing: {', '.join(missing)}); "
            "run from a checkout of the repository, or copy data/sample/ from it"
        )
    return _SAMPLE_DIR


def write_sample(dest: Path) -> Path:
    """Copy the whole sample (answers as .txt and .jsonl, labelled splits, corpus) into `dest`; return it.

    Existing files of the same name in `dest` are overwritten; other files there are left alone.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"cannot write the sample to {dest}: it exists and is not a folder")
    shutil.copytree(sample_dir(), dest, dirs_exist_ok=True)
    return dest
