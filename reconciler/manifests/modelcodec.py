"""Validated manifest specs as records, as JSON and back: what the parse cache stores.

A validated spec travels through the pipeline as a ``kinds.base.Record``: its model's fields, in
declaration order, as plain values (``to_record``, right after validation). The cache stores a
record as JSON, and ``decode`` gives the same record back with no model and no validator
involved, so a plan whose files are all in the cache imports neither pydantic nor the models
(``kinds.specs``): about a third of a no-change plan's start-up. Only encoding, which follows a
validation, looks at the models.

Exactness is checked on the models' field types, once per class, not on every value: a record may
be stored only if each of its model's fields holds JSON's own types (str, int, float, bool, None,
lists, dicts with text keys, TypedDicts of those, ``Any``, text literals) or other such models.
``Any`` holds what the YAML reader produced, which is exactly those types. Values JSON cannot
hold (an integer beyond 64 bits) make the encoder refuse the file. A class whose fields do not
qualify (a tuple, an enum, a date...) is never stored, so a new field type can make the cache
miss, never differ.

An encoded record is ``[MARK, model, fields, nested]`` where ``nested`` names the fields holding
records (directly or in lists). MARK starts with a NUL character, which no manifest text can hold
(the YAML reader refuses it), so no data can be mistaken for a record.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import Record, record_class

if TYPE_CHECKING:
    from pydantic import BaseModel

MARK = "\x00model"
_JSON_ATOMS = (str, int, float, bool, type(None))


class Uncacheable(Exception):
    """The value would not come back from JSON exactly as it is."""


# -- the models' shapes (only after a validation: these import pydantic) ------------------------


@cache
def _classes() -> dict[str, type[BaseModel]]:
    """Every model class a manifest can hold, by name: the specs and what their fields refer to."""
    import typing

    from pydantic import BaseModel

    from reconciler.kinds import KINDS

    found: dict[str, type[BaseModel]] = {}
    pending: list[Any] = [k.spec_model for k in KINDS]
    while pending:
        item = pending.pop()
        if not (isinstance(item, type) and issubclass(item, BaseModel)):
            pending += typing.get_args(item)  # Optional, Union, list[...], Annotated[...]
        elif item not in found.values():
            if item.__name__ in found:
                raise RuntimeError(f"two manifest models are named {item.__name__}")  # pragma: no cover
            found[item.__name__] = item
            pending += [f.annotation for f in item.__pydantic_fields__.values()]
    return found


def _shape(annotation: Any) -> tuple[bool, bool]:
    """(values of this type come back from JSON exactly, they can hold models)."""
    import types
    import typing
    from typing import Annotated, Literal, Union

    import typing_extensions
    from pydantic import BaseModel

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


@cache
def _storable() -> dict[str, tuple[str, ...]]:
    """Model name -> the fields that can hold models, for the models whose records can be stored."""
    out = {}
    for name, cls in _classes().items():
        layout = _layout(cls)
        if layout is not None:
            out[name] = layout
    return out


# -- model -> record (after validation) -------------------------------------------------------


def to_record(model: BaseModel) -> Record:
    """A validated model as a record: the same values, nested models as records too. In a model
    that can be stored, models are found where ``encode`` looks for them (the fields its layout
    names, directly or in lists); in any other, anywhere in its values."""
    cls = type(model)
    layout = _layout(cls)
    fields = dict(model.__dict__)
    for name in fields if layout is None else layout:
        value = fields[name]
        if value is not None:
            fields[name] = _to_plain(value, layout is None)
    return record_class(cls.__name__)(fields)


def _to_plain(value: Any, everywhere: bool) -> Any:
    if value.__class__ in _JSON_ATOMS:
        return value
    if value.__class__ is list:
        return [_to_plain(v, everywhere) for v in value]
    if hasattr(type(value), "__pydantic_fields__"):
        return to_record(value)
    if not everywhere:
        return value
    if value.__class__ is dict:
        return {k: _to_plain(v, everywhere) for k, v in value.items()}
    if value.__class__ is tuple:
        return tuple(_to_plain(v, everywhere) for v in value)
    return value


# -- record <-> JSON data ---------------------------------------------------------------------


def encode(record: Record) -> list[Any]:
    """A record as JSON data; raises Uncacheable when its model's values might not come back exactly."""
    layout = _storable().get(record.model) if isinstance(record, Record) else None
    if layout is None:
        raise Uncacheable(f"{type(record).__name__} cannot be stored exactly")
    values = record.__dict__
    if not layout:
        return [MARK, record.model, values, []]
    fields = dict(values)
    nested = [f for f in layout if values[f] is not None]
    for f in nested:
        fields[f] = _encode_value(values[f])
    return [MARK, record.model, fields, nested]


def _encode_value(value: Any) -> Any:
    if isinstance(value, Record):
        return encode(value)
    if value.__class__ is list:
        return [_encode_value(v) for v in value]
    return value


def _decode_value(value: Any) -> Any:
    if value.__class__ is list:
        if value and value[0] == MARK:
            return decode(value)
        return [_decode_value(v) for v in value]
    return value


def decode(data: Any) -> Record:
    """The record ``encode`` gave ``data`` for; raises ValueError when ``data`` is not such an
    encoding. No model is consulted: the entry's checksum and key (which covers the models' code)
    already say it was written by this code for these bytes."""
    if data.__class__ is not list or len(data) != 4 or data[0] != MARK:
        raise ValueError("not an encoded manifest record")
    _, model, fields, nested = data
    if model.__class__ is not str or fields.__class__ is not dict or nested.__class__ is not list:
        raise ValueError("not an encoded manifest record")
    for field in nested:
        if field not in fields:
            raise ValueError(f"an encoded {model} has no field {field!r}")
        fields[field] = _decode_value(fields[field])
    return record_class(model)(fields)
