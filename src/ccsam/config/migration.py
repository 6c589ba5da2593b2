"""The keys the option unions replaced, in one table: user input that names one gets one line naming
its new key; a run folder written before the unions is migrated on load with the same table.

``MOVED_KEYS["stage1.rho"]`` says that ``stage1.rho`` is now ``stage1.optimizer.rho``; the members that
have the field (sam, asam, imbsam) are read from the schema. An entry whose field is the union's tag
(``stage1.radius_mode`` -> ``stage1.radius``) moved the choice itself. :data:`REMOVED_CHOICES` lists
choices that were folded into another (``fixed_rho`` was ``dir_only`` under a second name), and
:data:`RENAMED_TAGS` the unions whose tag field had another name (``stage1.radius`` was tagged ``mode``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccsam.config.unions import UNIONS

__all__ = [
    "MOVED_KEYS",
    "REMOVED_CHOICES",
    "RENAMED_TAGS",
    "MovedKey",
    "migrate_key",
    "migrate_override",
    "migrate_tree",
    "moved_key_message",
    "removed_choice_message",
    "renamed_tag_message",
]


@dataclass(frozen=True)
class MovedKey:
    """``old`` (a dotted key of the flat stage configs) now lives at ``union``'s member field ``field``."""

    old: str
    union: str
    field: str

    @property
    def tags(self) -> tuple[str, ...]:
        """The members of the union that hold the field."""
        return UNIONS[self.union].tags_with(self.field)

    @property
    def moves_choice(self) -> bool:
        """Whether the old key was the choice itself (it maps to the union's tag)."""
        return self.field == UNIONS[self.union].discriminator

    @property
    def new(self) -> str:
        """The dotted key that replaces ``old`` (the union itself for a moved choice)."""
        return self.union if self.moves_choice else f"{self.union}.{self.field}"


def _flattening(stage: str) -> tuple[MovedKey, ...]:
    union = f"{stage}.flattening"
    return (
        MovedKey(f"{stage}.gp_radius", union, "radius"),
        MovedKey(f"{stage}.gp_alpha", union, "alpha"),
        MovedKey(f"{stage}.mp_bound", union, "bound"),
        MovedKey(f"{stage}.mp_copies", union, "copies"),
    )


#: Every key the unions replaced, by its old dotted name.
MOVED_KEYS: dict[str, MovedKey] = {
    m.old: m
    for m in (
        MovedKey("stage1.rho", "stage1.optimizer", "rho"),
        MovedKey("stage1.asam_eta", "stage1.optimizer", "eta"),
        MovedKey("stage1.imbsam_tail_threshold", "stage1.optimizer", "tail_threshold"),
        MovedKey("stage1.radius_mode", "stage1.radius", "name"),
        MovedKey("stage1.ablation_rho", "stage1.radius", "rho"),
        *_flattening("stage1"),
        *_flattening("stage2"),
        MovedKey("stage2.up_limit", "stage2.method", "up_limit"),
        MovedKey("stage2.div", "stage2.method", "div"),
        MovedKey("stage2.step", "stage2.method", "feature_step"),
        MovedKey("stage2.loss", "stage2.method", "loss"),
        MovedKey("stage2.reinit_head", "stage2.method", "reinit_head"),
    )
}

#: (union key, removed choice) -> the choice that replaces it with the same numbers.
REMOVED_CHOICES: dict[tuple[str, str], str] = {("stage1.radius", "fixed_rho"): "dir_only"}

#: union key -> the old name of its tag field (now ``name``, as every union's).
RENAMED_TAGS: dict[str, str] = {"stage1.radius": "mode"}


def moved_key_message(old: str) -> str:
    """One line naming the new key of ``old`` (a key of :data:`MOVED_KEYS`)."""
    m = MOVED_KEYS[old]
    if m.moves_choice:
        return f"{old} moved: write {m.union}={'|'.join(m.tags)}"
    return f"{old} moved: write {m.union}.{m.field} (with {m.union}={'|'.join(m.tags)})"


def renamed_tag_message(union: str) -> str:
    """One line naming the new tag field of ``union`` (a key of :data:`RENAMED_TAGS`)."""
    tags = "|".join(UNIONS[union].tags)
    return (f"{union}.{RENAMED_TAGS[union]} was renamed: write {union}.name (or {union}={tags}, "
            f"or {{name: ..., ...}} in YAML)")


def removed_choice_message(union: str, tag: str) -> str:
    """One line naming the choice that replaced ``union=tag`` (a key of :data:`REMOVED_CHOICES`)."""
    kept = REMOVED_CHOICES[(union, tag)]
    return f"{union}={tag} was removed (the same formula as {kept}): write {union}={kept}"


def migrate_key(dotted: str) -> str:
    """The new name of a dotted key recorded by the flat-config version (``stage2.up_limit`` ->
    ``stage2.method.up_limit``, ``stage2.loss.options.eps_head`` -> ``stage2.method.loss.options.eps_head``);
    other keys are returned unchanged. For records such as a study's searched keys, not for user input."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        moved = MOVED_KEYS.get(".".join(parts[:end]))
        if moved is not None:
            return ".".join([moved.new, *parts[end:]])
    return dotted


def migrate_override(text: str) -> str:
    """``KEY=VALUE`` with :func:`migrate_key` applied to ``KEY``."""
    key, sep, value = text.partition("=")
    return f"{migrate_key(key.strip())}{sep}{value}" if sep else text


def _section(tree: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def migrate_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A config tree written before the unions (``stage1.optimizer: sam`` + ``stage1.rho``, ...) in the
    union form (``stage1.optimizer: {name: sam, rho: ...}``); a tree in the union form is returned equal.

    Each old key moves into its union's chosen member when that member has the field and is dropped
    otherwise (old run configs hold every field, the unused ones at their defaults); a removed choice
    becomes the one that replaced it, and a renamed tag field (``stage1.radius.mode``) is ``name``.
    """
    out: dict[str, Any] = _copy(tree)
    for union_key, old_tag in RENAMED_TAGS.items():
        member = _section(out, union_key)
        if member is not None and old_tag in member:
            member.setdefault(UNIONS[union_key].discriminator, member.pop(old_tag))
    for m in MOVED_KEYS.values():
        parent, _, leaf = m.old.rpartition(".")
        section = _section(out, parent)
        if section is None or leaf not in section:
            continue
        value = section.pop(leaf)
        union, key = UNIONS[m.union], m.union.rpartition(".")[2]
        member = _member(section.get(key), m.union)
        if m.moves_choice:
            member = _member(str(value), m.union)
        elif m.field in getattr(union.members.get(str(member[union.discriminator])), "model_fields", {}):
            member[m.field] = value
        section[key] = member
    return out


def _member(value: Any, union_key: str) -> dict[str, Any]:
    """``value`` of the union at ``union_key`` as a mapping with its tag, a removed tag replaced."""
    union = UNIONS[union_key]
    member = {union.discriminator: value} if isinstance(value, str) else dict(value or {})
    tag = str(member.setdefault(union.discriminator, union.default_tag))
    member[union.discriminator] = REMOVED_CHOICES.get((union_key, tag), tag)
    return member


def _copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
