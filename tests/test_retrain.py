"""Scheduled retraining: the gate, the lock, the digest skip and a crash that must leave the champion alone.

Real models (majority, TF-IDF) trained on constructed sentences, a real sqlite MLflow store, a real second
process holding the lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow_server import labelled_files_fixture, tracked_config, train_and_register  # noqa: F401  (fixture)

from pipeline import registry, tracking
from pipeline.config import MajoritySpec, PipelineConfig, RetrainConfig, TfidfSpec
from pipeline.promotion import decide_promotion
from pipeline.retrain import EXIT_CODES, RetrainStatus, retrain
from pipeline.retrain_state import read_state, retrain_lock, retrain_lock_path

pytestmark = pytest.mark.slow  # trains, registers and scores real models in an MLflow store

GATE = RetrainConfig(metric="commitment_macro_f1", margin=0.01, tolerance=0.02)


def metrics(commitment: float, strategy: float) -> dict[str, float]:
    return {"commitment_macro_f1": commitment, "strategy_macro_f1": strategy}


# --- the gate -------------------------------------------------------------------------------------------


def test_gate_promotes_a_clear_improvement() -> None:
    decision = decide_promotion(metrics(0.80, 0.70), metrics(0.75, 0.70), None, GATE)
    assert decision.promote and decision.reference == "champion"
    assert "gain +0.0500" in decision.reasons[0]


def test_gate_refuses_a_gain_below_the_margin() -> None:
    decision = decide_promotion(metrics(0.755, 0.70), metrics(0.75, 0.70), None, GATE)
    assert not decision.promote
    assert "< margin" in decision.reasons[0] and decision.blocking == [decision.reasons[0]]
    # a gain of exactly the margin passes, although 0.03 - 0.02 < 0.01 in floating point
    assert decide_promotion(metrics(0.03, 0.70), metrics(0.02, 0.70), None, GATE).promote


def test_gate_refuses_a_head_that_drops_beyond_tolerance() -> None:
    decision = decide_promotion(metrics(0.90, 0.67), metrics(0.75, 0.70), None, GATE)
    assert not decision.promote
    assert any(r.startswith("strategy_macro_f1") and "more than the tolerance" in r for r in decision.reasons)
    # a drop within tolerance is allowed
    assert decide_promotion(metrics(0.90, 0.69), metrics(0.75, 0.70), None, GATE).promote


def test_gate_without_champion_compares_with_the_baseline() -> None:
    assert decide_promotion(metrics(0.8, 0.7), None, metrics(0.6, 0.6), GATE).reference == "baseline"
    assert decide_promotion(metrics(0.8, 0.7), None, metrics(0.6, 0.6), GATE).promote
    assert not decide_promotion(metrics(0.6, 0.6), None, metrics(0.8, 0.7), GATE).promote
    nothing = decide_promotion(metrics(0.8, 0.7), None, None, GATE)
    assert not nothing.promote and nothing.reference == "none"


def test_gate_names_a_missing_metric() -> None:
    with pytest.raises(KeyError, match="strategy_macro_f1"):
        decide_promotion({"commitment_macro_f1": 0.9}, metrics(0.5, 0.5), None, GATE)


# --- end to end -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# A deliberately starved TF-IDF baseline (three features), so that a real TF-IDF challenger can beat it.
WEAK_BASELINE = TfidfSpec(min_df=1, max_features=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store for the module (creating one costs seconds); each test has its own experiment and
    registered model in it."""
    return tmp_path_factory.mktemp("store")


def config_for(tmp_path: Path, files: tuple[Path, Path], model: object, store: Path) -> PipelineConfig:
    train = {"model": model.model_dump(), "baselines": [WEAK_BASELINE.model_dump()]}  # type: ignore[attr-defined]
    own = {"experiment": tmp_path.name, "registered_model": f"ct-{tmp_path.name}"}
    return tracked_config(tmp_path, *files, {"train": train, "tracking": own}, store=store)


def champion(config: PipelineConfig) -> int | None:
    tracking.configure_tracking(config.tracking, config.experiment_name())
    return registry.get_alias_version(config.tracking.registered_model, registry.CHAMPION)


