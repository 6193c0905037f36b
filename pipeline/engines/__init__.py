"""Labelling engines other than the local one (the local engine is `pipeline.label`)."""
