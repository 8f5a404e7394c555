"""Frozen-dataclass configs and ``section.key=value`` overrides.

Every experiment config is a frozen dataclass whose fields are either plain
values (int, float, bool, str, tuples of those) or nested frozen dataclasses
(the sections: ``data``, ``model``, ``train`` ...).  :func:`apply_overrides`
turns strings such as ``"train.epochs=20"`` into a new config, checking each
key against the dataclass fields and each value against the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from slbjax.errors import ConfigError


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a config, e.g. ``["data.horizon", "train.epochs", ...]``."""
    keys = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if _is_dataclass_type(hints[f.name]):
            keys.extend(valid_keys(getattr(cfg, f.name), f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def parse_value(text: str, tp: Any) -> Any:
    """Parses ``text`` as a value of type ``tp`` (raises ValueError if it is not one)."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if str(choice) == text.strip():
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {text!r}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if text.strip().lower() in ("none", "null") and len(args) < len(get_args(tp)):
            return None
        errors = []
        for a in args:
            try:
                return parse_value(text, a)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        args = get_args(tp)
        items = [t for t in (s.strip() for s in text.strip().strip("()[]").split(",")) if t]
        elem = args[0] if args else str
        return tuple(parse_value(t, elem) for t in items)
    if tp is bool:
        return _parse_bool(text)
    if tp is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise ValueError(f"cannot parse a value of type {tp}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + "/".join(map(str, get_args(tp)))
    if get_origin(tp) is not None:  # tuple[int, ...], int | None
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _get(cfg: Any, key: str) -> Any:
    """The value of the dotted ``key``."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def describe(cfg: Any) -> list[tuple[str, str, str]]:
    """``(dotted key, type, value as --set takes it)`` of every key of a config."""
    return [(key, _type_name(field_type(cfg, key)), as_text(_get(cfg, key))) for key in valid_keys(cfg)]


def override(cfg: Any, key: str, text: str) -> Any:
    """Returns ``cfg`` with the dotted ``key`` set to ``text`` parsed by field type."""
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        raise KeyError(key)
    tp = hints[head]
    if _is_dataclass_type(tp):
        if not rest:
            raise KeyError(key)
        return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, text)})
    if rest:
        raise KeyError(key)
    return dataclasses.replace(cfg, **{head: parse_value(text, tp)})


def replace(cfg: Any, changes: dict[str, Any]) -> Any:
    """``cfg`` with the dotted keys of ``changes`` set to their (typed) values.

    For experiment modules that build the full config and shrink it for a
    smoke run at the end: ``replace(cfg, {"train.epochs": 3, "model.hidden": 16})``.
    Each value is checked against the field's type by its text form.

    Raises:
      ConfigError: unknown key or a value of the wrong type.
    """
    return apply_overrides(cfg, [f"{k}={as_text(v)}" for k, v in changes.items()])


def as_text(value: Any) -> str:
    """The override text of a typed value (``True`` -> ``true``, ``(1, 2)`` -> ``1,2``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(as_text(v) for v in value)
    return str(value)


def field_type(cfg: Any, key: str) -> Any:
    """Type annotation of the dotted ``key`` in ``cfg``."""
    head, _, rest = key.partition(".")
    tp = typing.get_type_hints(type(cfg))[head]
    return field_type(getattr(cfg, head), rest) if rest else tp


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Applies ``"section.key=value"`` strings in order.

    A config class may name presets, ``PRESETS = {key: {value: {key2: value2, ...}}}``:
    setting ``key`` to ``value`` also sets the keys of that preset (e.g.
    ``train.recipe=fast``); overrides after it win.

    Raises:
      ConfigError: naming the bad override and the nearest valid keys, or
        naming the expected type when the value does not parse.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            cfg = override(cfg, key, text)
            preset = getattr(cfg, "PRESETS", {}).get(key, {}).get(as_text(_get(cfg, key)), {})
            for k, v in preset.items():  # keys set after this one override the preset's
                cfg = override(cfg, k, as_text(v))
        except KeyError:
            keys = valid_keys(cfg)
            near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise ConfigError(f"unknown config key {key!r}; {hint}`slbjax show EXPERIMENT` lists "
                              f"the {len(keys)} valid keys") from None
        except ValueError as e:
            tp = field_type(cfg, key)
            raise ConfigError(
                f"bad value for {key} (type {_type_name(tp)}): {e}"
            ) from None
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict:
    """Nested plain-dict form of a config (tuples become lists), with the class names."""
    out: dict[str, Any] = {"__class__": type(cfg).__name__}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def from_dict(cls: type, data: dict) -> Any:
    """Inverse of :func:`to_dict` for config class ``cls``."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        v = data[f.name]
        if _is_dataclass_type(tp):
            v = from_dict(tp, v)
        elif get_origin(tp) is tuple:
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)
