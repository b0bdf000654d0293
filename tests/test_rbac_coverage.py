"""Every request the operator made to the Kubernetes API in this test session is granted by the
ClusterRole that `kubectl apply -k manifests/` binds to its ServiceAccount."""

from __future__ import annotations

import pytest

from conftest import OPERATOR_REQUESTS, run_operator
from kube_standin import KubeStandin
from rbac import granted, load_operator_rules


async def exercise_operator(evolution) -> None:
    """Enough of the lifecycle to make every kind of request, for runs of this file alone."""
    async with KubeStandin() as kube, run_operator(kube, evolution) as operator:
        operator.create("shop", {"instanceName": "shop"})
        await operator.wait_phase("shop", "AwaitingScan")
        await evolution.remove_out_of_band("shop")
        await operator.wait_event("shop", "Recreated")
        operator.delete("shop")
        await operator.wait_gone("shop")


@pytest.mark.after_integration_tests
async def test_every_recorded_request_is_granted(evolution):
    if not any(r.subresource == "status" for r in OPERATOR_REQUESTS):
        await exercise_operator(evolution)
    rules = load_operator_rules()
    seen = {
        (r.verb, r.api_group, r.resource, r.subresource, r.name) for r in OPERATOR_REQUESTS if r.resource is not None
    }  # discovery (/api, /apis) is open to every authenticated user
    assert ("patch", "whatsapp-operator.io", "whatsappinstances", "status", "shop") in seen
    assert any(verb == "create" and resource == "events" for verb, _, resource, _, _ in seen)
    denied = sorted(str(request) for request in seen if not granted(rules, *request))
    assert denied == []
