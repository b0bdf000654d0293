"""Checks a custom resource against a CRD's structural ``openAPIV3Schema`` as the apiserver does.

Covers the subset of structural schemas this project's CRDs use (see ``crds/*.yaml``):
``type`` (object, array, string, integer, number, boolean), ``properties``, ``required``,
``additionalProperties``, ``items``, ``enum``, ``pattern``, ``minLength``/``maxLength``
(Unicode characters), ``minimum``/``maximum`` (and their ``exclusive*`` flags), ``multipleOf``,
``minItems``/``maxItems``, ``minProperties``/``maxProperties``, ``format`` (``date-time``,
``date``; the number formats ``int32``/``int64``/``float``/``double`` check nothing beyond the
type, as on the apiserver), ``nullable``, ``default``, ``x-kubernetes-preserve-unknown-fields``,
``x-kubernetes-int-or-string`` and ``x-kubernetes-list-type`` (``map`` with
``x-kubernetes-list-map-keys``, ``set``). CEL rules (``x-kubernetes-validations``) are not
evaluated here (tests/test_crd.py does that with cel-python). Any other validation keyword
(``allOf``, ``anyOf``, ``oneOf``, ``not``, ``uniqueItems``, ``x-kubernetes-embedded-resource``,
...) raises ``UnsupportedSchema`` instead of being silently ignored.

The pipeline the apiserver runs on every write of a custom resource (``admit``):
1. prune: drop fields the schema does not declare (unless ``x-kubernetes-preserve-unknown-fields``
   or ``additionalProperties``); at the root ``apiVersion``, ``kind`` and ``metadata`` are kept
   as they are;
2. drop ``null`` values of non-nullable fields that have no default, then apply ``default``s
   (to absent fields and to non-nullable nulls);
3. validate; each failure is a ``Cause`` with the field path (``status.conditions[0].type``) and
   the message the apiserver puts in ``details.causes[]``.

Where this differs from the apiserver: a float is never an ``integer`` (the apiserver's
go-openapi validator accepts a float with an integral value below 2**53, e.g. ``3.0``); no
validation ratcheting (an update is refused for an invalid field it did not change, which
matters only after a CRD's schema got stricter); messages follow the apiserver's wording for
type, enum, required, pattern, length and count failures but are not byte-exact everywhere
(e.g. a duplicate map-list key prints as JSON, not Go's ``%#v``).
Importable on its own: ``from schema_check import validate, prune, load_crd_schema``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Cause",
    "UnsupportedSchema",
    "admit",
    "apply_defaults",
    "check_supported",
    "crd_schemas",
    "invalid_message",
    "load_crd_schema",
    "prune",
    "repo_crds",
    "validate",
]

CRDS_DIR = Path(__file__).resolve().parent.parent / "crds"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Schema = dict[str, Any]

# Keywords this module understands; anything else in a schema raises UnsupportedSchema.
_VALIDATING = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "pattern",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minItems", "maxItems", "minProperties", "maxProperties", "format",
        "nullable", "default", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
        "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    }
)  # fmt: skip
_DESCRIPTIVE = frozenset(
    {"description", "title", "example", "externalDocs", "x-kubernetes-validations", "x-kubernetes-map-type"}
)
# The formats the apiserver checks (and this module implements); the number formats check nothing.
_NUMBER_FORMATS = frozenset({"int32", "int64", "float", "double"})


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this checker does not implement."""


@dataclasses.dataclass(frozen=True)
class Cause:
    """One validation failure, as in a 422 Status's ``details.causes[]``."""

    field: str  # e.g. "status.connection.statusReason"; "" for the object itself
    message: str  # e.g. 'Invalid value: "number": status.x in body must be of type integer: "number"'
    reason: str = "FieldValueInvalid"  # FieldValueRequired, FieldValueNotSupported, ...

    def __str__(self) -> str:  # as the apiserver's field.Error prints: "<field>: <message>"
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_status_cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


# ---- loading ---------------------------------------------------------------------------------


def repo_crds() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the repository's ``crds/`` directory."""
    found = []
    for path in sorted([*CRDS_DIR.glob("*.yaml"), *CRDS_DIR.glob("*.yml")]):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                found.append(document)
    return found


def crd_schemas(crd: dict[str, Any]) -> dict[str, Schema | None]:
    """``{version name: openAPIV3Schema or None}`` for each served version of a CRD object."""
    spec = crd.get("spec") or {}
    shared = (spec.get("validation") or {}).get("openAPIV3Schema")  # v1beta1's top-level schema
    return {
        version["name"]: (version.get("schema") or {}).get("openAPIV3Schema", shared)
        for version in spec.get("versions") or []
        if version.get("served")
    }


