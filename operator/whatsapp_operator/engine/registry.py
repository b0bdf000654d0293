"""The WhatsAppInstances the operator tracks, and which Evolution server holds each one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from whatsapp_operator.backoff import Backoff
from whatsapp_operator.engine.server import EvolutionServer
from whatsapp_operator.engine.spec import InstanceSpec, InvalidSpec
from whatsapp_operator.engine.state import InstanceState, Phase
from whatsapp_operator.engine.tracker import InstanceTracker, Key
from whatsapp_operator.names import ENVIRONMENT_SERVER


class InstanceRegistry:
    """Owns the trackers by (namespace, name) and keeps each server's index of instance names in
    step with them. It parses specs and picks the server; it calls neither Evolution nor
    Kubernetes and publishes nothing."""

    def __init__(self, server_for: Callable[[InstanceSpec], EvolutionServer], retry: Callable[[], Backoff]):
        self._server_for = server_for
        self._retry = retry
        self._trackers: dict[Key, InstanceTracker] = {}

    def __len__(self) -> int:
        return len(self._trackers)

    def __iter__(self) -> Iterator[InstanceTracker]:
        return iter(list(self._trackers.values()))

    def get(self, key: Key) -> InstanceTracker | None:
        return self._trackers.get(key)

    def holds(self, tracker: InstanceTracker) -> bool:
        return self._trackers.get(tracker.key) is tracker

    def phase_counts(self) -> Counter[Phase]:
        return Counter(tracker.state.phase for tracker in self._trackers.values())

    def track(self, body: dict[str, Any]) -> tuple[InstanceTracker, bool]:
        """The tracker of an object, refreshed from its body; True when it is new.

        Raises InvalidSpec for an unusable spec, or an instance name another object already uses
        on the same server.
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        tracker = self._trackers.get(key)
        spec = InstanceSpec.parse(meta["namespace"], meta["name"], body.get("spec"))
        if tracker is not None and tracker.uid == meta.get("uid"):
            # The instance name and the server are fixed once tracked (the CRD keeps serverRef immutable).
            tracker.spec = replace(spec, instance_name=tracker.spec.instance_name, server_ref=tracker.spec.server_ref)
            tracker.generation = meta.get("generation")
            return tracker, False
        if tracker is not None:  # the object was deleted and created again under the same name
            self.untrack(tracker)
        status = body.get("status") or {}
        # The name is fixed once written to status: a later default change must not orphan it.
        instance_name = status.get("instanceName") or spec.instance_name
        spec = replace(spec, instance_name=instance_name)
        server = self._server_for(spec)
        owner = server.owner_of(instance_name)
        if owner is not None and owner.key != key:
            raise InvalidSpec(
                f"instance name {instance_name!r} is already used by "
                f"{owner.namespace}/{owner.name}; choose another spec.instanceName"
            )
        state = InstanceState.from_status(instance_name, status)
        state.server = spec.server_ref.shown if spec.server_ref is not None else ENVIRONMENT_SERVER
        tracker = InstanceTracker(
            namespace=key[0],
            name=key[1],
            uid=meta.get("uid", ""),
            generation=meta.get("generation"),
            spec=spec,
            state=state,
            server=server,
            retry=self._retry(),
        )
        self._trackers[key] = tracker
        server.add(tracker)
        return tracker, True

    def untrack(self, tracker: InstanceTracker) -> bool:
        """Forget the tracker; False when it was not (or no longer) the one tracked."""
        tracker.removed = True
        tracker.cancel_timers()
        tracker.server.remove(tracker)
        if self._trackers.get(tracker.key) is tracker:
            del self._trackers[tracker.key]
            return True
        return False
