"""The package's shape, checked on its real import graph (grimp, via import-linter's contracts in pyproject.toml).

Layers, highest first: cli -> run -> tracking -> evaluate, train, label -> models -> io, segment ->
schema/config. A module imports only from its own layer or lower ones, and no two modules of a package import
each other, directly or through others. MLflow is imported only by the modules the `protected` contract
allows (tracking, registry, pyfunc): the edge every other module goes through.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_layers_hold_and_no_package_has_an_import_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    from importlinter import cli

    # import-linter configures logging with dictConfig, which disables every logger that already exists
    # (the pipeline's own among them): put them back so later tests still see the pipeline's notices.
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    enabled = [lg for lg in loggers if not lg.disabled]
    try:
        status = cli.lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    finally:
        for lg in enabled:
            lg.disabled = False
    assert status == cli.EXIT_STATUS_SUCCESS, capsys.readouterr().out


def test_every_module_of_the_package_has_a_layer(contracts: list[dict]) -> None:
    """A module left out of the layers would be free to import anything; every one must be placed."""
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    graph = grimp.build_graph("pipeline", exclude_type_checking_imports=True)
    children = graph.find_children("pipeline")
    assert sorted(children - placed) == []
    assert sorted(placed - children) == []  # no layer names a module that is gone


def test_the_layer_check_catches_an_upward_import() -> None:
    """The contract is not vacuous: an io module importing the CLI is reported."""
    graph = grimp.build_graph("pipeline", exclude_type_checking_imports=True)
    graph.add_import(importer="pipeline.io.jsonl", imported="pipeline.cli")
    illegal = graph.find_illegal_dependencies_for_layers(layers=["pipeline.cli", "pipeline.io"], containers=None)
    assert {(d.importer, d.imported) for d in illegal} == {("pipeline.io", "pipeline.cli")}


def test_mlflow_is_imported_only_at_the_edge(contracts: list[dict]) -> None:
    """The protected contract's allow-list is what the graph shows: the edge modules import mlflow (so the
    contract sees it) and nothing else does."""
    allowed = set(next(c for c in contracts if c["type"] == "protected")["allowed_importers"])
    graph = grimp.build_graph(
        "pipeline", include_external_packages=True, exclude_type_checking_imports=True, cache_dir=None
    )
    importers = graph.find_modules_that_directly_import("mlflow")
    assert {"pipeline.tracking", "pipeline.registry", "pipeline.pyfunc"} <= importers
    assert sorted(importers - allowed) == []
