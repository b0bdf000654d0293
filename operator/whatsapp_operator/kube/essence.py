"""kopf's diff base, built without copying what kopf throws away.

For every watch event of a WhatsAppInstance (most of them the echo of the operator's own status
write), kopf builds the object's "essence" to compare with the last handled one: it deep-copies the
whole body, then deletes `status` and the system metadata. The status carries the QR code and the
conditions, a real apiserver adds `metadata.managedFields`, so most of that copy was thrown away at
once (bench/README.md, profile). This storage hands kopf the same body without those two parts, so
the essence is the same, built from less: the equality with kopf's own is a property test
(tests/test_essence.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

# Removed by kopf's DiffBaseStorage.build before any comparison, unless a handler names a field
# inside them (an `extra_field`): then the full body is used, as kopf would.
_DROPPED_ROOTS = (("status",), ("metadata", "managedFields"))


def _path(field: Any) -> tuple[str, ...]:
    if isinstance(field, str):
        return tuple(field.split("."))
    return tuple(str(part) for part in field)


class LeanAnnotationsDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """`kopf.AnnotationsDiffBaseStorage` whose essence skips copying the status and managedFields."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        fields = list(extra_fields or ())
        paths = [_path(field) for field in fields]
        if any(path[: len(root)] == root or root[: len(path)] == path for path in paths for root in _DROPPED_ROOTS):
            return super().build(body=body, extra_fields=fields)
        lean: dict[str, Any] = {key: value for key, value in body.items() if key != "status"}
        metadata = lean.get("metadata")
        if isinstance(metadata, Mapping) and "managedFields" in metadata:
            lean["metadata"] = {key: value for key, value in metadata.items() if key != "managedFields"}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=fields)
