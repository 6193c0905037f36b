"""Configuration: every shipped config validates; every error is one line naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import ConfigError, PipelineConfig, check_inputs, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name != "lexicon.yaml"], ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SHARED_DIR", "/nonexistent/shared")
    config = load_config(path)
    assert isinstance(config, PipelineConfig)
    assert config.stages


def test_production_config_names_kb_bert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SHARED_DIR", "/data/shared")
    config = load_config(ROOT / "configs" / "kb-bert.yaml")
    assert config.pretrain.init_from == "KBLab/bert-base-swedish-cased"


def test_gold_config_reads_location_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SHARED_DIR", "/data/elsewhere")
    config = load_config(ROOT / "configs" / "gold.yaml")
    assert config.data.dev == Path("/data/elsewhere/gold/dev.jsonl")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  model:\n    kind: bert\n    epochz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message == f"{path}: train.model.epochz: unknown key"
    assert "\n" not in message


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "evaluate:\n  bootstrap_samples: many\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: evaluate\.bootstrap_samples: .*integer.*'many'"):
        load_config(path)


def test_unknown_model_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  model:\n    kind: svm\n")
    with pytest.raises(ConfigError, match=r"train\.model"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(path)


def test_unset_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VARIABLE_X", raising=False)
    path = _write(tmp_path, "data:\n  dev: ${NO_SUCH_VARIABLE_X}/dev.jsonl\n")
    with pytest.raises(ConfigError, match=r"data\.dev: environment variable NO_SUCH_VARIABLE_X is not set"):
        load_config(path)


def test_environment_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VARIABLE_X", raising=False)
    path = _write(tmp_path, "data:\n  dev: ${NO_SUCH_VARIABLE_X:-fallback}/dev.jsonl\n")
    assert load_config(path).data.dev == Path("fallback/dev.jsonl")


def test_set_overrides_any_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  model:\n    kind: bert\n    epochs: 3\n")
    config = load_config(path, ["train.model.epochs=7", "tracking.uri=sqlite:///x.db", "stages=[train]"])
    assert config.train.model.epochs == 7
    assert config.tracking.uri == "sqlite:///x.db"
    assert config.stages == ["train"]


def test_set_indexes_lists_by_number(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "train:\n  model:\n    kind: ensemble\n    weights: [1, 1]\n"
        "    members:\n      - {kind: bert, epochs: 8}\n      - {kind: tfidf}\n",
    )
    config = load_config(path, ["train.model.members.0.epochs=2", "train.model.members.1.C=0.5"])
    assert config.train.model.members[0].epochs == 2
    assert config.train.model.members[1].C == 0.5
    assert load_config(path, ["train.model.weights.1=3"]).train.model.weights == [0.25, 0.75]
    for key in ("train.model.members.2.epochs", "train.model.members.first.epochs"):
        with pytest.raises(ConfigError, match=rf"--set {re.escape(key)}: .* is not an index of a list of 2"):
            load_config(path, [f"{key}=2"])


def test_set_validates_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=r"label\.chunk_documents"):
        load_config(path, ["label.chunk_documents=lots"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["label.chunk_documents"])


def test_missing_input_file_names_key(tmp_path: Path) -> None:
    path = _write(tmp_path, f"data:\n  train: [{tmp_path}/absent.jsonl]\n  dev: {tmp_path}/dev.jsonl\n")
    (tmp_path / "dev.jsonl").write_text("")
    config = load_config(path)
    with pytest.raises(ConfigError) as err:
        check_inputs(config, ["train"])
    assert str(err.value) == f"{path}: data.train[0]: file not found: {tmp_path}/absent.jsonl"


def test_inputs_made_by_an_earlier_stage_are_not_required(tmp_path: Path) -> None:
    (tmp_path / "answers").mkdir()
    path = _write(
        tmp_path,
        f"ingest:\n  input: {tmp_path}/answers\n  output: {tmp_path}/docs.jsonl\n"
        f"segment:\n  input: {tmp_path}/docs.jsonl\n",
    )
    config = load_config(path)
    check_inputs(config, ["ingest", "segment"])  # docs.jsonl is made by ingest
    with pytest.raises(ConfigError, match=r"segment\.input: file not found"):
        check_inputs(config, ["segment"])


def test_flat_params_cover_resolved_config() -> None:
    config = load_config(ROOT / "configs" / "quickstart.yaml")
    flat = config.flat()
    assert flat["train.model.kind"] == "ensemble"
    assert flat["tracking.registered_model"] == "ct-sentence-labeller-quickstart"
