"""Fixtures shared across test modules: built once per test session, from constructed data only.

- `micro_backbone`: a 2-layer, 32-wide BERT pretrained for 30 steps on constructed documents (the backbone
  of every BERT and ensemble test);
- `constructed_documents`: answer-like documents made of constructed paragraphs (a factory: n, seed).

Test tiers (markers registered in pyproject.toml): the default run leaves out `slow` (real training,
subprocesses, SIGKILL), `server` (a real server on 127.0.0.1) and `spark`; scripts/test.sh runs the default
tier first, then the marked ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the shared helper modules (micro_bert, mlflow_server, ...)

from labelled_examples import make_documents
from micro_bert import pretrain_micro_backbone

from pipeline.schema import Document


@pytest.fixture(scope="session")
def micro_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain_micro_backbone(tmp_path_factory.mktemp("micro-backbone"), steps=30)


@pytest.fixture(scope="session")
def constructed_documents() -> Callable[..., list[Document]]:
    return make_documents
