"""YAML presets and dotted overrides to a validated :class:`RunConfig`, and back to YAML.

Errors are :class:`ConfigError` with one line naming the key, the problem and, for unknown keys, the
closest valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ccsam.config.base import as_member
from ccsam.config.migration import (
    MOVED_KEYS,
    REMOVED_CHOICES,
    RENAMED_TAGS,
    migrate_tree,
    moved_key_message,
    removed_choice_message,
    renamed_tag_message,
)
from ccsam.config.schema import RunConfig
from ccsam.config.unions import UNIONS, UnionField, section_model
from ccsam.errors import ConfigError

PRESET_PACKAGE = "ccsam.presets"
DEFAULT_PRESET = "digits-lt"


def known_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """All dotted keys of a config model, sections and leaves (``stage1``, ``stage1.lr``, ...); a union
    lists the fields of all its members (``stage1.optimizer.rho``, ``stage1.optimizer.eta``, ...)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        union = UNIONS.get(dotted)
        members = list(union.members.values()) if union is not None else [section_model(field)]
        for member in members:
            if member is not None:
                keys.extend(k for k in known_keys(member, prefix=f"{dotted}.") if k not in keys)
    return keys


def _unknown_key_message(key: str) -> str:
    if key in MOVED_KEYS:
        return moved_key_message(key)
    union, _, leaf = key.rpartition(".")
    if RENAMED_TAGS.get(union) == leaf:
        return renamed_tag_message(union)
    candidates = known_keys()
    parent, _, leaf = key.rpartition(".")
    siblings = [c for c in candidates if c.rpartition(".")[0] == parent] if parent in candidates else []
    # within a known section, its own keys (`eval.foo` is not "eval"); else the whole schema
    close = difflib.get_close_matches(key, siblings or candidates, n=3, cutoff=0.6)
    close += [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in close][:3]
    if close:
        hint = f"; did you mean {', '.join(close)}?"
    elif siblings:
        names = [c.rpartition(".")[2] for c in siblings]
        hint = f"; {parent} has {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
    else:
        hint = "; `ccsam train --help` lists the sections"
    return f"unknown config key '{key}'{hint}"


def _check_member(value: Any, union: UnionField) -> None:
    """The union's value names a member (or removed choice: its replacement) and holds only its fields."""
    dotted = union.path
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key '{dotted}' takes one of {'|'.join(union.tags)} (or a mapping with "
                          f"'{union.discriminator}'), got {value!r}")
    tag = value.get(union.discriminator)
    if isinstance(tag, str) and (dotted, tag) in REMOVED_CHOICES:
        raise ConfigError(removed_choice_message(dotted, tag))
    if not isinstance(tag, str) or tag not in union.members:  # a mapping or list as the name: unhashable
        raise ConfigError(f"unknown {dotted} {tag!r}; choose one of {', '.join(union.tags)}")
    member = union.members[tag]
    unknown = [key for key in value if key not in union.fields()]
    if unknown:  # before the other members' fields: `mode: dir_only, rho: 0.1` is about `mode`
        raise ConfigError(_unknown_key_message(f"{dotted}.{unknown[0]}"))
    for key in value:
        if key not in member.model_fields:
            raise ConfigError(f"'{dotted}.{key}' is not a field of {dotted}={tag} (it belongs to "
                              f"{dotted}={'|'.join(union.tags_with(str(key)))})")
    _check_keys(value, member, prefix=f"{dotted}.")


def _check_keys(tree: Mapping[str, Any], model: type[BaseModel] = RunConfig, prefix: str = "") -> None:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        field = model.model_fields.get(key)
        if field is None:
            raise ConfigError(_unknown_key_message(dotted))
        union = UNIONS.get(dotted)
        if union is not None:
            _check_member(as_member(value, field), union)
            continue
        section = section_model(field)
        if section is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' is a section; set one of its keys, e.g. {dotted}.<key>=...")
            _check_keys(value, section, prefix=f"{dotted}.")


