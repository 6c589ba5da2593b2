"""Where the option unions sit in :class:`~ccsam.config.schema.RunConfig`, read from the schema itself.

``UNIONS["stage1.optimizer"]`` is the union at that dotted key: its tag field (``name``), its members by
tag and the default member. Overrides, preset merging, key checks and the migration of old keys use it,
so a new member or union needs no change outside :mod:`ccsam.config.choices`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ccsam.config.base import discriminator_of
from ccsam.config.schema import RunConfig

__all__ = ["UNIONS", "UnionField", "section_model", "union_fields"]


@dataclass(frozen=True)
class UnionField:
    """A discriminated-union field at ``path``: ``members`` maps each tag to its member class."""

    path: str
    field: FieldInfo
    discriminator: str
    members: dict[str, type[BaseModel]]

    @property
    def default_tag(self) -> str:
        """The tag of the field's default member."""
        return str(getattr(self.field.default, self.discriminator))

    @property
    def tags(self) -> tuple[str, ...]:
        """Every member's tag, in declaration order."""
        return tuple(self.members)

    def fields(self) -> list[str]:
        """The fields of all members (the tag first), each once, in declaration order."""
        out: list[str] = []
        for member in self.members.values():
            out += [name for name in member.model_fields if name not in out]
        return out

    def tags_with(self, name: str) -> tuple[str, ...]:
        """The tags of the members that have the field ``name``."""
        return tuple(tag for tag, member in self.members.items() if name in member.model_fields)


def _members(field: FieldInfo, disc: str) -> dict[str, type[BaseModel]]:
    members: dict[str, type[BaseModel]] = {}
    for cls in get_args(field.annotation):
        members[str(cls.model_fields[disc].default)] = cls
    return members


def union_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, UnionField]:
    """Every discriminated-union field under ``model`` by dotted key (members' own unions included)."""
    out: dict[str, UnionField] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        disc = discriminator_of(field)
        if disc is not None:
            union = UnionField(dotted, field, disc, _members(field, disc))
            out[dotted] = union
            for member in union.members.values():
                out.update(union_fields(member, f"{dotted}."))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(union_fields(field.annotation, f"{dotted}."))
    return out


#: The unions of :class:`RunConfig` by dotted key (``stage1.optimizer``, ``stage2.method``, ...).
UNIONS: dict[str, UnionField] = union_fields()


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The config section a plain (non-union) field holds, or ``None`` for a value field."""
    annotation = field.annotation
    if discriminator_of(field) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
