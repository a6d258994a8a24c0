"""Validated manifest specs as JSON and back, without validating again: what the parse cache stores.

Validating 10,000 documents with pydantic, and building the models' validators at start-up, cost
more than reading the cached data itself. A validated model is therefore stored as its pickle
state (what pydantic's ``__getstate__`` holds: field values and which fields were set; manifest
models have no extras and no private attributes) in JSON, and rebuilt the way unpickling does:
the same values of the same types, so the same model, with no validator involved.

Exactness is checked on the models' field types, once per class, not on every value: a model may
be stored only if each of its fields holds JSON's own types (str, int, float, bool, None, lists,
dicts with text keys, TypedDicts of those, ``Any``, text literals) or other such models. ``Any`` holds what the YAML
reader produced, which is exactly those types. Values JSON cannot hold (an integer beyond 64
bits) make the encoder refuse the file. A class whose fields do not qualify (a tuple, an enum, a
date...) is never stored, so a new field type can make the cache miss, never differ.

An encoded model is ``[MARK, class, fields, fields_set, nested]`` where ``nested`` names the
fields holding models (directly or in lists). MARK starts with a NUL character, which no manifest
text can hold (the YAML reader refuses it), so no data can be mistaken for a model. Only the model
classes of manifests can be named.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union

import typing_extensions
from pydantic import BaseModel

MARK = "\x00model"
_JSON_ATOMS = (str, int, float, bool, type(None))


class Uncacheable(Exception):
    """The value would not come back from JSON exactly as it is."""


def _all_models() -> list[type[BaseModel]]:
    from reconciler.manifests.models import MANIFEST_MODELS

    return list(MANIFEST_MODELS.values())


@cache
def _classes() -> dict[str, type[BaseModel]]:
    """Every model class a manifest can hold, by name: the envelopes and what their fields refer to."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[Any] = _all_models()
    while pending:
        item = pending.pop()
        if not (isinstance(item, type) and issubclass(item, BaseModel)):
            pending += typing.get_args(item)  # Optional, Union, list[...], Annotated[...]
        elif item not in found.values():
            name = f"{item.__module__}.{item.__qualname__}"
            if name in found:
                raise RuntimeError(f"two manifest models are named {name}")  # pragma: no cover
            found[name] = item
            pending += [f.annotation for f in item.__pydantic_fields__.values()]
    return found


@cache
def _names() -> dict[type[BaseModel], str]:
    return {cls: name for name, cls in _classes().items()}


def _shape(annotation: Any) -> tuple[bool, bool]:
    """(values of this type come back from JSON exactly, they can hold models)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation in _JSON_ATOMS:
        return True, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _layout(annotation) is not None, True
    if origin is Annotated:
        return _shape(args[0])
    if origin is Literal:
        return all(type(a) in _JSON_ATOMS and type(a) is not float for a in args), False
    if origin in (Union, types.UnionType, list):
        shapes = [_shape(a) for a in args] or [(True, False)]
        return all(ok for ok, _ in shapes), any(models for _, models in shapes)
    if origin is dict and args and args[0] is str:
        ok, models = _shape(args[1])
        return ok and not models, False
    if typing_extensions.is_typeddict(annotation):  # validated into a plain dict with text keys (either module's TypedDict)
        shapes = [_shape(t) for t in typing.get_type_hints(annotation, include_extras=True).values()]
        return all(ok and not models for ok, models in shapes), False
    return False, False


@cache
def _layout(cls: type[BaseModel]) -> tuple[str, ...] | None:
    """The fields of ``cls`` that can hold models, or None when ``cls`` cannot be stored exactly."""
    if cls.model_config.get("extra") != "forbid" or cls.__private_attributes__:
        return None
    nested = []
    for name, info in cls.__pydantic_fields__.items():
        ok, models = _shape(info.annotation)
        if not ok:
            return None
        if models:
            nested.append(name)
    return tuple(nested)


def _encode_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return encode(value)
    if value.__class__ is list:
        return [_encode_value(v) for v in value]
    return value


@cache
def _storable() -> dict[type[BaseModel], tuple[str, tuple[str, ...]]]:
    """Model class -> (its name, the fields that can hold models), for the classes that can be stored."""
    out = {}
    for name, cls in _classes().items():
        layout = _layout(cls)
        if layout is not None:
            out[cls] = (name, layout)
    return out


def encode(model: BaseModel) -> list[Any]:
    """A validated model as JSON data; raises Uncacheable."""
    found = _storable().get(model.__class__)
    if found is None:
        raise Uncacheable(f"{type(model).__name__} cannot be stored exactly")
    name, layout = found
    values = model.__dict__
    if not layout:
        return [MARK, name, values, sorted(model.__pydantic_fields_set__), []]
    fields = dict(values)
    nested = [f for f in layout if values[f] is not None]
    for f in nested:
        fields[f] = _encode_value(values[f])
    return [MARK, name, fields, sorted(model.__pydantic_fields_set__), nested]


def _decode_value(value: Any) -> Any:
    if value.__class__ is list:
        if value and value[0] == MARK:
            return decode(value)
        return [_decode_value(v) for v in value]
    return value


_set = object.__setattr__


def decode(data: Any) -> BaseModel:
    """The model ``encode`` gave ``data`` for; raises ValueError when ``data`` is not such an encoding."""
    if data.__class__ is not list or len(data) != 5 or data[0] != MARK:
        raise ValueError("not an encoded manifest model")
    _, name, fields, fields_set, nested = data
    cls = _classes().get(name)
    if cls is None or fields.__class__ is not dict or fields.keys() != cls.__pydantic_fields__.keys():
        raise ValueError(f"not an encoded {name}")
    for field in nested:
        fields[field] = _decode_value(fields[field])
    model = cls.__new__(cls)
    # what BaseModel.__setstate__ (unpickling) does, without the call
    _set(model, "__pydantic_fields_set__", set(fields_set))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    _set(model, "__dict__", fields)
    return model
