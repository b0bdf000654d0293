"""kopf's diff base, built without copying what kopf throws away.

For every watch event of a WhatsAppInstance (most of them the echo of the operator's own status
write), kopf builds the object's "essence" to compare with the last handled one: it deep-copies the
whole body, then deletes `status` and the metadata but its labels and annotations. The status
carries the QR code and the conditions, a real apiserver adds `metadata.managedFields`, so most of
that copy was thrown away at once (bench/README.md, profile). This storage hands kopf the same body
without what it deletes, so the essence is the same, built from less: the equality with kopf's own is a property test
(tests/test_essence.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

# Removed by kopf's DiffBaseStorage.build before any comparison, unless a handler names a field
# inside them (an `extra_field`): then the full body is used, as kopf would.
_DROPPED = ("status", "metadata")
# What kopf still reads of the metadata: labels and annotations go into the essence, the owner
# references decide its annotation's key (kopf's mark_key, for ReplicaSets of Deployments).
_KEPT_METADATA = ("labels", "annotations", "ownerReferences")


def _path(field: Any) -> tuple[str, ...]:
    if isinstance(field, str):
        return tuple(field.split("."))
    return tuple(str(part) for part in field)


def _dropped(path: tuple[str, ...]) -> bool:
    """Whether an extra field lies in (or holds) what the lean body leaves out."""
    if len(path) >= 2 and path[0] == "metadata" and path[1] in _KEPT_METADATA:
        return False
    return bool(path) and path[0] in _DROPPED


class LeanAnnotationsDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """`kopf.AnnotationsDiffBaseStorage` whose essence skips copying the status and the metadata
    kopf throws away."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> Any:
        fields = list(extra_fields or ())
        if any(_dropped(_path(field)) for field in fields):
            return super().build(body=body, extra_fields=fields)
        lean: dict[str, Any] = {key: value for key, value in body.items() if key not in _DROPPED}
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping):
            lean["metadata"] = {key: metadata[key] for key in _KEPT_METADATA if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=fields)
