"""`ct-pipeline serve`: the real server on a free loopback port, a model trained here, real HTTP requests.

All texts are constructed for these tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow_server import (
    constructed_sentences,
    free_port,
    stop_server,
    tracked_config,
    train_and_register,
    write_jsonl,
)

from pipeline import pyfunc, tracking
from pipeline.config import TfidfSpec, dump_config
from pipeline.registry import resolve_model

pytestmark = pytest.mark.server  # a real REST scoring server on 127.0.0.1

START_TIMEOUT_S = 180.0
MAX_REQUEST_BYTES = 1_000_000

DOCUMENT = {
    "id": "svar-1",
    "text": "Regeringen tillför 12 miljoner kronor till skolornas arbete mot extremistisk propaganda. "
    "En särskild utredare ska föreslå förändringar som rör skyddet av offentliga platser. "
    "Jag tackar för frågan.",
}
SENTENCES = [
    {"doc_id": "a", "text": "Anhöriga kan få stöd och vägledning i frågor om radikalisering bland unga."},
    {"doc_id": "a", "text": "Hotet mot Sverige är fortsatt allvarligt."},
    {"doc_id": "b", "text": "Myndigheten har fått i uppdrag att samordna kontrollen av sprängämnesprekursorer."},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A TF-IDF model trained on constructed data and registered as challenger: (config file, model URI)."""
    root = tmp_path_factory.mktemp("serve")
    train = write_jsonl(constructed_sentences(20, "train", seed=1), root / "train.jsonl")
    dev = write_jsonl(constructed_sentences(8, "dev", seed=2), root / "dev.jsonl")
    config = tracked_config(root, train, dev)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking.configure_tracking(config.tracking, config.experiment_name())
    train_and_register(config, TfidfSpec(min_df=1), root / "model")
    config_file = root / "config.yaml"
    config_file.write_text(dump_config(config), encoding="utf-8")
    return config_file, f"models:/{config.tracking.registered_model}@challenger"


def serve_command(config_file: Path, model_uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "serve", "-c", str(config_file), "--model", model_uri, *extra]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


@pytest.fixture(scope="module")
def server(store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ct-pipeline serve` started as a user would, on a free loopback port; stopped after the module."""
    config_file, model_uri = store
    port = free_port()
    log_file = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = serve_command(config_file, model_uri, "--port", str(port), "--max-request-bytes", str(MAX_REQUEST_BYTES))
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{log_file.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer /ping in {START_TIMEOUT_S}s:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.5)
        printed = log_file.read_text()
        assert f"at {url}/invocations" in printed and "curl -s" in printed
        yield url
    finally:
        stop_server(process)
    # uvicorn finishes open requests on SIGTERM, then re-raises the signal
    assert process.returncode in (0, -signal.SIGTERM), log_file.read_text()[-3000:]


def invoke(url: str, records: list[dict[str, object]]) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)


def expected_rows(model_uri: str, store: tuple[Path, str], records: list[dict[str, object]]) -> pd.DataFrame:
    """What the registered pyfunc, loaded in this process, returns for the same input, naming the model as
    batch labelling does (registered name and version)."""
    config_file, _ = store
    mlflow.set_tracking_uri(f"sqlite:///{config_file.parent / 'mlflow.db'}")
    rows = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame.from_records(records))
    _, info = resolve_model(model_uri)
    assert (info.name, info.version) == ("ct-test-labeller", "1")
    return rows.assign(model_name=info.name, model_version=info.version)


def assert_same_rows(response: requests.Response, expected: pd.DataFrame) -> None:
    assert response.status_code == 200, response.text
    served = pd.DataFrame.from_records(response.json()["predictions"])
    assert list(served.columns) == pyfunc.output_columns()
    assert len(served) == len(expected) > 0
    pd.testing.assert_frame_equal(served, expected.reset_index(drop=True), check_dtype=False, atol=1e-9)


def test_a_document_and_a_batch_of_sentences_get_the_pyfuncs_rows(server: str, store: tuple[Path, str]) -> None:
    _, model_uri = store
    document = invoke(server, [DOCUMENT])
    assert_same_rows(document, expected_rows(model_uri, store, [DOCUMENT]))
    rows = document.json()["predictions"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(DOCUMENT["text"][r["start"] : r["end"]] == r["text"] for r in rows)
    sentences = invoke(server, SENTENCES)
    assert_same_rows(sentences, expected_rows(model_uri, store, SENTENCES))
    assert [r["doc_id"] for r in sentences.json()["predictions"]] == ["a", "a", "b"]


def test_bad_requests_get_4xx_with_a_reason_and_the_server_keeps_serving(server: str, store: tuple[Path, str]) -> None:
    _, model_uri = store
    invocations = f"{server}/invocations"
    headers = {"Content-Type": "application/json"}
    bad = {
        "missing text": (invoke(server, [{"id": "d1"}]), "missing inputs ['text']"),
        "empty body": (requests.post(invocations, data=b"", headers=headers, timeout=10), "valid JSON"),
        "text is a number": (invoke(server, [{"id": "d1", "text": 5}]), "'text' must hold strings"),
        "text is a list": (invoke(server, [{"doc_id": "d1", "text": ["a", "b"]}]), "'text' must hold strings"),
        "documents and sentences mixed": (
            invoke(server, [{"id": "d1", "doc_id": "d1", "text": "Hej."}]),
            "both 'id' (documents) and 'doc_id' (sentences)",
        ),
        "not a table": (requests.post(invocations, json=[DOCUMENT], timeout=10), "Received a list"),
    }
    for what, (response, reason) in bad.items():
        assert 400 <= response.status_code < 500, what
        assert reason in response.json()["message"], (what, response.text[:500])
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    assert_same_rows(invoke(server, [DOCUMENT]), expected_rows(model_uri, store, [DOCUMENT]))


def test_a_request_over_the_size_limit_is_refused_unread(server: str, store: tuple[Path, str]) -> None:
    _, model_uri = store
    huge = {"id": "huge", "text": "Regeringen tillför pengar. " * (20 * 1024 * 1024 // 27)}  # a 20 MB document
    body = json.dumps({"dataframe_records": [huge]}).encode()
    declared = requests.post(
        f"{server}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert declared.status_code == 413
    assert f"request body is {len(body)} bytes" in declared.json()["message"]  # judged by its header alone

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    streamed = requests.post(
        f"{server}/invocations", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert streamed.status_code == 413
    assert f"passed {MAX_REQUEST_BYTES} bytes" in streamed.json()["message"]

    just_under = {"id": "long", "text": DOCUMENT["text"] * (MAX_REQUEST_BYTES // 2 // len(DOCUMENT["text"]))}
    answered = invoke(server, [just_under])
    assert answered.status_code == 200
    assert_same_rows(invoke(server, [DOCUMENT]), expected_rows(model_uri, store, [DOCUMENT]))


def test_an_alias_that_does_not_exist_is_refused_in_one_line(store: tuple[Path, str]) -> None:
    config_file, model_uri = store
    missing = model_uri.replace("@challenger", "@nope")
    result = subprocess.run(
        serve_command(config_file, missing, "--port", str(free_port())),
        capture_output=True, text=True, env=clean_env(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert message == [f"serve: {missing}: model 'ct-test-labeller' has no alias 'nope' (its aliases: challenger)"]
