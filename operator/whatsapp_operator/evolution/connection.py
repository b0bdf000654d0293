"""Evolution's connection states (docs/evolution-api.md §3.4 and §4.9), as one type."""

from __future__ import annotations

from enum import StrEnum


class ConnectionState(StrEnum):
    """The states Evolution reports for an instance's WhatsApp session, on REST and in events."""

    OPEN = "open"  # paired and connected
    CONNECTING = "connecting"  # showing QR codes, or a paired session reconnecting
    CLOSE = "close"  # not connected
    REFUSED = "refused"  # the QR-code limit was reached (events only)

    @classmethod
    def parse(cls, value: str | None) -> ConnectionState | None:
        """The state named by `value`; None for a missing or unknown one."""
        try:
            return cls(value) if value is not None else None
        except ValueError:
            return None
