"""Watch events that only echo a status write, kept from kopf's per-object machinery.

Every status write of the operator comes back on kopf's watch as a MODIFIED event carrying the whole
object (a waiting instance's QR code every 20 s or so). kopf hands each one to the object's worker,
which recalls the object's memory, builds its essence, diffs it against the last handled one and
finds nothing to do: about a third of the operator's CPU per QR event (bench/README.md, profile).
No handler of ours can run for such an event: they react to `spec`, to annotations, to the
finalizer and deletion, and kopf keeps its own progress and diff base in annotations
(`configure_settings`; a watch with other settings is left as it is).

`install()` wraps kopf's watch stream, for the operator's own kinds only, so that a MODIFIED event
whose object equals the previous event's outside `status` and the metadata every write changes
(`resourceVersion`, `managedFields`) is dropped before kopf queues it, while the object carries
kopf's finalizer and is not being deleted. Everything else passes as it came: additions, deletions,
the listing at every (re)start of the watch, bookmarks, and any change of spec, labels,
annotations, finalizers, owners or the deletion mark. kopf's patches all land in metadata, so the
events it waits for to know its own writes arrived pass too. The finalizer rule is there because
kopf adds and removes its finalizer with a JSON patch that tests the resourceVersion: when a status
write got in between, the patch fails with a conflict and kopf waits for the object's next event,
whatever it is. Until the finalizer is on, and from the deletion mark on, every event passes.

The wrapped function is kopf's internal `kopf._cogs.clients.watching.infinite_watch` (kopf 1.45,
`kopf._core.reactor.queueing` calls it through its module); no public hook filters events before a
worker. If a kopf version moves it, `install()` leaves kopf as it is and says so in the log: the
operator stays correct, only slower. tests/test_echoes.py pins the contract with the installed kopf;
docs/kopf.md (§2, §3) has the kopf behaviour this relies on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

logger = logging.getLogger("whatsapp_operator.kube.echoes")

# Metadata a write changes whatever it writes: never a reason for a handler to run.
_VOLATILE_METADATA = frozenset({"resourceVersion", "managedFields"})


def _identity(body: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The object without its status and volatile metadata; None for a body of an unknown shape."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    lasting = {key: value for key, value in metadata.items() if key not in _VOLATILE_METADATA}
    rest = {key: value for key, value in body.items() if key != "status" and key != "metadata"}
    return lasting, rest


def _uid(body: Mapping[str, Any]) -> str | None:
    metadata = body.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
    return uid if isinstance(uid, str) and uid else None


@dataclass
class EchoFilter:
    """The memory of one watch stream: each object's identity as last seen on it. `finalizer` is
    kopf's: echoes are dropped only for objects that carry it and are not being deleted."""

    finalizer: str
    last_seen: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    skipped: int = 0
    # uids seen since the stream's current listing began; None while streaming.
    _listed: set[str] | None = None

    def admits(self, raw_event: Any) -> bool:
        """Whether kopf must see this event. Anything that is not a well-formed event passes."""
        if not isinstance(raw_event, Mapping):
            return True  # kopf's own markers (the end of a listing) and anything unexpected
        kind = raw_event.get("type")
        body = raw_event.get("object")
        if not isinstance(body, Mapping):
            return True
        uid = _uid(body)
        if uid is None:
            return True  # BOOKMARKs and bodies kopf will judge for itself
        if kind == "DELETED":
            self.last_seen.pop(uid, None)
            return True
        identity = _identity(body)
        if identity is None:
            self.last_seen.pop(uid, None)
            return True
        if kind is None:  # a listing row: kopf must see every one (resume handlers run from them)
            if self._listed is None:
                self._listed = set()
            self._listed.add(uid)
            self.last_seen[uid] = identity
            return True
        previous = self.last_seen.get(uid)
        self.last_seen[uid] = identity
        if kind == "MODIFIED" and previous is not None and previous == identity and self._settled(identity[0]):
            self.skipped += 1
            return False
        return True

    def _settled(self, metadata: Mapping[str, Any]) -> bool:
        """Whether kopf has no finalizer patch to make for the object: the finalizer is on, and
        the object is not being deleted."""
        finalizers = metadata.get("finalizers")
        return (
            metadata.get("deletionTimestamp") is None and isinstance(finalizers, list) and self.finalizer in finalizers
        )

    def listing_done(self) -> None:
        """Forget objects the new listing did not show: deleted while the watch was down."""
        if self._listed is not None:
            for uid in self.last_seen.keys() - self._listed:
                del self.last_seen[uid]
        self._listed = None


def _state_in_annotations(settings: Any) -> bool:
    """Whether kopf keeps its progress and diff base in annotations only, as `configure_settings`
    sets it. kopf's default keeps them in `status.kopf` too: then a status-only event may be kopf's
    own write, which it waits to see, and nothing is dropped."""
    persistence = getattr(settings, "persistence", None)
    return isinstance(getattr(persistence, "progress_storage", None), kopf.AnnotationsProgressStorage) and isinstance(
        getattr(persistence, "diffbase_storage", None), kopf.AnnotationsDiffBaseStorage
    )


WatchFunction = Callable[..., AsyncIterator[Any]]


def filtered_watch(original: WatchFunction, listed: object, group: str, plurals: Collection[str]) -> WatchFunction:
    """kopf's watch function, with the echoes of status writes dropped for `group`'s `plurals`.

    `listed` is the marker kopf's stream yields when a listing is over and streaming begins.
    """

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        resource = kwargs.get("resource")
        stream = original(**kwargs)
        settings = kwargs.get("settings")
        ours = getattr(resource, "group", None) == group and getattr(resource, "plural", None) in plurals
        if not ours or not _state_in_annotations(settings):
            async for raw_event in stream:
                yield raw_event
            return
        echoes = EchoFilter(finalizer=settings.persistence.finalizer)  # type: ignore[union-attr]
        async for raw_event in stream:
            if raw_event is listed:
                echoes.listing_done()
            if echoes.admits(raw_event):
                yield raw_event

    infinite_watch.__wrapped__ = original  # type: ignore[attr-defined]
    return infinite_watch


def installed() -> bool:
    """Whether this process's kopf watch drops the echoes (`install()` succeeded)."""
    try:
        from kopf._cogs.clients import watching
    except ImportError:
        return False
    return getattr(getattr(watching, "infinite_watch", None), "__wrapped__", None) is not None


def install(group: str, plurals: Collection[str]) -> bool:
    """Wrap kopf's watch function once per process; False (and kopf untouched) if it is not there."""
    try:
        from kopf._cogs.clients import watching  # kopf's internals, looked up only here
    except ImportError:
        logger.warning("kopf's watch module moved: status echoes go through kopf's workers (slower, correct)")
        return False
    current = getattr(watching, "infinite_watch", None)
    listed = getattr(getattr(watching, "Bookmark", None), "LISTED", None)
    if current is None or listed is None:
        logger.warning("kopf's watch function moved: status echoes go through kopf's workers (slower, correct)")
        return False
    if getattr(current, "__wrapped__", None) is not None:
        return True
    watching.infinite_watch = filtered_watch(current, listed, group, frozenset(plurals))
    return True
