"""Shared fixtures for the MLflow tests: a real `mlflow server` and a small constructed labelled data set.

Test files import the fixtures (`labelled_files_fixture`, `mlflow_server_fixture`) and ask for them by name.
Every sentence below is constructed for these tests (not taken from any source).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import requests

from pipeline.config import PipelineConfig

SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `mlflow server` on 127.0.0.1 (sqlite store, proxied artifacts under `root`); wait for /health."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{(root / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"mlflow server did not answer /health within {SERVER_START_TIMEOUT_S}s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (it runs in its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture(scope="module", name="mlflow_server")
def mlflow_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real MLflow tracking server, started once per test module."""
    process, url = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield url
    finally:
        stop_server(process)


# --- constructed labelled data --------------------------------------------------------------------------

_TOPICS = {
    "forebygga": [
        "det förebyggande arbetet mot radikalisering bland unga",
        "kommunernas arbete med avhoppare från våldsbejakande miljöer",
        "skolornas arbete mot extremistisk propaganda",
    ],
    "forhindra": [
        "Säkerhetspolisens underrättelsearbete mot terrorister",
        "lagstiftningen om terroristbrott och terroristfinansiering",
        "informationsutbytet mellan polis och åklagare om terrorhot",
    ],
    "forsvara": [
        "skyddet av offentliga platser mot attacker",
        "kontrollen av sprängämnesprekursorer och vapen",
        "säkerhetsskyddet i kritisk infrastruktur",
    ],
}
_COMMITMENTS = {
    "funding": [
        "Regeringen tillför {n} miljoner kronor till {topic}.",
        "I budgeten avsätts {n} miljoner kronor i anslag för {topic}.",
    ],
    "pending_proposal": [
        "En särskild utredare ska föreslå förändringar som rör {topic}.",
        "Regeringen avser att lägga fram ett lagförslag om {topic}.",
    ],
    "support": [
        "Anhöriga kan få stöd och vägledning i frågor om {topic}.",
        "Yrkesverksamma erbjuds utbildning och kunskapsstöd om {topic}.",
    ],
    "institution": [
        "Myndigheten har fått i uppdrag att samordna {topic}.",
        "Ett nationellt center har inrättats med ansvar för {topic}.",
    ],
}
_NONE = [
    "Hotet mot Sverige är fortsatt allvarligt.",
    "Frågan är viktig för hela samhället.",
    "Jag tackar för frågan.",
    "Det finns ingen enkel lösning på problemet.",
]


def constructed_sentences(n_docs: int, prefix: str, seed: int) -> list[dict[str, object]]:
    """Constructed labelled sentences: six per document, every commitment type and strategy label present."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    kinds = [*_COMMITMENTS, "none"]
    for d in range(n_docs):
        doc_id = f"{prefix}-doc{d}"
        for i in range(6):
            commitment = kinds[(d + i) % len(kinds)]
            if commitment == "none":
                text, strategy = rng.choice(_NONE), []
            else:
                label = rng.choice(list(_TOPICS))
                text = rng.choice(_COMMITMENTS[commitment]).format(
                    n=rng.randint(5, 900), topic=rng.choice(_TOPICS[label])
                )
                strategy = [label]
            rows.append(
                {
                    "id": f"{doc_id}-s{i}",
                    "doc_id": doc_id,
                    "sentence_index": i,
                    "text": text,
                    "strategy": strategy,
                    "commitment": commitment,
                }
            )
    return rows


def write_jsonl(rows: list[dict[str, object]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(name="labelled_files")
def labelled_files_fixture(tmp_path: Path) -> tuple[Path, Path]:
    """(train.jsonl, dev.jsonl) of constructed sentences in `tmp_path/data`."""
    train = write_jsonl(constructed_sentences(20, "train", seed=1), tmp_path / "data" / "train.jsonl")
    dev = write_jsonl(constructed_sentences(8, "dev", seed=2), tmp_path / "data" / "dev.jsonl")
    return train, dev


# --- configs and registered models ----------------------------------------------------------------------


def tracked_config(
    root: Path,
    train_file: Path,
    dev_file: Path,
    sections: Mapping[str, Mapping[str, object]] | None = None,
    store: Path | None = None,
) -> PipelineConfig:
    """A config with lock, state and reports under `root` and its sqlite store under `store` (or `root`)."""
    store = store or root
    raw: dict[str, object] = {
        "name": "test",
        "data": {"train": [str(train_file)], "dev": str(dev_file)},
        "evaluate": {"bootstrap_samples": 20, "top_errors": 5},
        "retrain": {
            "state_file": str(root / "retrain_state.json"),
            "report": str(root / "retrain_report.md"),
        },
        "tracking": {
            "uri": f"sqlite:///{store / 'mlflow.db'}",
            "artifact_location": str(store / "mlartifacts"),
            "experiment": "test",
            "registered_model": "ct-test-labeller",
            "log_system_metrics": False,
        },
    }
    for section, values in (sections or {}).items():
        raw[section] = {**raw.get(section, {}), **values}  # type: ignore[dict-item]
    return PipelineConfig.model_validate(raw)


def train_and_register(config: PipelineConfig, spec: object, folder: Path) -> int:
    """Fit `spec` on the config's data, log it as the pyfunc in a stage run, register it as challenger."""
    from pipeline import registry, tracking
    from pipeline.labelled_data import read_training_data
    from pipeline.models.factory import build_model

    train, dev = read_training_data(config.data.train, config.data.dev)
    with tracking.stage_run(config, "train"):
        model = build_model(spec).fit(train, dev)  # type: ignore[arg-type]
        model.save(folder)
        info = registry.log_sentence_model(folder, "model", config.segment)
        return registry.register(info.model_uri, config.tracking.registered_model)
