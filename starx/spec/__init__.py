"""Experiment specs: typed schema, YAML loading with dotted overrides, validation, derived numbers."""

from starx.spec.load import SpecError, derive, load_spec, load_typed, validate
from starx.spec.schema import ExperimentSpec

__all__ = ["ExperimentSpec", "SpecError", "derive", "load_spec", "load_typed", "validate"]
