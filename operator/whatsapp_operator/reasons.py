"""The reasons a WhatsAppInstance's conditions can carry: one vocabulary for the state machine,
the Evolution client's errors and the README (a test keeps the README's list equal to it)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Every reason a condition of the status can carry (README.md, "Condition reasons", lists them)."""

    # Ready, Reconciling and Stalled: what the phase is and why.
    PENDING = "Pending"
    CREATED = "Created"
    ADOPTED = "Adopted"
    RECREATED = "Recreated"
    RENEWED = "Renewed"
    INSTANCE_REMOVED = "InstanceRemoved"
    QR_CODE_ISSUED = "QRCodeIssued"
    WAITING_FOR_QR_CODE = "WaitingForQRCode"
    RECONNECTING = "Reconnecting"
    QR_CODE_OVERDUE = "QRCodeOverdue"
    CONNECTED = "Connected"
    CONNECTION_CLOSED = "ConnectionClosed"
    QR_CODE_LIMIT_REACHED = "QRCodeLimitReached"
    LOGGED_OUT = "LoggedOut"
    FORBIDDEN = "Forbidden"
    SESSION_ENDED = "SessionEnded"
    INVALID_SPEC = "InvalidSpec"
    EVOLUTION_REJECTED_INSTANCE = "EvolutionRejectedInstance"
    FAILED = "Failed"
    DELETING = "Deleting"
    FLAPPING = "Flapping"  # Ready: the connection changes too often (the phase itself stays accurate)
    # Synced: the last call to Evolution (and Ready=Unknown while it cannot be reached).
    SYNCED = "Synced"
    EVOLUTION_UNREACHABLE = "EvolutionUnreachable"
    EVOLUTION_UNAUTHORIZED = "EvolutionUnauthorized"
    EVOLUTION_FORBIDDEN = "EvolutionForbidden"
    EVOLUTION_REJECTED_REQUEST = "EvolutionRejectedRequest"
    EVOLUTION_SERVER_ERROR = "EvolutionServerError"
    EVOLUTION_NOT_READY = "EvolutionNotReady"
    EVOLUTION_BAD_RESPONSE = "EvolutionBadResponse"
    EVOLUTION_UNEXPECTED_STATUS = "EvolutionUnexpectedStatus"
    INSTANCE_NAME_BUSY = "InstanceNameBusy"
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
    STATUS_REJECTED = "StatusRejected"
    SERVER_NOT_FOUND = "ServerNotFound"  # the instance's EvolutionServer/ClusterEvolutionServer does not exist
    SERVER_KEY_MISSING = "ServerKeyMissing"  # the server's API-key Secret (or its key) does not exist
    PAUSED = "Paused"  # the paused annotation: no calls to Evolution for the instance
    WEBHOOK_SECRET_MISSING = "WebhookSecretMissing"  # a Secret a webhook header's value comes from


# Failures worth retrying without any change on our side: outages, 5xx, Evolution still loading,
# Evolution's 200-with-error (docs/evolution-api.md §1.2).
RETRYABLE = frozenset(
    {
        Reason.EVOLUTION_UNREACHABLE,
        Reason.EVOLUTION_SERVER_ERROR,
        Reason.EVOLUTION_NOT_READY,
        Reason.EVOLUTION_BAD_RESPONSE,
    }
)
