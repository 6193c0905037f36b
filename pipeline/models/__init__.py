"""Sentence models behind one interface; the kinds are registered with their specs in `pipeline.training_config`."""

from pipeline.models.base import SentenceModel, build_model, load_model

__all__ = ["SentenceModel", "build_model", "load_model"]
