"""What the operator knows about one WhatsApp instance, and how Evolution's signals change it.

Pure logic: no I/O, no clock (callers pass `now`). Socket.IO events and REST observations are
applied through methods that return `Notice`s, the transitions worth a Kubernetes Event.
`render_status()` turns the state into the resource's `.status`; it is deterministic for an
unchanged state, so a status writer can skip no-op patches.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.events import (
    ConnectionUpdated,
    EvolutionEvent,
    InstanceLoggedOut,
    InstanceRemoved,
    QRLimitReached,
    QRUpdated,
)
from whatsapp_operator.names import RECONNECT_ANNOTATION
from whatsapp_operator.reasons import Reason
from whatsapp_operator.values import int64, posix_time, valid_unicode

# Closes after which Evolution does not reconnect and wipes the session (docs/evolution-api.md §4.7, §4.8).
_SESSION_ENDING_CLOSES = {401: "LoggedOut", 403: "Forbidden", 402: "SessionEnded", 406: "SessionEnded"}


class Phase(StrEnum):
    PENDING = "Pending"
    CREATING = "Creating"
    AWAITING_SCAN = "AwaitingScan"
    CONNECTING = "Connecting"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    LOGGED_OUT = "LoggedOut"
    FAILED = "Failed"


_REASONS = frozenset(reason.value for reason in Reason)

# Phases that only a person can leave (a new scan asked for with the reconnect annotation,
# or a spec fix); the operator does not start QR cycles on its own from these.
WAITING_FOR_PERSON = frozenset({Phase.DISCONNECTED, Phase.LOGGED_OUT, Phase.FAILED})
_RECONCILING = frozenset({Phase.PENDING, Phase.CREATING, Phase.CONNECTING})
# Ready's reason while Evolution cannot be reached: it describes the outage, not the phase.
_OUTAGE_REASON = Reason.EVOLUTION_UNREACHABLE
# names.PAUSED_ANNOTATION; the engine reads the annotation and calls pause()/resume().
_PAUSED_ANNOTATION = "whatsapp-operator.io/paused"
PAUSED_MESSAGE = f"Paused by the annotation {_PAUSED_ANNOTATION}; no calls to Evolution API until it is removed."
# The notices of one change into or out of Connected: held back while the instance flaps.
_CHANGE_NOTICES = frozenset({"Connected", "Disconnected"})
# Phases whose own reason tells a person what to do: Ready keeps it even while flapping.
_NEEDS_PERSON = frozenset({Phase.LOGGED_OUT, Phase.FAILED})


class NoticeType(StrEnum):
    """The two types of Kubernetes Event."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Notice:
    """A transition worth a Kubernetes Event."""

    type: NoticeType
    reason: str
    message: str


@dataclass
class QRCode:
    code: str | None
    base64: str | None
    pairing_code: str | None
    count: int
    updated_at: str

    def to_status(self) -> dict[str, Any]:
        status = {
            "code": self.code,
            "base64": self.base64,
            "pairingCode": self.pairing_code,
            "count": self.count,
            "updatedAt": self.updated_at,
        }
        return {key: value for key, value in status.items() if value is not None}


@dataclass
class SyncError:
    reason: str
    message: str


