"""The one registry of model kinds: its config spec, its pip requirements and where its class lives.

The config's model unions, `build_model`, `load_model` and the pyfunc's pip requirements all read this
registry, so a new kind is added by one `register` call. The class is named by a dotted path and imported
only when a model of that kind is built or loaded, so torch is imported only for BERT models.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class ModelKind:
    """A registered kind; `member` says whether an ensemble may hold it."""

    kind: str
    spec: type[BaseModel]
    requirements: tuple[str, ...]
    loader: str  # "package.module:ClassName"
    member: bool = True

    def model_class(self) -> type:
        """Import the kind's model class (lazily: the first model of this kind pays the import)."""
        module, _, name = self.loader.partition(":")
        return getattr(importlib.import_module(module), name)


_KINDS: dict[str, ModelKind] = {}


def register(
    kind: str, spec: type[BaseModel], requirements: tuple[str, ...] | list[str], loader: str, *, member: bool = True
) -> None:
    """Make a model kind known to the config, the factory, loading and the pyfunc's requirements."""
    if ":" not in loader:
        raise ValueError(f"register({kind!r}): loader must be 'module:Class', got {loader!r}")
    _KINDS[kind] = ModelKind(kind, spec, tuple(requirements), loader, member)


def get(kind: str) -> ModelKind:
    """The registered kind, or a clear error listing the known ones."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(_KINDS)}") from None


def names() -> list[str]:
    return list(_KINDS)


def spec_union(*, members_only: bool = False) -> Any:
    """A pydantic discriminated union (on `kind`) of the registered specs, for config fields."""
    specs = tuple(k.spec for k in _KINDS.values() if k.member or not members_only)
    if len(specs) == 1:
        return specs[0]
    return Annotated[Union[specs], Field(discriminator="kind")]  # noqa: UP007  (a runtime tuple of types)


def requirements(*kinds: str) -> list[str]:
    """The pip requirement names of the given kinds, each once, in first-seen order."""
    return list(dict.fromkeys(name for kind in kinds for name in get(kind).requirements))
