"""What `kubectl whatsapp` prints: pure functions from WhatsAppInstance objects (and the clock) to text.

Owns the QR drawing (`render_qr`), the `qr` screen (`qr_view`, `describe_connected`), the `status`
table (`format_status_table`), ages (`format_age`, `qr_age`) and `printable()`, the sanitizing of
every string taken from an object. It may not do I/O (no printing, no files, no terminal control)
nor touch the Kubernetes client: `api.py` talks to the cluster and `commands.py` writes the output.

The QR code is drawn with Unicode half blocks (two module rows per text line) around a quiet zone
of four modules. By default light modules are printed as foreground blocks and dark modules are
left as terminal background, which gives the dark-on-light code phones expect on a terminal with a
dark background; `invert` is for terminals with a light background.

Text in the object comes from Evolution API, from WhatsApp (a profile name) or from whoever can
write the resource, so every string printed goes through `printable()` first: terminal control
characters and escape sequences (which could move the cursor, retitle the window or hide text)
and bidirectional overrides (which could make one name look like another) are removed.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import segno

QUIET_ZONE = 4  # modules of light margin the QR specification asks for around the symbol
# (upper module inked, lower module inked) -> character
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}

# ESC and 8-bit C1 sequences a terminal would act on, removed whole: CSI (colours, cursor moves,
# screen clears), OSC/DCS/SOS/PM/APC strings with their terminator (window titles, hyperlinks),
# and other escapes (ESC c resets the terminal). An unterminated string loses only its introducer
# (ESC ] is an escape of its own here, and a lone C1 character a control character below): what
# follows is then plain text, and nothing after it is swallowed.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
)
# Control characters left after that (C0, DEL, C1) and the bidirectional formatting characters:
# embeddings and overrides (U+202A..U+202E), isolates (U+2066..U+2069), LRM/RLM, the Arabic letter mark.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


# -- safe text ------------------------------------------------------------------------------------


def printable(value: Any) -> str:
    """`value` as one line that is safe to print on a terminal.

    Escape sequences, control characters and bidirectional controls are removed; line breaks and
    tabs become spaces and runs of whitespace one space.
    """
    if value is None:
        return ""
    text = _ESCAPE_SEQUENCE.sub("", str(value))
    text = _UNPRINTABLE.sub(lambda match: " " if match.group().isspace() else "", text)
    return " ".join(text.split())


def one_line(value: Any) -> str:
    """`printable(value)`, and an empty string for any false value (0, "", an empty message)."""
    return printable(value) if value else ""


# -- the QR code ----------------------------------------------------------------------------------


def qr_matrix(code: str) -> list[list[bool]]:
    """The QR symbol for `code` as rows of modules (True = dark), quiet zone included."""
    qr = segno.make_qr(code, error="L")  # segno raises the level when it fits the same version
    return [[bool(module) for module in row] for row in qr.matrix_iter(scale=1, border=QUIET_ZONE)]


def render_qr(code: str, *, invert: bool = False) -> str:
    """Draw `code` as a QR code with half blocks, two module rows per line.

    Inked cells are foreground blocks, the rest is terminal background. By default light modules
    (quiet zone included) are inked, for dark terminals; with `invert` dark modules are inked,
    for light terminals. Either way the phone sees dark modules on a light field.
    """
    inked = [[dark == invert for dark in row] for row in qr_matrix(code)]
    if len(inked) % 2:
        inked.append([False] * len(inked[0]))  # the lower half of the last line is background
    lines = []
    for upper, lower in zip(inked[0::2], inked[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[pair] for pair in zip(upper, lower, strict=True)))
    return "\n".join(lines)


def _draw(code: Any, invert: bool) -> tuple[str | None, str]:
    """The QR drawing of `code`, or None and why it cannot be drawn."""
    if not isinstance(code, str):
        return None, f"it is not a string but {type(code).__name__}"
    try:
        return render_qr(code, invert=invert), ""
    except segno.DataOverflowError:  # more than a version 40 symbol holds (2,953 bytes at level L)
        return None, f"{len(code)} characters are more than a QR symbol holds"
    except ValueError as error:
        return None, printable(error) or type(error).__name__


# -- times ----------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_age(delta: datetime.timedelta) -> str:
    """12s, 3m, 5h, 2d (the largest whole unit, like kubectl's AGE; clock skew shows as 0s)."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def qr_age(obj: dict[str, Any], now: datetime.datetime) -> str:
    updated = parse_time(_qr(obj).get("updatedAt"))
    return format_age(now - updated) if updated else "-"


# -- reading an object ----------------------------------------------------------------------------


def is_connected(obj: dict[str, Any]) -> bool:
    return _status(obj).get("phase") == "Connected"


def has_qr(obj: dict[str, Any]) -> bool:
    qr = _qr(obj)
    return bool(qr.get("code") or qr.get("pairingCode"))


def name_of(obj: dict[str, Any]) -> str:
    """The object's name, printable; "?" when it has none."""
    return printable(_metadata(obj).get("name")) or "?"


def phase_of(obj: dict[str, Any]) -> str:
    """status.phase, printable; an empty string when there is none."""
    return printable(_status(obj).get("phase"))


def qr_screen_key(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What the `qr` screen of `obj` depends on: an update that leaves it equal changes nothing shown."""
    status, qr = _status(obj), _qr(obj)
    return (
        status.get("phase"),
        status.get("message"),
        qr.get("code"),
        qr.get("pairingCode"),
        qr.get("count"),
        _deleting(obj),
    )


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _qr(obj: dict[str, Any]) -> dict[str, Any]:
    qr = _status(obj).get("qr")
    return qr if isinstance(qr, dict) else {}


def _connection(obj: dict[str, Any]) -> dict[str, Any]:
    connection = _status(obj).get("connection")
    return connection if isinstance(connection, dict) else {}


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _namespace(obj: dict[str, Any]) -> str:
    return printable(_metadata(obj).get("namespace"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(_metadata(obj).get("deletionTimestamp"))


# -- what the commands show -----------------------------------------------------------------------


def describe_connected(obj: dict[str, Any]) -> str:
    """`shop-123 is connected as +5511987654321 (ACME)`."""
    connection = _connection(obj)
    text = f"{name_of(obj)} is connected"
    if printable(connection.get("number")):
        text += f" as +{printable(connection['number'])}"
    if printable(connection.get("profileName")):
        text += f" ({printable(connection['profileName'])})"
    return text


def qr_view(obj: dict[str, Any], now: datetime.datetime, *, invert: bool = False) -> str:
    """What `kubectl whatsapp qr` shows: the QR code and how to use it, or why there is none."""
    return qr_view_and_usable(obj, now, invert=invert)[0]


def qr_view_and_usable(obj: dict[str, Any], now: datetime.datetime, *, invert: bool = False) -> tuple[str, bool]:
    """`qr_view`, and whether it offers a way to link the phone (a drawn QR code or a pairing code)."""
    name, status, qr = name_of(obj), _status(obj), _qr(obj)
    lines: list[str] = []
    usable = False
    if not has_qr(obj):
        phase = printable(status.get("phase")) or "no status yet"
        message = printable(status.get("message")) or "the operator has not reported on it yet"
        lines.append(f"{name} has no QR code to scan ({phase}): {message}")
        if phase in ("Disconnected", "LoggedOut"):
            lines.append(f"Ask for a new QR code with: kubectl whatsapp reconnect {name} -n {_namespace(obj)}")
    else:
        pairing_code = printable(qr.get("pairingCode"))
        if qr.get("code"):
            drawn, why_not = _draw(qr["code"], invert)
            if drawn is not None:
                usable = True
                lines += [drawn, ""]
                lines.append(f"{name}: scan with WhatsApp on the phone (Settings > Linked devices > Link a device).")
            else:
                lines.append(
                    f"{name}: the QR code in status.qr.code cannot be drawn: {why_not}"
                    + ("; use the pairing code." if pairing_code else ".")
                )
        if pairing_code:
            usable = True
            lines.append(f"Pairing code: {pairing_code} (Link a device > Link with phone number instead).")
        facts = [f"QR #{qr['count']}" if _is_int(qr.get("count")) else "QR"]
        age = qr_age(obj, now)
        if age != "-":
            facts.append(f"issued {age} ago")
        lines.append(", ".join(facts) + ".")
    if _deleting(obj):
        lines.append(f"Note: {name} is being deleted.")
    return "\n".join(lines), usable


def format_status_table(items: list[dict[str, Any]], now: datetime.datetime, all_namespaces: bool) -> str:
    """kubectl-style columns; an empty string for no items (the caller says so on stderr)."""
    if not items:
        return ""
    header = ["NAME", "SERVER", "PHASE", "NUMBER", "PROFILE", "QR AGE", "MESSAGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for obj in sorted(items, key=lambda item: (_namespace(item), name_of(item))):
        status = _status(obj)
        connection = _connection(obj)
        phase = printable(status.get("phase")) or "-"
        if _deleting(obj):
            phase += " (deleting)"
        number = printable(connection.get("number"))
        row = [
            name_of(obj),
            printable(status.get("server")) or "-",  # Kind/name, or "environment"
            phase,
            f"+{number}" if number else "-",
            printable(connection.get("profileName")) or "-",
            qr_age(obj, now),
            printable(status.get("message")) or "-",
        ]
        if all_namespaces:
            row.insert(0, _namespace(obj))
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
