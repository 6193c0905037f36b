"""Sentence-level labelling of Swedish counter-terrorism policy texts."""

__version__ = "0.1.0"
