"""From a model spec in the config to an unfitted model: the one place that maps `kind` to a class."""

from __future__ import annotations

from pipeline.config import BertSpec, EnsembleSpec, KeywordSpec, MajoritySpec, TfidfSpec
from pipeline.models.base import SentenceModel


def build_model(spec: MajoritySpec | KeywordSpec | TfidfSpec | BertSpec | EnsembleSpec) -> SentenceModel:
    """An unfitted model for `spec`; torch is imported only for a BERT spec (or an ensemble holding one)."""
    from pipeline.models import baselines

    if isinstance(spec, MajoritySpec):
        return baselines.MajorityModel.from_spec(spec)
    if isinstance(spec, KeywordSpec):
        return baselines.KeywordModel.from_spec(spec)
    if isinstance(spec, TfidfSpec):
        return baselines.TfidfModel.from_spec(spec)
    if isinstance(spec, BertSpec):
        from pipeline.models.bert import BertTwoHeadModel

        return BertTwoHeadModel.from_spec(spec)
    if isinstance(spec, EnsembleSpec):
        from pipeline.models.ensemble import EnsembleModel

        return EnsembleModel.from_spec(spec)
    raise TypeError(f"build_model: no model for spec {type(spec).__name__}")