def _error_key(loc: tuple[int | str, ...]) -> str:
    """The dotted key of a pydantic error location, without the member tags pydantic inserts after a union
    (``stage1.optimizer.sam.rho`` -> ``stage1.optimizer.rho``)."""
    parts: list[str] = []
    skip = False
    for part in loc:
        if not skip:
            parts.append(str(part))
        skip = not skip and ".".join(parts) in UNIONS
    return ".".join(parts)


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    got = first.get("input")
    got_text = "" if isinstance(got, Mapping) else f" (got {got!r})"
    more = len(error.errors()) - 1
    tail = f"; and {more} more problem(s)" if more else ""
    where = _error_key(first["loc"])
    if not where:
        return f"invalid config: {message}{tail}"
    if first["type"] in ("tuple_type", "list_type"):  # `stage1.milestones=30`
        message += f"; write a list, e.g. {where}=[{got if not isinstance(got, (Mapping, list)) else '...'}]"
    return f"invalid value for '{where}': {message}{got_text}{tail}"


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value`` into the dotted key and the YAML-parsed value (``1e-3`` -> float)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value (e.g. stage1.lr=0.05)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    # YAML 1.1 reads `1e-3` as a string; the intent is plainly a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(ch in value for ch in ".eE") else int(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key.sub=value`` override set (keys checked later).

    The overrides are collected in order, then merged onto ``tree`` by :func:`merge_trees`, so a union's
    name and its fields may come in either order (``stage1.optimizer=sam stage1.optimizer.rho=0.1``).
    """
    overlay: dict[str, Any] = {}
    for text in overrides:
        key, value = parse_override(text)
        node, path = overlay, ""
        parts = key.split(".")
        for part in parts[:-1]:
            path = f"{path}{part}"
            child = node.get(part, {})
            if path in UNIONS:
                child = _union_value(child, UNIONS[path])
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{key}': '{part}' is a value, not a section")
            node[part], node, path = child, child, f"{path}."
        last, path = parts[-1], f"{path}{parts[-1]}"
        earlier = node.get(last)
        if path in UNIONS and isinstance(earlier, dict):
            tag = UNIONS[path].discriminator
            if isinstance(value, str):
                value = {**earlier, tag: value}  # the name after its fields
            elif isinstance(value, Mapping):
                chosen = earlier.get(tag) or _tag_in(tree, parts, UNIONS[path])  # fields alone: the preset's
                if value.get(tag, chosen) == chosen:
                    value = {**earlier, **value}  # more fields of the same choice
        node[last] = value
    return merge_trees(tree, overlay)


def _tag_in(tree: Mapping[str, Any], parts: list[str], union: UnionField) -> Any:
    """The choice the union at ``parts`` has in ``tree`` (a name, a mapping's tag, or the default)."""
    node: Any = tree
    for part in parts:
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        node = node.get(union.discriminator)
    return node if node is not None else union.default_tag


def _deep_copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def config_from_tree(tree: Mapping[str, Any]) -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`; any problem is one :class:`ConfigError` line."""
    _check_keys(tree)
    try:
        return RunConfig.model_validate(dict(tree))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def list_presets() -> list[tuple[str, str]]:
    """(name, description) of every preset shipped in the package, sorted by name."""
    out = []
    for entry in resources.files(PRESET_PACKAGE).iterdir():
        if entry.name.endswith(".yaml"):
            tree = yaml.safe_load(entry.read_text()) or {}
            if tree.get("abstract"):
                continue  # a base that only other presets build on
            out.append((entry.name[: -len(".yaml")], str(tree.get("description", ""))))
    return sorted(out)


def merge_trees(base: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Deep merge: sections merge key by key, values (lists included) in ``update`` replace ``base``'s.

    A union (``stage1.optimizer``) merges like a section while ``update`` keeps its member (or names
    none: ``{rho: 0.1}``); naming another member (``sgd`` or ``{name: sgd}``) replaces it, so the old
    member's fields do not carry over.
    """
    merged = _deep_copy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        union = UNIONS.get(dotted)
        old = merged.get(key)
        if union is not None and key in merged:
            value, old = _union_value(value, union), _union_value(old, union)
            disc = union.discriminator
            if isinstance(value, Mapping) and isinstance(old, dict) and value.get(disc, old.get(disc)) != old.get(disc):
                old = {}
        if isinstance(value, Mapping) and isinstance(old, dict):
            merged[key] = merge_trees(old, value, prefix=f"{dotted}.")
        else:
            merged[key] = _deep_copy(value) if isinstance(value, Mapping) else value
    return merged


def _union_value(value: Any, union: UnionField) -> Any:
    """A name alone as ``{tag: name}`` (other values as they are)."""
    return {union.discriminator: value} if isinstance(value, str) else value


def load_preset_tree(name_or_path: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The YAML tree of a shipped preset (by name) or of a YAML file (by path: a ``.yaml`` / ``.yml``
    name or one with a folder in it).

    A preset may name another with ``base: NAME``; it is loaded first and this one is merged on top, so
    a method preset states only how it differs from its data set's base (e.g. ``fmnist-lt-ldam-drw``).
    A file without ``base`` starts from the config's defaults (``ccsam presets --show`` of a file prints
    them all).
    """
    if name_or_path in _chain:
        raise ConfigError(f"preset '{name_or_path}' inherits from itself via {' -> '.join(_chain)}")
    tree = _read_preset(name_or_path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    return merge_trees(load_preset_tree(str(base), (*_chain, name_or_path)), tree)


def _read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    is_file_name = path.suffix in {".yaml", ".yml"} or "/" in name_or_path or "\\" in name_or_path
    if is_file_name:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "not found"
            raise ConfigError(f"preset file '{name_or_path}' {what}; give a YAML file of config sections, or "
                              "a shipped preset name (`ccsam presets` lists them)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"preset file '{name_or_path}' cannot be read ({exc.__class__.__name__}); "
                              "give a readable UTF-8 YAML file") from None
        if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
            raise ConfigError(f"preset file '{name_or_path}' is empty; write the settings it changes, e.g. "
                              "`base: digits-lt` and `stage1: {epochs: 5}`")
    else:
        entry = resources.files(PRESET_PACKAGE).joinpath(f"{name_or_path}.yaml")
        if not entry.is_file():
            names = [n for n, _ in list_presets()]
            close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(names)}"
            raise ConfigError(f"unknown preset '{name_or_path}'; {hint} (`ccsam presets` lists them)")
        text = entry.read_text()
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset '{name_or_path}' is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"preset '{name_or_path}' must be a YAML mapping of config sections")
    return tree


def resolve_config(preset: str | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Preset (default ``digits-lt``) + dotted overrides -> validated :class:`RunConfig`."""
    tree = load_preset_tree(preset or DEFAULT_PRESET)
    tree.pop("abstract", None)
    return config_from_tree(apply_overrides(tree, overrides))


def config_to_yaml(config: RunConfig) -> str:
    """The fully resolved config as YAML (every field, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def load_config_file(path: str | Path) -> RunConfig:
    """Read a resolved ``config.yaml`` written by :func:`config_to_yaml` (one written before the option
    unions is migrated: :func:`~ccsam.config.migration.migrate_tree`); one :class:`ConfigError` line
    naming the file if it is not valid YAML or not a valid config."""
    try:
        tree = yaml.safe_load(Path(path).read_text(errors="replace")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"'{path}' is not valid YAML{where}; restore the run's config.yaml (it was "
                          "edited or truncated)") from None
    if not isinstance(tree, Mapping):
        raise ConfigError(f"'{path}' is not a config (a YAML mapping of sections was expected); restore it")
    try:
        return config_from_tree(migrate_tree(tree))  # a run folder of the flat-config version migrates
    except ConfigError as exc:
        raise ConfigError(f"'{path}': {exc}") from None


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(a: RunConfig, b: RunConfig, ignore: Iterable[tuple[str, ...]] = ()) -> list[str]:
    """The dotted keys whose values differ between two resolved configs (a key one of them lacks, e.g. a
    field of another union member, counts as differing), sorted; keys under a path in ``ignore`` (e.g.
    :data:`~ccsam.config.schema.MACHINE_KEYS`) are left out."""
    ignored = {".".join(k) for k in ignore}

    def keep(key: str) -> bool:
        return not any(key == i or key.startswith(i + ".") for i in ignored)

    flat_a, flat_b = _flat(a.model_dump(mode="json")), _flat(b.model_dump(mode="json"))
    return sorted(
        k for k in flat_a.keys() | flat_b.keys()
        if keep(k) and flat_a.get(k, "<absent>") != flat_b.get(k, "<absent>")
    )
