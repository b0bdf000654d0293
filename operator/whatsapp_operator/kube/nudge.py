"""Objects kopf left waiting after a conflict on its finalizer patch."""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
from collections.abc import Callable
from typing import Any

from whatsapp_operator.kube.client import KubeClient, KubeError
from whatsapp_operator.names import FINALIZER, NUDGE_ANNOTATION
from whatsapp_operator.pacing import ROWS_PER_TURN
from whatsapp_operator.values import posix_time

logger = logging.getLogger("whatsapp_operator.kube.nudge")


def _older_than(timestamp: Any, now: datetime.datetime, seconds: float) -> bool:
    then = posix_time(timestamp)
    return then is not None and now.timestamp() - then >= seconds


class StuckObjectNudger:
    """Gives kopf a new watch event for objects whose finalizer patch it gave up on.

    kopf retries a 429 or a 5xx of its finalizer JSON patch, but after a 409 it waits for the
    object's next watch event. A new object then never gets created in Evolution, and a deleted
    one stays Terminating after its instance is gone. An annotation under kopf's own prefix
    (outside the objects' essence: no handler runs for it) is that event. It owns nothing but the
    annotation it writes; which objects are tracked it asks `is_tracked`.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        after: float,
        clock: Callable[[], str],
        is_tracked: Callable[[tuple[str, str]], bool],
        namespaces: tuple[str, ...] = (),
    ):
        self.kube = kube
        self.after = after
        self.clock = clock
        self.is_tracked = is_tracked
        self.namespaces = namespaces  # the namespaces (globs) kopf serves; empty: all

    async def nudge(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        try:
            async for page in self.kube.instance_metadata_pages():
                for index, meta in enumerate(page):
                    if index % ROWS_PER_TURN == 0:
                        await asyncio.sleep(0)  # a server that sent everything in one page: events go first
                    if self._waiting(meta, now):
                        await self._nudge(meta)
        except KubeError as error:
            logger.debug("Cannot list WhatsAppInstances to find objects kopf left waiting: %s", error)

    def _waiting(self, meta: dict[str, Any], now: datetime.datetime) -> bool:
        if self.namespaces and not any(
            fnmatch.fnmatchcase(str(meta.get("namespace")), pattern) for pattern in self.namespaces
        ):
            return False
        finalizers = meta.get("finalizers") or []
        deleting = meta.get("deletionTimestamp")
        if deleting:
            key = (str(meta.get("namespace")), str(meta.get("name")))
            return FINALIZER in finalizers and not self.is_tracked(key) and _older_than(deleting, now, self.after)
        return FINALIZER not in finalizers and _older_than(meta.get("creationTimestamp"), now, self.after)

    async def _nudge(self, meta: dict[str, Any]) -> None:
        logger.warning(
            "%s/%s waits for kopf to %s its finalizer; nudging it",
            meta.get("namespace"),
            meta.get("name"),
            "remove" if meta.get("deletionTimestamp") else "add",
        )
        try:
            await self.kube.annotate_instance(
                str(meta.get("namespace")), str(meta.get("name")), NUDGE_ANNOTATION, self.clock()
            )
        except KubeError as error:
            logger.warning("Could not nudge %s/%s: %s", meta.get("namespace"), meta.get("name"), error)
