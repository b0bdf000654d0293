"""WhatsAppInstance bodies, built in one place for the tests and the benches."""

from __future__ import annotations

from typing import Any

from whatsapp_operator.names import API_VERSION, KIND


def instance_body(
    name: str,
    spec: dict[str, Any] | None = None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A WhatsAppInstance named `name`; its spec is `spec`, or just `instanceName: name`."""
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"instanceName": name} if spec is None else spec,
    }