def load_crd_schema(plural_or_path: str | Path, version: str | None = None) -> Schema:
    """The ``openAPIV3Schema`` of a CRD in the repository's ``crds/`` directory.

    ``plural_or_path``: a plural (``whatsappinstances``), a CRD name
    (``whatsappinstances.whatsapp-operator.io``) or the path of a CRD file. ``version``: which
    served version; by default the storage version (or the only served one).
    """
    crd = _find_crd(plural_or_path)
    served = crd_schemas(crd)
    if version is None:
        storage = [v["name"] for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
        version = storage[0] if storage else next(iter(served), None)
    schema = served.get(version) if version is not None else None
    if schema is None:
        raise LookupError(f"CRD {crd['metadata']['name']} serves no version {version!r} with a schema")
    check_supported(schema)
    return copy.deepcopy(schema)


def _find_crd(plural_or_path: str | Path) -> dict[str, Any]:
    text = str(plural_or_path)
    if isinstance(plural_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml", ".json")):
        path = Path(plural_or_path)
        path = path if path.exists() else CRDS_DIR / path
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                return document
        raise LookupError(f"no CustomResourceDefinition in {path}")
    for document in repo_crds():
        names = (document.get("spec") or {}).get("names") or {}
        if text in (document["metadata"]["name"], names.get("plural"), names.get("singular"), names.get("kind")):
            return document
    raise LookupError(f"no CRD named {text!r} in {CRDS_DIR}")


def check_supported(schema: Schema, path: str = "") -> None:
    """Raise ``UnsupportedSchema`` for a keyword this module would otherwise ignore."""
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"{path or '<root>'}: a schema must be an object")
    unknown = set(schema) - _VALIDATING - _DESCRIPTIVE
    if unknown:
        raise UnsupportedSchema(f"{path or '<root>'}: schema_check does not implement {sorted(unknown)}")
    fmt = schema.get("format")
    if fmt is not None and fmt not in _NUMBER_FORMATS and fmt not in _FORMATS:
        raise UnsupportedSchema(f"{path or '<root>'}: schema_check does not implement format {fmt!r}")
    for key, child in (schema.get("properties") or {}).items():
        check_supported(child, _join(path, key))
    if isinstance(schema.get("additionalProperties"), dict):
        check_supported(schema["additionalProperties"], _join(path, "*"))
    if "items" in schema:
        check_supported(schema["items"], f"{path}[*]")


# ---- pruning and defaulting ------------------------------------------------------------------

_META_FIELDS = ("apiVersion", "kind", "metadata")


def prune(schema: Schema | None, value: Any, *, root: bool = True) -> Any:
    """A copy of ``value`` without the fields ``schema`` does not declare.

    ``root=True`` (for a whole object) keeps ``apiVersion``, ``kind`` and ``metadata`` untouched,
    as the apiserver does; pass ``root=False`` to prune a part (e.g. a status against the status
    schema).
    """
    return _prune(copy.deepcopy(value), schema, root)


def _prune(value: Any, schema: Schema | None, keep_meta: bool) -> Any:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        return _prune_known(value, schema, keep_meta)
    if isinstance(value, dict):
        if schema is None:
            return {}
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if keep_meta and key in _META_FIELDS:
                result[key] = item
            elif key in properties:
                result[key] = _prune(item, properties[key], False)
            elif isinstance(extra, dict):
                result[key] = _prune(item, extra, False)
            elif extra is True:  # not structural, but means "anything" where it appears
                result[key] = item
        return result
    if isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        return [_prune(item, items, False) for item in value]
    return value


def _prune_known(value: Any, schema: Schema, keep_meta: bool) -> Any:
    """Under preserve-unknown-fields: unknown fields stay, declared ones are still pruned inside."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if keep_meta and key in _META_FIELDS:
                result[key] = item
            elif key in properties:
                result[key] = _prune(item, properties[key], False)
            elif isinstance(extra, dict):
                result[key] = _prune(item, extra, False)
            else:
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_known(item, schema["items"], False) for item in value]
    return value


def apply_defaults(schema: Schema | None, value: Any) -> Any:
    """A copy of ``value`` as the apiserver's defaulting leaves it: ``null`` in a non-nullable
    field without a default is dropped; a missing field (or a non-nullable ``null``) with a
    ``default`` gets it, recursively inside objects that are present."""
    return _default(copy.deepcopy(value), schema)


def _default(value: Any, schema: Schema | None) -> Any:
    if schema is None:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            child = properties.get(key, extra if isinstance(extra, dict) else None)
            if value[key] is None and child is not None and not child.get("nullable"):
                if "default" in child:
                    value[key] = copy.deepcopy(child["default"])
                else:
                    del value[key]
        for key, child in properties.items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, dict) else None)
            value[key] = _default(item, child)
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                if item is None and not items.get("nullable") and "default" in items:
                    value[index] = copy.deepcopy(items["default"])
                value[index] = _default(value[index], items)
        return value
    return value


def admit(schema: Schema | None, obj: Any, *, root: bool = True) -> tuple[Any, list[Cause]]:
    """What the apiserver stores for a write of ``obj``: pruned and defaulted, with the
    validation failures of that result (the write is refused if there is any)."""
    if schema is None:
        return copy.deepcopy(obj), []
    admitted = _default(prune(schema, obj, root=root), schema)  # prune() copied it already
    return admitted, validate(schema, admitted, root=root)


# ---- validation ------------------------------------------------------------------------------


def validate(schema: Schema, value: Any, path: str = "", *, root: bool | None = None) -> list[Cause]:
    """Every way ``value`` (at field path ``path``) breaks ``schema``; empty when it is valid.

    ``root`` (by default: ``path == ""``) means ``value`` is a whole object: its ``metadata``
    is left to the apiserver's own rules and not checked against the schema. Nothing is pruned
    or defaulted here; ``admit`` does all three.
    """
    if root is None:
        root = path == ""
    return list(_validate(schema, value, path, root))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python, never in JSON
        return "boolean"
    if isinstance(value, int):
        # Out of int64, the apiserver's JSON decoder makes it a float64: a "number".
        return "integer" if INT64_MIN <= value <= INT64_MAX else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:  # how go-openapi names the spot in its messages
    return path or "<root>"


def _quote(value: Any) -> str:
    """A value as the apiserver's field.Error prints it (Go's %q for strings, %v for scalars)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _type_cause(path: str, expected: str, actual: str) -> Cause:
    detail = f"{_where(path)} in body must be of type {expected}: {json.dumps(actual)}"
    return Cause(path, f"Invalid value: {json.dumps(actual)}: {detail}", "FieldValueTypeInvalid")


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, f"Invalid value: {_quote(value)}: {detail}", "FieldValueInvalid")


