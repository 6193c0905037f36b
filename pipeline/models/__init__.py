"""Sentence models behind one interface; importing this package registers the built-in kinds."""

from pipeline.models.base import SentenceModel, load_model, register_kind


def _baselines(name: str):
    def loader() -> type:
        from pipeline.models import baselines

        return getattr(baselines, name)

    return loader


def _bert() -> type:
    from pipeline.models.bert import BertTwoHeadModel

    return BertTwoHeadModel


def _ensemble() -> type:
    from pipeline.models.ensemble import EnsembleModel

    return EnsembleModel


register_kind("majority", _baselines("MajorityModel"))
register_kind("keyword", _baselines("KeywordModel"))
register_kind("tfidf", _baselines("TfidfModel"))
register_kind("bert", _bert)
register_kind("ensemble", _ensemble)

__all__ = ["SentenceModel", "load_model", "register_kind"]
