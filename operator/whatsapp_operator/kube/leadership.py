"""Which replica acts: the runtime follows kopf's peering decision.

kopf pauses its own handlers when a live peer with a higher (or the same) priority is listed in
the peering object, but the operator's runtime also acts outside handlers (Socket.IO events,
resyncs, recreations). This module reads the same ClusterKopfPeering object and applies kopf's
rule, so that only the replica kopf lets run writes status and talks to Evolution. Each process
gets its own random priority (kopf pauses every peer when priorities tie), so exactly one
replica is active and another takes over when it leaves or stops renewing its entry.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from whatsapp_operator.kube.client import KubeClient, KubeError

logger = logging.getLogger("whatsapp_operator.kube.leadership")


@dataclass(frozen=True)
class PeeringIdentity:
    """This process in kopf's peering: the object's name, our id in it, our priority."""

    name: str
    identity: str
    priority: int


def is_leader(peering_status: dict[str, Any], identity: str, priority: int, now: datetime.datetime) -> bool:
    """kopf's rule: act only if no other live peer has a priority as high as ours or higher."""
    for peer_id, info in peering_status.items():
        if peer_id == identity or not isinstance(info, dict):
            continue
        if _is_dead(info, now):
            continue
        try:
            peer_priority = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if peer_priority >= priority:
            return False
    return True


def _is_dead(info: dict[str, Any], now: datetime.datetime) -> bool:
    try:
        lastseen = datetime.datetime.fromisoformat(str(info["lastseen"]))
        lifetime = float(info.get("lifetime", 60))
    except (KeyError, TypeError, ValueError):
        return True
    if lastseen.tzinfo is None:
        lastseen = lastseen.replace(tzinfo=datetime.UTC)
    return lastseen + datetime.timedelta(seconds=lifetime) < now


class PeeringLeadership:
    def __init__(
        self, kube: KubeClient, peering: PeeringIdentity, *, on_change: Callable[[bool], None], interval: float = 5.0
    ):
        self.kube = kube
        self.peering_name = peering.name
        self.identity = peering.identity
        self.priority = peering.priority
        self.interval = interval
        self._on_change = on_change
        self.active: bool | None = None
        self._decided = {True: asyncio.Event(), False: asyncio.Event()}

    async def wait_until(self, active: bool) -> None:
        """Return once this replica is (or becomes) active / on standby."""
        await self._decided[active].wait()

    async def run(self) -> None:
        while True:
            try:
                peering = await self.kube.get_cluster_peering(self.peering_name)
            except KubeError as error:
                logger.warning("Cannot read the peering object %s: %s", self.peering_name, error)
            else:
                status = (peering or {}).get("status") or {}
                active = is_leader(status, self.identity, self.priority, datetime.datetime.now(datetime.UTC))
                if active != self.active:
                    self.active = active
                    self._decided[active].set()
                    self._decided[not active].clear()
                    logger.info(
                        "This replica (%s, priority %d) is %s",
                        self.identity,
                        self.priority,
                        "active" if active else "on standby",
                    )
                    self._on_change(active)
            await asyncio.sleep(self.interval)