def _validate(schema: Schema, value: Any, path: str, root: bool) -> Iterator[Cause]:
    actual = _json_type(value)
    if value is None:
        if schema.get("nullable"):
            return
        if "type" in schema or schema.get("x-kubernetes-int-or-string"):
            expected = "integer,string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
            yield _type_cause(path, expected, "null")
        return
    if schema.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            yield _type_cause(path, "integer,string", actual)
            return
    elif "type" in schema and not _type_matches(schema["type"], actual):
        yield _type_cause(path, schema["type"], actual)
        return

    if "enum" in schema and not any(_json_equal(value, allowed) for allowed in schema["enum"]):
        values = ", ".join(json.dumps(a if isinstance(a, str) else _quote(a)) for a in schema["enum"])
        yield Cause(path, f"Unsupported value: {_quote(value)}: supported values: {values}", "FieldValueNotSupported")

    if actual == "string":
        yield from _validate_string(schema, value, path)
    elif actual in ("integer", "number"):
        yield from _validate_number(schema, value, path)
    elif actual == "array":
        yield from _validate_array(schema, value, path)
    elif actual == "object":
        yield from _validate_object(schema, value, path, root)


def _type_matches(expected: str, actual: str) -> bool:
    return expected == actual or (expected == "number" and actual == "integer")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1 (Python says it is), 1 equals 1.0."""
    ta, tb = _json_type(a), _json_type(b)
    numbers = ("integer", "number")
    if ta in numbers and tb in numbers:
        return bool(a == b)
    if ta != tb:
        return False
    if ta == "array":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _validate_string(schema: Schema, value: str, path: str) -> Iterator[Cause]:
    length = len(value)  # code points, as Go's utf8.RuneCountInString
    if "maxLength" in schema and length > schema["maxLength"]:
        yield Cause(path, f"Too long: may not be longer than {schema['maxLength']}", "FieldValueTooLong")
    if "minLength" in schema and length < schema["minLength"]:
        yield _invalid(path, value, f"{_where(path)} in body should be at least {schema['minLength']} chars long")
    if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
        yield _invalid(path, value, f"{_where(path)} in body should match '{schema['pattern']}'")
    fmt = schema.get("format")
    if fmt in _FORMATS and not _FORMATS[fmt](value):
        yield Cause(
            path,
            f"Invalid value: {_quote(value)}: {_where(path)} in body must be of type {fmt}: {_quote(value)}",
            "FieldValueTypeInvalid",
        )


def _validate_number(schema: Schema, value: float, path: str) -> Iterator[Cause]:
    if isinstance(value, float) and not math.isfinite(value):
        yield _invalid(path, value, f"{_where(path)} in body must be a finite number")
        return
    where = _where(path)
    if "maximum" in schema:
        limit = schema["maximum"]
        if value > limit or (schema.get("exclusiveMaximum") and value == limit):
            op = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
            yield _invalid(path, value, f"{where} in body should be {op} {_quote(limit)}")
    if "minimum" in schema:
        limit = schema["minimum"]
        if value < limit or (schema.get("exclusiveMinimum") and value == limit):
            op = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
            yield _invalid(path, value, f"{where} in body should be {op} {_quote(limit)}")
    if "multipleOf" in schema:
        factor = schema["multipleOf"]
        quotient = value / factor
        if not (quotient == int(quotient) if math.isfinite(quotient) else False):
            yield _invalid(path, value, f"{where} in body should be a multiple of {_quote(factor)}")


def _validate_array(schema: Schema, value: list[Any], path: str) -> Iterator[Cause]:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield Cause(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", "FieldValueTooMany")
    if "minItems" in schema and len(value) < schema["minItems"]:
        yield _invalid(path, value, f"{_where(path)} in body should have at least {schema['minItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            yield from _validate(items, item, f"{path}[{index}]", False)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue  # the items' type check has reported it
            key = {k: item.get(k) for k in keys}
            if any(_json_equal(key, other) for other in seen):
                yield Cause(f"{path}[{index}]", f"Duplicate value: {_quote(key)}", "FieldValueDuplicate")
            else:
                seen.append(key)
    elif list_type == "set":
        for index, item in enumerate(value):
            if any(_json_equal(item, other) for other in value[:index]):
                yield Cause(f"{path}[{index}]", f"Duplicate value: {_quote(item)}", "FieldValueDuplicate")


def _validate_object(schema: Schema, value: dict[str, Any], path: str, root: bool) -> Iterator[Cause]:
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        yield Cause(
            path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items", "FieldValueTooMany"
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        yield _invalid(path, value, f"{_where(path)} in body should have at least {schema['minProperties']} properties")
    for key in schema.get("required") or []:
        if key not in value:
            yield Cause(_join(path, key), "Required value", "FieldValueRequired")
    for key, item in value.items():
        child_path = _join(path, key)
        if root and key == "metadata":
            continue  # ObjectMeta: the apiserver's own rules, not the schema
        if key in properties:
            yield from _validate(properties[key], item, child_path, False)
        elif isinstance(extra, dict):
            yield from _validate(extra, item, child_path, False)
        elif extra is False and not schema.get("x-kubernetes-preserve-unknown-fields"):
            yield Cause(child_path, "Forbidden: is a forbidden property", "FieldValueForbidden")


# ---- formats ---------------------------------------------------------------------------------

_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _is_date_time(text: str) -> bool:
    """RFC 3339 date-time (``2026-01-01T00:00:00Z``, fractions and offsets allowed)."""
    m = _DATE_TIME.fullmatch(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if m[8] is not None and (int(m[8]) > 23 or int(m[9]) > 59):
        return False
    try:
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return second <= 60  # 60: a leap second


def _is_date(text: str) -> bool:
    m = _DATE.fullmatch(text)
    if m is None:
        return False
    try:
        datetime.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


_FORMATS = {"date-time": _is_date_time, "date": _is_date}


# ---- messages --------------------------------------------------------------------------------


def invalid_message(kind: str, group: str, name: str, causes: list[Cause]) -> str:
    """The message of the apiserver's 422 for ``causes``: ``Kind.group "name" is invalid: ...``."""
    qualified = f"{kind}.{group}" if group else kind
    unique = list(dict.fromkeys(str(cause) for cause in causes))
    listed = unique[0] if len(unique) == 1 else f"[{', '.join(unique)}]"
    return f"{qualified} {json.dumps(name)} is invalid: {listed}"
