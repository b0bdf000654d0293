"""The lean diff base gives kopf exactly the essence kopf's own storage would build: kopf compares
it with the `last-handled-configuration` annotation written by earlier versions, so any difference
would run the update handlers for nothing (or miss a change)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from whatsapp_operator.kube.essence import LeanAnnotationsDiffBaseStorage
from whatsapp_operator.names import ANNOTATION_PREFIX, LOGOUT_ANNOTATION, PAUSED_ANNOTATION, RECONNECT_ANNOTATION

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
ANNOTATION_KEYS = st.one_of(
    st.sampled_from(
        [
            RECONNECT_ANNOTATION,
            LOGOUT_ANNOTATION,
            PAUSED_ANNOTATION,
            f"{ANNOTATION_PREFIX}/last-handled-configuration",
            f"{ANNOTATION_PREFIX}/ensure-instance",
            "kopf.zalando.org/last-handled-configuration",
            "kubectl.kubernetes.io/last-applied-configuration",
            "example.com/team",
        ]
    ),
    st.text(min_size=1, max_size=10),
)
METADATA = st.fixed_dictionaries(
    {"name": st.just("shop"), "namespace": st.just("default")},
    optional={
        "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        "annotations": st.dictionaries(ANNOTATION_KEYS, st.text(max_size=20), max_size=4),
        "managedFields": st.lists(JSON, max_size=3),
        "resourceVersion": st.text(max_size=5),
        "finalizers": st.lists(st.text(max_size=8), max_size=2),
        "ownerReferences": st.lists(
            st.fixed_dictionaries({"kind": st.sampled_from(["Deployment", "Other"])}), max_size=1
        ),
    },
)
BODIES = st.fixed_dictionaries(
    {
        "apiVersion": st.just("whatsapp-operator.io/v1alpha1"),
        "kind": st.sampled_from(["WhatsAppInstance", "ReplicaSet"]),
    },
    optional={"metadata": METADATA, "spec": JSON, "status": JSON, "extra": JSON},
)
EXTRA_FIELDS = st.lists(
    st.sampled_from(
        [
            ("metadata", "annotations", RECONNECT_ANNOTATION),
            ("metadata", "annotations", LOGOUT_ANNOTATION),
            ("metadata", "annotations", PAUSED_ANNOTATION),
            ("spec",),
            "spec.settings",
            ("status", "phase"),
            "status",
            ("metadata", "managedFields"),
            ("metadata",),
            ("metadata", "labels"),
            ("metadata", "name"),
            "metadata.ownerReferences",
            "metadata.finalizers",
        ]
    ),
    max_size=4,
)


def _storages() -> tuple[kopf.AnnotationsDiffBaseStorage, LeanAnnotationsDiffBaseStorage]:
    arguments: dict[str, Any] = {"prefix": ANNOTATION_PREFIX, "key": "last-handled-configuration"}
    return kopf.AnnotationsDiffBaseStorage(**arguments), LeanAnnotationsDiffBaseStorage(**arguments)


@pytest.mark.properties
@given(BODIES, EXTRA_FIELDS)
def test_the_lean_essence_is_kopfs_essence(raw: dict[str, Any], extra_fields: list[Any]) -> None:
    kopfs, lean = _storages()
    assert _outcome(lean, raw, extra_fields) == _outcome(kopfs, raw, extra_fields)


def _outcome(storage: kopf.AnnotationsDiffBaseStorage, raw: dict[str, Any], extra_fields: list[Any]) -> Any:
    # kopf's own build raises on some shapes (a null status with a status field asked for): the
    # lean one must then fail the same way, not hide it.
    try:
        return storage.build(body=kopf.Body(raw), extra_fields=extra_fields)
    except (TypeError, AttributeError, KeyError) as error:
        return type(error)


def test_the_essence_does_not_share_the_bodys_lists_and_dicts() -> None:
    # kopf keeps the essence for later comparison; the body is the watch event's and may change.
    raw = {"apiVersion": "v1", "kind": "WhatsAppInstance", "metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}
    essence = LeanAnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX).build(body=kopf.Body(raw))
    raw["spec"]["x"].append(2)
    raw["metadata"]["labels"]["a"] = "2"
    assert essence == {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}


def test_the_status_and_the_metadata_kopf_drops_are_not_copied() -> None:
    class Counting(dict):  # type: ignore[type-arg]
        copies = 0

        def __deepcopy__(self, memo: Any) -> dict[str, Any]:
            Counting.copies += 1
            return dict(self)

    raw = {
        "kind": "WhatsAppInstance",
        "metadata": {"name": "shop", "managedFields": [Counting()], "finalizers": Counting()},
        "spec": {"instanceName": "shop"},
        "status": Counting(qr="data:image/png;base64,AAAA"),
    }
    LeanAnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX).build(body=kopf.Body(raw))
    assert Counting.copies == 0
    kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX).build(body=kopf.Body(raw))
    assert Counting.copies == 3  # kopf's own storage copies all three: the test would see a regression
