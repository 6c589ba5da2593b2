"""The base of every config section, and the string shorthand of the option unions.

A field declared as a discriminated union (``Annotated[A | B, Field(discriminator="name")]``) accepts,
besides a mapping ``{name: sam, rho: 0.1}``, the member's name alone (``sam``: that member with its
defaults) and a mapping without the name (the field's default member, e.g. ``{rho: 0.5}`` on top of a
default). :func:`as_member` is that rule; :class:`Section` applies it before validation, and
:mod:`ccsam.config.io` applies the same rule to presets and overrides before they are merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo

__all__ = ["Section", "as_member", "discriminator_of", "registered"]


def discriminator_of(field: FieldInfo) -> str | None:
    """The name of the tag field of a discriminated-union field (``"name"``), else ``None``."""
    disc = field.discriminator
    return disc if isinstance(disc, str) else None


def as_member(value: Any, field: FieldInfo) -> Any:
    """``value`` of a union ``field`` as a member mapping: ``"sam"`` -> ``{name: sam}``; a mapping without
    the tag gets the tag of the field's default member; anything else is returned unchanged."""
    disc = discriminator_of(field)
    if disc is None:
        return value
    if isinstance(value, str):
        return {disc: value}
    if isinstance(value, Mapping) and disc not in value and isinstance(field.default, BaseModel):
        return {disc: getattr(field.default, disc), **value}
    return value


def registered(kind: str, name: str, registry: Mapping[str, object]) -> str:
    """``name`` if it is a key of ``registry``, else a ValueError listing the choices."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}")
    return name


class Section(BaseModel):
    """Base of every config section: unknown keys are errors and values are immutable once built; a
    union field accepts its member's name alone (:func:`as_member`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _union_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            if name in out:
                out[name] = as_member(out[name], field)
        return out