@dataclass
class InstanceState:
    instance_name: str
    instance_id: str | None = None
    phase: Phase = Phase.PENDING
    reason: str = "Pending"
    message: str = "Waiting to create the instance in Evolution API."
    qr: QRCode | None = None
    last_qr_code: str | None = None  # to recognise Evolution's stale cached QR (docs/evolution-api.md §3.3)
    state: str | None = None  # Evolution's raw connection state
    status_reason: int | None = None
    since: str | None = None
    number: str | None = None
    profile_name: str | None = None
    profile_picture_url: str | None = None
    sync_error: SyncError | None = None  # the last REST call to Evolution failed
    stream_error: str | None = None  # the Socket.IO event stream is down (server-wide)
    deleting: bool = False
    server: str | None = None  # status.server: "environment" or the server object's Kind/name
    condition_times: dict[str, tuple[str, str]] = field(default_factory=dict)
    paused: bool = False  # the paused annotation: no calls to Evolution (the engine decides, pause()/resume())
    # Flapping: more than `flapping_changes` changes into or out of Connected within `flapping_window`
    # seconds. None takes the operator-wide value (configure_flapping).
    flapping_changes: int | None = None
    flapping_window: float | None = None
    flapping: str | None = None  # the flapping message while an episode lasts
    connection_changes: list[float] = field(default_factory=list, repr=False)  # POSIX times, oldest first

    # Operator-wide flapping limits (WHATSAPP_OPERATOR_FLAPPING_CHANGES, ..._WINDOW_SECONDS).
    default_flapping_changes: ClassVar[int] = 6
    default_flapping_window: ClassVar[float] = 600.0

    @classmethod
    def configure_flapping(cls, changes: int, window: float) -> None:
        """Set the operator-wide flapping limits, once at start; every state without its own uses them."""
        if isinstance(changes, bool) or not isinstance(changes, int) or changes < 1:
            raise ValueError(f"flapping changes must be a whole number of at least 1, got {changes!r}")
        if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
            raise ValueError(f"the flapping window must be a positive number of seconds, got {window!r}")
        InstanceState.default_flapping_changes = changes
        InstanceState.default_flapping_window = float(window)

    # -- restoring -------------------------------------------------------------------------------

    @classmethod
    def from_status(cls, instance_name: str, status: dict[str, Any] | None) -> InstanceState:
        """Rebuild from a persisted `.status`, so a restarted operator continues where it stopped."""
        state = cls(instance_name=instance_name)
        if not status:
            return state
        try:
            state.phase = Phase(str(status.get("phase")))
        except ValueError:
            pass
        state.instance_id = _str(status.get("instanceId"))
        state.paused = status.get("paused") is True  # a restart stays paused until the engine says otherwise
        qr = status.get("qr")
        if isinstance(qr, dict) and (_str(qr.get("code")) or _str(qr.get("pairingCode"))):
            state.qr = QRCode(
                _str(qr.get("code")),
                _str(qr.get("base64")),
                _str(qr.get("pairingCode")),
                int64(qr.get("count")) or 1,
                _timestamp(qr.get("updatedAt")) or "",
            )
            state.last_qr_code = state.qr.code
        connection = status.get("connection")
        if isinstance(connection, dict):
            state.state = _str(connection.get("state"))
            state.status_reason = int64(connection.get("statusReason"))
            state.since = _timestamp(connection.get("since"))
            state.number = _str(connection.get("number"))
            state.profile_name = _str(connection.get("profileName"))
            state.profile_picture_url = _str(connection.get("profilePictureUrl"))
        conditions: dict[str, dict[str, Any]] = {}
        listed = status.get("conditions")
        for condition in listed if isinstance(listed, list) else []:
            kind = _str(condition.get("type")) if isinstance(condition, dict) else None
            if kind is None:
                continue
            conditions[kind] = condition
            changed = _timestamp(condition.get("lastTransitionTime"))
            if changed:
                state.condition_times[kind] = (str(condition.get("status")), changed)
        state.reason, state.message = state._restored_description(conditions)
        return state

    def _restored_description(self, conditions: dict[str, dict[str, Any]]) -> tuple[str, str]:
        """The phase's reason and message as persisted, taken only from where they describe the phase.

        `.status.message` is not used: during an outage it describes the outage, and a restarted
        operator must not keep saying "the event stream is down" once everything has recovered.
        """
        ready, reconciling, stalled = (conditions.get(kind) or {} for kind in ("Ready", "Reconciling", "Stalled"))
        if self.phase is Phase.FAILED:
            source = stalled
        elif self.phase in _RECONCILING and _str(reconciling.get("reason")) != "Deleting":
            source = reconciling
        elif ready.get("status") in ("True", "False") and _str(ready.get("reason")) not in (
            _OUTAGE_REASON,
            Reason.FLAPPING,  # describes the changes of an episode a restart does not carry on
        ):
            source = ready
        else:
            source = {}
        reason, message = _str(source.get("reason")), _str(source.get("message"))
        # Only the vocabulary: a reason written by hand, or by an older version, is not carried on.
        if reason in _REASONS and message is not None:
            return reason, message
        return self._phase_description()

    def _phase_description(self) -> tuple[str, str]:
        """A reason and message for the phase alone, when nothing better was persisted."""
        if self.phase is Phase.PENDING:
            return "Pending", "Waiting to create the instance in Evolution API."
        if self.phase is Phase.CREATING:
            return (
                "Created",
                f"Instance {self.instance_name} exists in Evolution API; waiting for its QR code or state.",
            )
        if self.phase is Phase.AWAITING_SCAN:
            return "QRCodeIssued", _awaiting_scan_message(self.qr.pairing_code if self.qr else None)
        if self.phase is Phase.CONNECTING:
            return "WaitingForQRCode", "Evolution is starting the WhatsApp session; the QR code follows."
        if self.phase is Phase.CONNECTED:
            return "Connected", self._connected_message()
        if self.phase is Phase.DISCONNECTED:
            if self.status_reason == 428:
                return "QRCodeLimitReached", (
                    f"No scan before Evolution's QR code limit; set the annotation "
                    f"{RECONNECT_ANNOTATION} to get a new QR code."
                )
            return "ConnectionClosed", _closed_message()
        if self.phase is Phase.LOGGED_OUT:
            reason = _SESSION_ENDING_CLOSES.get(self.status_reason or 401, "LoggedOut")
            return reason, _logged_out_message(reason)
        return "Failed", "The operator cannot go on without a change of the spec."

    # -- lifecycle -------------------------------------------------------------------------------

    def created(
        self, instance_id: str | None, *, adopted: bool = False, recreated: bool = False, renewed: bool = False
    ) -> list[Notice]:
        self.instance_id = instance_id or self.instance_id
        self.qr = None
        name = self.instance_name
        if renewed:
            notice = Notice(
                NoticeType.NORMAL, "Renewed", f"Instance {name} was created afresh in Evolution API for a new pairing."
            )
        elif recreated:
            notice = Notice(
                NoticeType.WARNING,
                "Recreated",
                f"Instance {name} had disappeared from Evolution API and was created again.",
            )
        elif adopted:
            notice = Notice(NoticeType.NORMAL, "Adopted", f"Adopted the existing Evolution API instance {name}.")
        else:
            notice = Notice(NoticeType.NORMAL, "Created", f"Created instance {name} in Evolution API.")
        self._move(Phase.CREATING, notice.reason, f"{notice.message[:-1]}; waiting for its QR code or state.")
        return [notice]

    def removed(self) -> None:
        """Evolution dropped the instance (REMOVE_INSTANCE or a 404); the caller recreates it."""
        self.instance_id = None
        self.qr = None
        self.state = None
        self._move(
            Phase.PENDING,
            "InstanceRemoved",
            f"Instance {self.instance_name} is missing from Evolution API; creating it again.",
        )

    def failed(self, reason: str, message: str) -> list[Notice]:
        entering = self.phase is not Phase.FAILED or self.reason != reason
        self.qr = None
        self._move(Phase.FAILED, reason, message)
        return [Notice(NoticeType.WARNING, reason, message)] if entering else []

    # -- Socket.IO events and REST observations --------------------------------------------------

    # Each public method below is one observation: it may change the phase into or out of
    # Connected, which counts toward flapping (_observe). They call each other's private versions.

    def apply_event(self, event: EvolutionEvent, now: str) -> list[Notice]:
        """One event from Evolution's stream. A removal only resets the state: the caller recreates."""
        return self._observe(now, lambda: self._apply_event(event, now))

    def qr_received(
        self, code: str | None, base64: str | None, pairing_code: str | None, now: str, *, count: int | None = None
    ) -> list[Notice]:
        return self._observe(now, lambda: self._qr_received(code, base64, pairing_code, now, count=count))

    def qr_limit_reached(self, message: str, now: str) -> list[Notice]:
        return self._observe(now, lambda: self._qr_limit_reached(message, now))

    def connection_updated(self, event: ConnectionUpdated, now: str) -> list[Notice]:
        return self._observe(now, lambda: self._connection_updated(event, now))

    def connected(
        self,
        wuid: str | None,
        profile_name: str | None,
        picture: str | None,
        now: str,
        *,
        status_reason: int | None = 200,
    ) -> list[Notice]:
        return self._observe(
            now, lambda: self._connected(wuid, profile_name, picture, now, status_reason=status_reason)
        )

    def connecting(self, now: str) -> list[Notice]:
        """Evolution reports `connecting` and has no QR to show (yet)."""
        return self._observe(now, lambda: self._connecting_observed(now))

    def closed(self, status_reason: int | None, now: str) -> list[Notice]:
        return self._observe(now, lambda: self._closed(status_reason, now))

    def logged_out(self, now: str, *, reason: str = "LoggedOut", status_reason: int | None = 401) -> list[Notice]:
        return self._observe(now, lambda: self._logged_out(now, reason=reason, status_reason=status_reason))

    def tick(self, now: str) -> list[Notice]:
        """Time passed without an observation: ends a flapping episode whose window has calmed down."""
        return self._observe(now, list)

    def _apply_event(self, event: EvolutionEvent, now: str) -> list[Notice]:
        if isinstance(event, QRUpdated):
            return self._qr_received(event.code, event.base64, event.pairing_code, now)
        if isinstance(event, QRLimitReached):
            return self._qr_limit_reached(event.message, now)
        if isinstance(event, ConnectionUpdated):
            return self._connection_updated(event, now)
        if isinstance(event, InstanceLoggedOut):
            return self._logged_out(now)
        if isinstance(event, InstanceRemoved):
            self.removed()
        return []

    def _qr_received(
        self, code: str | None, base64: str | None, pairing_code: str | None, now: str, *, count: int | None = None
    ) -> list[Notice]:
        if code is not None and code == self.last_qr_code and self.qr is not None:
            return []  # the same QR seen again (an event and a REST read of it)
        if code is not None and code == self.last_qr_code and self.phase in WAITING_FOR_PERSON:
            return []  # Evolution's cached QR outlives the session that issued it
        previous_count = self.qr.count if self.qr else 0
        count = int64(count)
        self.qr = QRCode(code, base64, pairing_code, count if count and count > 0 else previous_count + 1, now)
        self.last_qr_code = code
        entering = self.phase is not Phase.AWAITING_SCAN
        self._set_state(ConnectionState.CONNECTING, self.status_reason, now)
        self._move(Phase.AWAITING_SCAN, "QRCodeIssued", _awaiting_scan_message(pairing_code))
        if entering:
            return [
                Notice(
                    NoticeType.NORMAL,
                    "QRCodeIssued",
                    f"QR code issued for instance {self.instance_name}; waiting for a scan.",
                )
            ]
        return []

    def _qr_limit_reached(self, message: str, now: str) -> list[Notice]:
        entering = not (self.phase is Phase.DISCONNECTED and self.reason == "QRCodeLimitReached")
        self.qr = None
        self._set_state(ConnectionState.REFUSED, 428, now)
        self._move(
            Phase.DISCONNECTED,
            "QRCodeLimitReached",
            f"No scan before Evolution's QR code limit ({message}); set the annotation "
            f"{RECONNECT_ANNOTATION} to get a new QR code.",
        )
        if entering:
            return [
                Notice(
                    NoticeType.WARNING,
                    "QRCodeLimitReached",
                    f"Instance {self.instance_name} stopped issuing QR codes without a scan.",
                )
            ]
        return []

    def is_silent_renewal(self, event: EvolutionEvent) -> bool:
        """Whether `event` is Evolution renewing its WhatsApp socket during the QR cycle (every few
        QR codes): nothing a user could see changes, so the state, the status and the Events stay
        as they are. Outside a flapping episode, whose end any observation may bring, applying it
        would change nothing at all: callers may skip it."""
        return (
            isinstance(event, ConnectionUpdated)
            and event.state == ConnectionState.CONNECTING
            and self.phase is Phase.AWAITING_SCAN
            and self.state == ConnectionState.CONNECTING
            and self.flapping is None
        )

    def _connection_updated(self, event: ConnectionUpdated, now: str) -> list[Notice]:
        if event.state == ConnectionState.OPEN:
            return self._connected(
                event.wuid, event.profile_name, event.profile_picture_url, now, status_reason=event.status_reason
            )
        if event.state == ConnectionState.CONNECTING:
            if self.phase is Phase.AWAITING_SCAN and self.state == ConnectionState.CONNECTING:
                # A silent socket renewal (is_silent_renewal): nothing in the status changes (no write).
                return []
            self._set_state(ConnectionState.CONNECTING, event.status_reason, now)
            return self._connecting()
        if event.state == ConnectionState.CLOSE:
            return self._closed(event.status_reason, now)
        if event.state == ConnectionState.REFUSED:
            return self._qr_limit_reached("QR code limit reached", now)
        return []

    def _connected(
        self,
        wuid: str | None,
        profile_name: str | None,
        picture: str | None,
        now: str,
        *,
        status_reason: int | None = 200,
    ) -> list[Notice]:
        entering = self.phase is not Phase.CONNECTED
        self._set_state(ConnectionState.OPEN, status_reason, now)
        self.qr = None
        if wuid:
            self.number = number_from_jid(wuid)
        # The push name often arrives after the first open event (docs/evolution-api.md §4.6): keep the last one.
        self.profile_name = profile_name or self.profile_name
        self.profile_picture_url = picture or self.profile_picture_url
        who = f" as +{self.number}" if self.number else ""
        self._move(Phase.CONNECTED, "Connected", self._connected_message())
        if entering:
            return [
                Notice(NoticeType.NORMAL, "Connected", f"Instance {self.instance_name} connected to WhatsApp{who}.")
            ]
        return []

    def _connecting_observed(self, now: str) -> list[Notice]:
        self._set_state(ConnectionState.CONNECTING, self.status_reason, now)
        return self._connecting()

    def _connecting(self) -> list[Notice]:
        if self.phase is Phase.AWAITING_SCAN:
            return []  # a silent socket renewal during the QR cycle; the QR in status still applies
        if self.phase is Phase.CONNECTING and self.reason == "QRCodeOverdue":
            return []  # the reconnect loop goes on; it was reported once
        was_connected = self.phase is Phase.CONNECTED
        self._move(
            Phase.CONNECTING,
            "Reconnecting" if was_connected else "WaitingForQRCode",
            "Evolution is re-establishing the WhatsApp session."
            if was_connected
            else "Evolution is starting the WhatsApp session; the QR code follows.",
        )
        if was_connected:
            return [
                Notice(
                    NoticeType.WARNING,
                    "Disconnected",
                    f"Instance {self.instance_name} lost its WhatsApp connection; Evolution is reconnecting.",
                )
            ]
        return []

    def qr_overdue(self, waited_seconds: float) -> list[Notice]:
        """Still no QR code long after the session started: say what usually causes it."""
        if self.phase is not Phase.CONNECTING or self.reason != "WaitingForQRCode":
            return []
        text = (
            f"No QR code from Evolution after {waited_seconds:.0f} s; Evolution may be unable to reach "
            "WhatsApp (a stale WhatsApp Web version or blocked egress makes it reconnect without QR codes)"
        )
        self._move(Phase.CONNECTING, "QRCodeOverdue", f"{text}.")
        return [Notice(NoticeType.WARNING, "QRCodeOverdue", f"Instance {self.instance_name}: {text}.")]

    def _closed(self, status_reason: int | None, now: str) -> list[Notice]:
        self._set_state(ConnectionState.CLOSE, status_reason, now)
        if status_reason in _SESSION_ENDING_CLOSES:
            return self._logged_out(now, reason=_SESSION_ENDING_CLOSES[status_reason], status_reason=status_reason)
        entering = self.phase is not Phase.DISCONNECTED
        self.qr = None
        self._move(Phase.DISCONNECTED, "ConnectionClosed", _closed_message())
        if entering:
            return [
                Notice(
                    NoticeType.WARNING, "Disconnected", f"Instance {self.instance_name} is disconnected from WhatsApp."
                )
            ]
        return []

    def _logged_out(self, now: str, *, reason: str = "LoggedOut", status_reason: int | None = 401) -> list[Notice]:
        entering = self.phase is not Phase.LOGGED_OUT
        self._set_state(ConnectionState.CLOSE, status_reason if status_reason is not None else self.status_reason, now)
        self.qr = None
        self._move(Phase.LOGGED_OUT, reason, _logged_out_message(reason))
        if entering:
            return [Notice(NoticeType.WARNING, reason, f"Instance {self.instance_name}: {_logged_out_text(reason)}.")]
        return []

    # -- flapping --------------------------------------------------------------------------------

    def _observe(self, now: str, observation: Callable[[], list[Notice]]) -> list[Notice]:
        """Run one observation; count it when it moves the phase into or out of Connected.

        More than the limit of such changes within the window starts a flapping episode: one Warning
        `Flapping`, Ready's reason `Flapping`, and the per-change notices held back until the window
        holds no more than the limit again (one Normal `Stable`). Times come from `now` alone; an
        unreadable `now` counts nothing and ends nothing.
        """
        was_connected = self.phase is Phase.CONNECTED
        notices = observation()
        changed = was_connected != (self.phase is Phase.CONNECTED)
        moment = posix_time(now)
        if moment is None:
            return self._rate_limited(notices)
        limit, window = self._flapping_limits()
        self.connection_changes = [time for time in self.connection_changes if time > moment - window]
        if changed:
            self.connection_changes.append(moment)
            del self.connection_changes[: -4 * limit]  # a bound; the count only has to exceed the limit
        count = len(self.connection_changes)
        if self.flapping is None and count > limit:
            self.flapping = self._flapping_message(count, window)
            flapping = Notice(NoticeType.WARNING, Reason.FLAPPING, self.flapping)
            return [flapping, *self._rate_limited(notices)]
        if self.flapping is not None and count <= limit:
            self.flapping = None
            stable = Notice(
                NoticeType.NORMAL,
                "Stable",
                f"Instance {self.instance_name} changed connection at most {limit} times in the last "
                f"{_duration(window)}; its connection Events resume.",
            )
            return [stable, *notices]
        if self.flapping is not None and changed:
            self.flapping = self._flapping_message(count, window)
        return self._rate_limited(notices)

    def _rate_limited(self, notices: list[Notice]) -> list[Notice]:
        if self.flapping is None:
            return notices
        return [notice for notice in notices if notice.reason not in _CHANGE_NOTICES]

    def _flapping_limits(self) -> tuple[int, float]:
        changes = self.flapping_changes if self.flapping_changes is not None else self.default_flapping_changes
        window = self.flapping_window if self.flapping_window is not None else self.default_flapping_window
        return max(1, changes), window

    def _flapping_message(self, count: int, window: float) -> str:
        return f"Instance {self.instance_name} changed connection {count} times in the last {_duration(window)}."

    def _shows_flapping(self) -> bool:
        return self.flapping is not None and self.phase not in _NEEDS_PERSON

    # -- pausing ---------------------------------------------------------------------------------

    def pause(self, now: str) -> list[Notice]:
        """The paused annotation is set: no calls to Evolution. Events still update the phase."""
        if self.paused:
            return []
        self.paused = True
        return [
            Notice(
                NoticeType.NORMAL,
                Reason.PAUSED,
                f"Instance {self.instance_name} is paused by the annotation {_PAUSED_ANNOTATION}; "
                "no calls to Evolution API until it is removed.",
            )
        ]

    def resume(self, now: str) -> list[Notice]:
        """The paused annotation is gone: calls to Evolution resume."""
        if not self.paused:
            return []
        self.paused = False
        return [
            Notice(
                NoticeType.NORMAL,
                "Resumed",
                f"Instance {self.instance_name} is no longer paused; calls to Evolution API resume.",
            )
        ]

    # -- calls to Evolution ----------------------------------------------------------------------

    def sync_failed(self, reason: str, message: str) -> list[Notice]:
        changed = self.sync_error is None or self.sync_error.reason != reason
        self.sync_error = SyncError(reason, message)
        return [Notice(NoticeType.WARNING, reason, message)] if changed else []

    def sync_succeeded(self) -> list[Notice]:
        if self.sync_error is None:
            return []
        self.sync_error = None
        return [Notice(NoticeType.NORMAL, "Synced", f"Evolution API answers again for instance {self.instance_name}.")]

    def stream_lost(self, message: str) -> list[Notice]:
        changed = self.stream_error is None
        self.stream_error = message
        return [Notice(NoticeType.WARNING, Reason.EVOLUTION_UNREACHABLE, message)] if changed else []

    def stream_restored(self) -> list[Notice]:
        if self.stream_error is None:
            return []
        self.stream_error = None
        return [Notice(NoticeType.NORMAL, "EventStreamRestored", "Following Evolution API events again.")]

    def _sync_problem(self) -> SyncError | None:
        """What Synced reports when not True: paused first (no calls are made), then the last failure."""
        if self.paused:
            return SyncError(Reason.PAUSED, PAUSED_MESSAGE)
        return self._call_problem()

    def _call_problem(self) -> SyncError | None:
        if self.sync_error is not None:
            return self.sync_error
        if self.stream_error is not None:
            return SyncError(_OUTAGE_REASON, self.stream_error)
        return None

    def _connected_message(self) -> str:
        who = f" as +{self.number}" if self.number else ""
        return f"Connected to WhatsApp{who}."

    # -- status ----------------------------------------------------------------------------------

    def render_status(self, generation: int | None, now: str) -> dict[str, Any]:
        message = self.flapping if self.flapping is not None and self._shows_flapping() else self.message
        problem = self._sync_problem()
        if self.paused:
            message = f"{PAUSED_MESSAGE} (phase: {self.phase.value})"
        elif problem is not None:
            message = f"{problem.message} (last known phase: {self.phase.value})"
        connection = {
            "state": self.state,
            "statusReason": self.status_reason,
            "number": self.number,
            "profileName": self.profile_name,
            "profilePictureUrl": self.profile_picture_url,
            "since": self.since,
        }
        rendered: dict[str, Any] = _within_schema(
            {
                "phase": self.phase.value,
                "paused": None,  # set below: the guard takes no booleans
                "message": message,
                "observedGeneration": generation,
                "instanceName": self.instance_name,
                "server": self.server,
                "instanceId": self.instance_id,
                "qr": self.qr.to_status() if self.qr else None,
                "connection": {key: value for key, value in connection.items() if value is not None},
                "conditions": self._conditions(generation, now),
            }
        )
        # Removed (a merge patch's null) when not paused, so a resumed instance has no `paused` left.
        rendered["paused"] = True if self.paused else None
        return rendered

    def _conditions(self, generation: int | None, now: str) -> list[dict[str, Any]]:
        outage = self._call_problem()  # paused or not: events may not be arriving
        problem = self._sync_problem()
        if outage is not None and outage.reason == _OUTAGE_REASON:
            ready: tuple[str, str, str] = (
                "Unknown",
                Reason.EVOLUTION_UNREACHABLE,
                "Evolution API is unreachable; the connection state is unknown.",
            )
        elif self.flapping is not None and self._shows_flapping():
            ready = ("True" if self.phase is Phase.CONNECTED else "False", Reason.FLAPPING, self.flapping)
        elif self.phase is Phase.CONNECTED:
            ready = ("True", "Connected", self.message)
        else:
            ready = ("False", self.reason, self.message)
        if problem is not None:
            synced = ("False", problem.reason, problem.message)
        else:
            synced = ("True", "Synced", "The last call to Evolution API succeeded.")
        wanted: list[tuple[str, tuple[str, str, str]]] = [("Ready", ready), ("Synced", synced)]
        if self.deleting:
            wanted.append(("Reconciling", ("True", "Deleting", "Removing the instance from Evolution API.")))
        elif self.phase in _RECONCILING:
            wanted.append(("Reconciling", ("True", self.reason, self.message)))
        if self.phase is Phase.FAILED:
            wanted.append(("Stalled", ("True", self.reason, self.message)))
        conditions = []
        present = set()
        for kind, (status, reason, message) in wanted:
            present.add(kind)
            previous = self.condition_times.get(kind)
            if previous is None or previous[0] != status:
                self.condition_times[kind] = (status, now)
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": self.condition_times[kind][1],
                }
            )
        for kind in list(self.condition_times):
            if kind not in present:
                del self.condition_times[kind]
        return conditions

    # -- helpers ---------------------------------------------------------------------------------

    def _move(self, phase: Phase, reason: str, message: str) -> None:
        self.phase = phase
        self.reason = reason
        self.message = message

    def _set_state(self, state: str, status_reason: int | None, now: str) -> None:
        if state != self.state:
            self.since = now
        self.state = state
        self.status_reason = int64(status_reason)


