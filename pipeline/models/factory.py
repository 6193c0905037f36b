"""From a model spec in the config to an unfitted model (the registry of kinds maps `kind` to a class)."""

from pipeline.models.base import build_model

__all__ = ["build_model"]
