"""Keys the settings model does not know, each with the nearest one it does.

A typo must never leave a default in force without a word. An unknown key in the TOML file is
an error (the file is the administrator's own, and wrong); an unknown ``GUARD_*`` environment
variable is a warning, logged and audited in ``config.loaded``, because a container's
environment also carries variables meant for other programs. Both are found here by walking
the model, so every section and key the model gains is known at once.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

ENV_PREFIX = "GUARD_"
ENV_DELIMITER = "__"
#: ``GUARD_*`` variables the guard reads that are not settings (``GUARD_CONFIG`` names the file).
NOT_SETTINGS = frozenset({"GUARD_CONFIG"})


@dataclass(frozen=True)
class UnknownKey:
    """A key or variable nobody reads, and the nearest valid one (None when nothing is close)."""

    name: str
    suggestion: str | None = None


def _nearest(name: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it holds a list of them (``tuple[Model, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = get_origin(annotation)
    if origin is tuple:
        inner = get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            model, many = _model_of(arg)
            if model is not None:
                return model, many
    return None, False


def unknown_file_keys(data: Mapping[str, Any], model: type[BaseModel], path: str = "") -> list[UnknownKey]:
    """Every key of ``data`` (a parsed TOML file) that ``model`` has no field for, as ``section.key`` paths.

    Entries of a list of tables are named by their position: ``sources[0].hots``.
    """
    found: list[UnknownKey] = []
    fields = model.model_fields
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            near = _nearest(key, fields)
            found.append(UnknownKey(where, f"{path}.{near}" if path and near else near))
            continue
        inner, many = _model_of(fields[key].annotation)
        if inner is None:
            continue
        if many and isinstance(value, list):
            for index, entry in enumerate(value):
                if isinstance(entry, Mapping):
                    found += unknown_file_keys(entry, inner, f"{where}[{index}]")
        elif not many and isinstance(value, Mapping):
            found += unknown_file_keys(value, inner, where)
    return found


def environment_names(model: type[BaseModel]) -> frozenset[str]:
    """Every variable that sets part of ``model``: ``GUARD_<SECTION>`` (JSON) and ``GUARD_<SECTION>__<KEY>``."""
    names = set(NOT_SETTINGS)
    for section, field in model.model_fields.items():
        names.add(f"{ENV_PREFIX}{section}".upper())
        inner, many = _model_of(field.annotation)
        if inner is not None and not many:  # a list of tables is given whole, as JSON
            names.update(f"{ENV_PREFIX}{section}{ENV_DELIMITER}{key}".upper() for key in inner.model_fields)
    return frozenset(names)


def unknown_environment(environ: Mapping[str, str], model: type[BaseModel]) -> list[UnknownKey]:
    """Every ``GUARD_*`` variable of ``environ`` that sets nothing in ``model`` (upper or lower case), sorted."""
    known = environment_names(model)
    return [
        UnknownKey(name, _nearest(name.upper(), known))
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    ]