def _duration(seconds: float) -> str:
    """600 -> "10 minutes", 3600 -> "1 hour", 90 -> "90 seconds"."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def _awaiting_scan_message(pairing_code: str | None) -> str:
    if pairing_code:
        return f"Waiting for a scan: enter pairing code {pairing_code} in WhatsApp on the phone, or scan the QR code."
    return "Waiting for a scan: the QR code is in .status.qr.code."


def _closed_message() -> str:
    return f"The WhatsApp session is closed; set the annotation {RECONNECT_ANNOTATION} to connect again."


def _logged_out_text(reason: str) -> str:
    if reason == "Forbidden":
        return "WhatsApp refused the session (403 forbidden; the number may be banned)"
    return "The WhatsApp session was logged out (unlinked on the phone or logged out in Evolution)"


def _logged_out_message(reason: str) -> str:
    return f"{_logged_out_text(reason)}; set the annotation {RECONNECT_ANNOTATION} for a new QR code."


def _within_schema(value: Any) -> Any:
    """The rendered status with every integer within int64 and every string encodable as UTF-8.

    Values are checked where they are parsed; this is the last guard before the apiserver, which
    refuses an out-of-range integer (422) and could not even be sent a lone surrogate. A key whose
    value does not fit (an integer out of range, a boolean: the status declares none) is left out.
    It runs on every rendered status: one new dict per level.
    """
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            if item is None:
                result[key] = None
            else:
                cleaned = _within_schema(item)
                if cleaned is not None:
                    result[key] = cleaned
        return result
    if isinstance(value, list):
        return [_within_schema(item) for item in value]
    if isinstance(value, str):
        return valid_unicode(value)
    if value is None:
        return None
    if isinstance(value, int):
        return int64(value)  # a bool too: the status declares no boolean field
    return value


def number_from_jid(jid: str) -> str | None:
    """`5511987654321:12@s.whatsapp.net` -> `5511987654321` (device suffix and server dropped)."""
    user = jid.split("@", 1)[0].split(":", 1)[0]
    return user if user.isascii() and user.isdigit() else None


def _timestamp(value: Any) -> str | None:
    """A persisted RFC 3339 time as this operator writes them, else None (it would be refused)."""
    text = _str(value)
    if text is None or len(text) > 40:
        return None
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return text if "T" in text and text[-1] in "Zz0123456789" else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
