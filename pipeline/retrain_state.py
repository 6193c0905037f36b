"""What keeps unattended retraining safe between runs: one lock per registered model, the labelled data's
digest, and the state file (or the last finished MLflow run) that says what the last completed round saw."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pipeline.config import PipelineConfig
from pipeline.io.atomic import write_text_atomic


class RetrainLocked(RuntimeError):
    """Another retrain run holds the lock file."""


def retrain_lock_path(config: PipelineConfig) -> Path:
    """One lock per tracking store and registered model, whichever config or folder a retrain starts from.

    Two retrains of the same registered model must never overlap (both could move `champion`), even from
    different configs. The lock sits next to a sqlite store's database; for a server it is a per-user file on
    this machine (`~/.cache/ct-pipeline/locks`); retrains on different machines against one server need the
    scheduler to keep them apart.
    """
    from pipeline import tracking

    uri = tracking.resolve_tracking_uri(config.tracking)
    name = config.tracking.registered_model
    db = tracking.sqlite_path(uri)
    store = str(db.resolve()) if db is not None else uri.rstrip("/")
    key = hashlib.sha256(f"{store}\n{name}".encode()).hexdigest()[:16]
    folder = db.resolve().parent if db is not None else Path.home() / ".cache" / "ct-pipeline" / "locks"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    return folder / f"retrain-{slug}-{key}.lock"


@contextmanager
def retrain_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking `flock` on `path`; the kernel drops it when the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RetrainLocked(
                f"another retrain is running (lock {path} held by pid {holder}); not starting a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def data_digest(paths: Sequence[Path]) -> str:
    """sha256 over the labelled files (train, dev, evaluation set): unchanged data, nothing to retrain."""
    from pipeline.tracking import file_digest

    return file_digest(list(paths))


def read_state(path: Path) -> dict[str, object]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: retrain state is not valid JSON ({exc.msg}); delete it to start afresh") from None
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: Mapping[str, object]) -> None:
    """Atomic replace, so a crash never leaves half a state file."""
    write_text_atomic(Path(path), json.dumps(dict(state), indent=2))


def last_completed(config: PipelineConfig) -> dict[str, object]:
    """The last completed retrain: the state file, or else the newest finished `retrain` run in MLflow (so a
    CI runner that starts without the state file still skips unchanged data)."""
    state = read_state(config.retrain.state_file)
    if state.get("data_digest"):
        return state
    from pipeline import run_history

    run = run_history.last_finished_run(config.experiment_name(), "retrain.data_digest")
    if run is None:
        return {}
    finished = datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC)
    return {
        "data_digest": run.data.tags["retrain.data_digest"],
        "finished_at": finished.isoformat(timespec="seconds"),
        "run_id": run.info.run_id,
    }