def install_champion(config: PipelineConfig, spec: object, folder: Path) -> int:
    tracking.configure_tracking(config.tracking, config.experiment_name())
    version = train_and_register(config, spec, folder)
    registry.set_champion(config.tracking.registered_model, version)
    return version


def test_better_challenger_is_promoted_and_reported(
    tmp_path: Path, labelled_files: tuple[Path, Path], store: Path
) -> None:
    config = config_for(tmp_path, labelled_files, TfidfSpec(min_df=1), store)
    old = install_champion(config, MajoritySpec(), tmp_path / "majority")

    outcome = retrain(config)

    assert outcome.status is RetrainStatus.PROMOTED, outcome.message
    assert outcome.exit_code == 0
    assert outcome.challenger_version == old + 1
    assert champion(config) == old + 1
    report = Path(config.retrain.report).read_text()
    assert "**promoted**" in report and f"champion (version {old})" in report
    assert outcome.metrics["challenger"]["commitment_macro_f1"] > outcome.metrics["champion"]["commitment_macro_f1"]
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["retrain.promoted"] == "true"
    evaluate = MlflowClient().get_run(_child(run, "evaluate")).data.metrics
    assert "challenger.commitment_macro_f1" in evaluate
    gain = outcome.metrics["challenger"]["commitment_macro_f1"] - outcome.metrics["champion"]["commitment_macro_f1"]
    assert evaluate["paired.commitment_macro_f1.diff"] == pytest.approx(gain)
    assert evaluate["paired.commitment_macro_f1.ci_low"] <= gain <= evaluate["paired.commitment_macro_f1.ci_high"]
    assert "## Paired difference" in report and f"- commitment_macro_f1: {gain:+.4f}" in report
    artifacts = [a.path for a in MlflowClient().list_artifacts(outcome.run_id)]
    assert "retrain_report.md" in artifacts
    assert read_state(config.retrain.state_file)["promoted"] is True


def test_worse_challenger_is_not_promoted(tmp_path: Path, labelled_files: tuple[Path, Path], store: Path) -> None:
    config = config_for(tmp_path, labelled_files, MajoritySpec(), store)
    old = install_champion(config, TfidfSpec(min_df=1), tmp_path / "tfidf")

    outcome = retrain(config)

    assert outcome.status is RetrainStatus.NOT_PROMOTED, outcome.message
    assert outcome.exit_code == 10
    assert champion(config) == old
    name = config.tracking.registered_model
    assert registry.get_alias_version(name, registry.CHALLENGER) == outcome.challenger_version == old + 1
    assert "**not promoted**" in Path(config.retrain.report).read_text()
    assert outcome.decision is not None and outcome.decision.blocking
    assert all(reason in outcome.message for reason in outcome.decision.blocking)


def test_first_run_promotes_only_over_the_baseline_and_unchanged_data_is_skipped(
    tmp_path: Path, labelled_files: tuple[Path, Path], store: Path
) -> None:
    weak = config_for(tmp_path, labelled_files, MajoritySpec(), store)
    first = retrain(weak)
    assert first.status is RetrainStatus.NOT_PROMOTED and first.decision is not None
    assert first.decision.reference == "baseline"
    assert champion(weak) is None

    skipped = retrain(weak)  # same data digest
    assert skipped.status is RetrainStatus.SKIPPED and skipped.exit_code == 11
    assert "unchanged" in skipped.message
    Path(weak.retrain.state_file).unlink()  # a fresh CI runner: the digest is found on the last MLflow run
    assert retrain(weak).status is RetrainStatus.SKIPPED
    assert registry.get_alias_version(weak.tracking.registered_model, registry.CHALLENGER) == first.challenger_version

    strong = config_for(tmp_path, labelled_files, TfidfSpec(min_df=1, C=20.0), store).model_copy(
        update={"retrain": weak.retrain.model_copy(update={"force": True})}
    )
    promoted = retrain(strong)
    assert promoted.status is RetrainStatus.PROMOTED, promoted.message
    assert champion(strong) == promoted.challenger_version

    # new labelled data (a changed digest) trains again without --force
    with labelled_files[0].open("a", encoding="utf-8") as handle:
        row = {
            "id": "extra-1",
            "doc_id": "extra",
            "text": "Jag tackar för frågan.",
            "strategy": [],
            "commitment": "none",
        }
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    assert retrain(weak).status is RetrainStatus.NOT_PROMOTED


HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.retrain_state import retrain_lock
with retrain_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_concurrent_run_is_refused_and_a_dead_holder_frees_the_lock(
    tmp_path: Path, labelled_files: tuple[Path, Path], store: Path
) -> None:
    config = config_for(tmp_path, labelled_files, MajoritySpec(), store)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(retrain_lock_path(config))],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        outcome = retrain(config)
        assert outcome.status is RetrainStatus.LOCKED and outcome.exit_code == EXIT_CODES[RetrainStatus.LOCKED]
        assert f"pid {holder.pid}" in outcome.message
        assert not Path(config.retrain.report).exists()  # refused before any work
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash, not a clean exit
        holder.wait(timeout=10)
    with retrain_lock(retrain_lock_path(config)):  # the kernel released it with the process
        pass


def test_crash_mid_run_leaves_the_champion_untouched(
    tmp_path: Path, labelled_files: tuple[Path, Path], store: Path
) -> None:
    config = config_for(tmp_path, labelled_files, TfidfSpec(min_df=1), store)
    old = install_champion(config, MajoritySpec(), tmp_path / "majority")
    # the champion's stored files go missing: the run trains and registers a challenger, then dies scoring it
    source = MlflowClient().get_model_version(config.tracking.registered_model, str(old)).source
    location = _local_artifact_dir(store, source)
    for path in location.rglob("model.json"):
        path.unlink()

    outcome = retrain(config)

    assert outcome.status is RetrainStatus.FAILED and outcome.exit_code == 1
    assert "model.json" in outcome.message
    assert champion(config) == old
    challenger = registry.get_alias_version(config.tracking.registered_model, registry.CHALLENGER)
    assert challenger == old + 1  # it got that far
    assert read_state(config.retrain.state_file) == {}  # the next run retries
    failed = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name(config.tracking.experiment).experiment_id],
        "attributes.run_name = 'retrain'",
    )
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "model.json" in failed[0].data.tags["retrain.error"]
    with retrain_lock(retrain_lock_path(config)):
        pass


def _child(run: mlflow.entities.Run, name: str) -> str:
    children = MlflowClient().search_runs(
        [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.run_name = '{name}'",
    )
    assert len(children) == 1
    return children[0].info.run_id


def _local_artifact_dir(store: Path, source: str) -> Path:
    """Where a logged model's files sit in the local store (`models:/m-…` -> its artifact folder)."""
    model_id = source.removeprefix("models:/")
    found = [p for p in store.rglob(model_id) if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def test_the_lock_is_per_tracking_store_and_registered_model(
    tmp_path: Path, labelled_files: tuple[Path, Path], store: Path
) -> None:
    """Two configs (other folders, other model kinds) retraining one registered model share one lock."""
    first = config_for(tmp_path / "first", labelled_files, MajoritySpec(), store)
    second = config_for(tmp_path / "second", labelled_files, TfidfSpec(min_df=1), store)
    second.tracking.registered_model = first.tracking.registered_model
    assert retrain_lock_path(first) == retrain_lock_path(second)
    assert retrain_lock_path(first).parent == store.resolve()
    elsewhere = config_for(tmp_path / "elsewhere", labelled_files, MajoritySpec(), tmp_path / "other-store")
    elsewhere.tracking.registered_model = first.tracking.registered_model
    assert retrain_lock_path(elsewhere) != retrain_lock_path(first)  # another store: another lock
    assert retrain_lock_path(config_for(tmp_path / "x", labelled_files, MajoritySpec(), store)) != (
        retrain_lock_path(first)  # another registered model in the same store
    )
    with retrain_lock(retrain_lock_path(first)):
        outcome = retrain(second)
    assert outcome.status is RetrainStatus.LOCKED and not Path(second.retrain.report).exists()
