"""`kubectl whatsapp`: a kubectl plugin to scan, list, reconnect and log out WhatsAppInstances.

Installed as the console script `kubectl-whatsapp`; kubectl finds it on PATH and runs it for
`kubectl whatsapp ...`:

    kubectl whatsapp qr NAME [-n NS] [--watch] [--invert]   the QR code, drawn in the terminal
    kubectl whatsapp status [-n NS | -A]                     a table of instances
    kubectl whatsapp reconnect NAME [-n NS]                  ask the operator for a new QR code
    kubectl whatsapp logout NAME [-n NS]                     ask the operator to unlink the number

The QR code is drawn with Unicode half blocks (two module rows per text line) around a quiet zone
of four modules. By default light modules are printed as foreground blocks and dark modules are
left as terminal background, which gives the dark-on-light code phones expect on a terminal with a
dark background; `--invert` is for terminals with a light background.

Everything that decides what is printed is a pure function of the object and the clock
(`render_qr`, `qr_view`, `describe_connected`, `format_status_table`, `annotation_patch`); the
Kubernetes calls sit behind `KubeApi`, and `main()` accepts a replacement for tests.

Text in the object comes from Evolution API, from WhatsApp (a profile name) or from whoever can
write the resource, so every string printed goes through `printable()` first: terminal control
characters and escape sequences (which could move the cursor, retitle the window or hide text)
and bidirectional overrides (which could make one name look like another) are removed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TextIO

import segno
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from whatsapp_operator.names import GROUP, LOGOUT_ANNOTATION, PLURAL, RECONNECT_ANNOTATION, RESOURCE, VERSION

QUIET_ZONE = 4  # modules of light margin the QR specification asks for around the symbol
# (upper module inked, lower module inked) -> character
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
_CLEAR_SCREEN = "\x1b[H\x1b[2J"
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

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


class PluginError(Exception):
    """A failure worth one line on stderr and exit code 1."""


# -- pure functions -------------------------------------------------------------------------------


def qr_matrix(code: str) -> list[list[bool]]:
    """The QR symbol for `code` as rows of modules (True = dark), quiet zone included."""
    qr = segno.make_qr(code, error="L")  # segno raises the level when it fits the same version
    return [[bool(module) for module in row] for row in qr.matrix_iter(scale=1, border=QUIET_ZONE)]


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


def is_connected(obj: dict[str, Any]) -> bool:
    return _status(obj).get("phase") == "Connected"


def has_qr(obj: dict[str, Any]) -> bool:
    qr = _qr(obj)
    return bool(qr.get("code") or qr.get("pairingCode"))


def describe_connected(obj: dict[str, Any]) -> str:
    """`shop-123 is connected as +5511987654321 (ACME)`."""
    connection = _connection(obj)
    text = f"{_name(obj)} is connected"
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
    name, status, qr = _name(obj), _status(obj), _qr(obj)
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


def format_status_table(items: list[dict[str, Any]], now: datetime.datetime, all_namespaces: bool) -> str:
    """kubectl-style columns; an empty string for no items (the caller says so on stderr)."""
    if not items:
        return ""
    header = ["NAME", "PHASE", "NUMBER", "PROFILE", "QR AGE", "MESSAGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for obj in sorted(items, key=lambda item: (_namespace(item), _name(item))):
        status = _status(obj)
        connection = _connection(obj)
        phase = printable(status.get("phase")) or "-"
        if _deleting(obj):
            phase += " (deleting)"
        number = printable(connection.get("number"))
        row = [
            _name(obj),
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


def annotation_patch(annotation: str, now: datetime.datetime) -> dict[str, Any]:
    """The merge patch that asks the operator for an action: the annotation set to a new UTC timestamp.

    Microseconds make two requests within one second still differ (the operator reacts to a change).
    """
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {annotation: stamp}}}


def reconnect_patch(now: datetime.datetime) -> dict[str, Any]:
    return annotation_patch(RECONNECT_ANNOTATION, now)


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


def _name(obj: dict[str, Any]) -> str:
    return printable(_metadata(obj).get("name")) or "?"


def _namespace(obj: dict[str, Any]) -> str:
    return printable(_metadata(obj).get("namespace"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(_metadata(obj).get("deletionTimestamp"))


def _one_line(value: Any) -> str:
    return printable(value) if value else ""


# -- Kubernetes -----------------------------------------------------------------------------------


class Api(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any]: ...
    def list(self, namespace: str | None) -> list[dict[str, Any]]: ...
    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def watch(
        self, namespace: str, name: str, resource_version: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]: ...


class KubeApi:
    """The four calls the plugin makes, on the kubernetes client's CustomObjectsApi."""

    def __init__(self, custom_objects: Any, watch_factory: Callable[[], Any] | None = None):
        self.custom_objects = custom_objects
        if watch_factory is None:
            import kubernetes.watch

            watch_factory = kubernetes.watch.Watch
        self.watch_factory = watch_factory

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom_objects.get_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, name
        )

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self.custom_objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            result = self.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return list(result.get("items") or [])

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        # The client sends a dict body to this endpoint as application/merge-patch+json.
        return self.custom_objects.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, name, body
        )

    def watch(self, namespace: str, name: str, resource_version: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
        if resource_version:
            kwargs["resource_version"] = resource_version
        stream = self.watch_factory().stream(
            self.custom_objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            **kwargs,
        )
        for event in stream:
            yield str(event.get("type")), event.get("raw_object") or event.get("object") or {}


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[Api, str]:
    """Log in like kubectl (kubeconfig, else in-cluster); returns the API and the default namespace."""
    import kubernetes.client
    import kubernetes.config

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # no retry warnings on stderr
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        namespace = _kubeconfig_namespace(kubeconfig, context)
    except (kubernetes.config.ConfigException, OSError) as kube_error:
        if kubeconfig or context:
            raise PluginError(f"cannot use the kubeconfig: {_one_line(kube_error)}") from None
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            raise PluginError(
                "no kubeconfig found (set KUBECONFIG or create ~/.kube/config) and not running inside a cluster"
            ) from None
        namespace = _service_account_namespace()
    return KubeApi(kubernetes.client.CustomObjectsApi()), namespace


def _kubeconfig_namespace(kubeconfig: str | None, context: str | None) -> str:
    import kubernetes.config

    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


def _service_account_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


def _api_error(error: ApiException, *, namespace: str | None, name: str | None) -> str:
    message = ""
    details = None
    try:
        body = json.loads(error.body) if error.body else None
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        message = _one_line(body.get("message"))
        details = body.get("details")
    if error.status == 404:
        if name is not None and details is not None:
            return f'{RESOURCE} "{name}" not found in namespace "{namespace}"'
        return (
            f"the {RESOURCE} API ({GROUP}/{VERSION}) is not served by this cluster: "
            "is the CRD installed? (kubectl apply -f crds/)"
        )
    if error.status == 401:
        return "the Kubernetes API refused the credentials (401 Unauthorized): check the kubeconfig"
    return message or f"Kubernetes API error {error.status}: {_one_line(error.reason)}"


# -- commands -------------------------------------------------------------------------------------


class _Context:
    def __init__(
        self,
        api: Api,
        namespace: str,
        out: TextIO,
        err: TextIO,
        now: Callable[[], datetime.datetime],
    ):
        self.api, self.namespace, self.out, self.err, self.now = api, namespace, out, err, now

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _cmd_qr(ctx: _Context, args: argparse.Namespace) -> int:
    obj = ctx.api.get(ctx.namespace, args.name)
    if not args.watch:
        if is_connected(obj):
            ctx.print(describe_connected(obj))
            return 0
        view, usable = qr_view_and_usable(obj, ctx.now(), invert=args.invert)
        ctx.print(view)
        return 0 if usable else 1
    return _watch_qr(ctx, args, obj)


def _watch_qr(ctx: _Context, args: argparse.Namespace, obj: dict[str, Any]) -> int:
    shown: tuple[Any, ...] | None = None
    clear = _CLEAR_SCREEN if getattr(ctx.out, "isatty", lambda: False)() else ""

    def show(current: dict[str, Any]) -> None:
        nonlocal shown
        status, qr = _status(current), _qr(current)
        key = (
            status.get("phase"),
            status.get("message"),
            qr.get("code"),
            qr.get("pairingCode"),
            qr.get("count"),
            _deleting(current),
        )
        if key == shown:
            return  # an update that changes nothing on screen (kopf bookkeeping, conditions)
        if shown is not None and not clear:
            ctx.print("")
        ctx.out.write(clear)
        ctx.print(qr_view(current, ctx.now(), invert=args.invert))
        ctx.print(f"Waiting for {_name(current)} to connect (Ctrl-C to stop)...")
        shown = key

    while True:
        if is_connected(obj):
            ctx.print(describe_connected(obj))
            return 0
        show(obj)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        try:
            for kind, changed in ctx.api.watch(ctx.namespace, args.name, version):
                if kind == "DELETED":
                    ctx.err.write(f'error: {RESOURCE} "{printable(args.name)}" was deleted\n')
                    return 1
                if kind not in ("ADDED", "MODIFIED") or not changed:
                    continue
                obj = changed
                if is_connected(obj):
                    ctx.print(describe_connected(obj))
                    return 0
                show(obj)
        except ApiException as error:
            if error.status != 410:  # 410 Gone: the watch expired; read the object again
                raise
        # The watch ended: read the object again (the next loop shows it) and watch from there.
        obj = ctx.api.get(ctx.namespace, args.name)


def _cmd_status(ctx: _Context, args: argparse.Namespace) -> int:
    items = ctx.api.list(None if args.all_namespaces else ctx.namespace)
    table = format_status_table(items, ctx.now(), args.all_namespaces)
    if not table:
        where = "" if args.all_namespaces else f" in {ctx.namespace} namespace"
        ctx.err.write(f"No WhatsAppInstances found{where}.\n")
        return 0
    ctx.print(table)
    return 0


def _cmd_reconnect(ctx: _Context, args: argparse.Namespace) -> int:
    body = reconnect_patch(ctx.now())
    obj = ctx.api.patch(ctx.namespace, args.name, body)
    stamp = body["metadata"]["annotations"][RECONNECT_ANNOTATION]
    ctx.print(f"{RESOURCE}/{args.name} annotated {RECONNECT_ANNOTATION}={stamp}: a new QR code cycle is requested")
    phase = printable(_status(obj).get("phase"))
    if phase in ("Connected", "AwaitingScan", "Connecting"):
        ctx.print(
            f"Note: {args.name} is {phase}; the operator starts a new QR cycle only for a "
            "closed session (Disconnected, LoggedOut), so nothing changes now."
        )
    ctx.print(f"Follow it with: kubectl whatsapp qr {args.name} -n {ctx.namespace} --watch")
    return 0


_RECONNECT_HELP = f"""\
Ask the operator for a new QR code cycle: sets the annotation {RECONNECT_ANNOTATION} to the
current UTC time (a merge patch). The operator acts on it when the WhatsApp session is closed
(phase Disconnected or LoggedOut); a connected instance, or one already showing a QR code, is
left as it is. A logged-out instance is replaced by a fresh one in Evolution API first."""


def _cmd_logout(ctx: _Context, args: argparse.Namespace) -> int:
    body = annotation_patch(LOGOUT_ANNOTATION, ctx.now())
    ctx.api.patch(ctx.namespace, args.name, body)
    stamp = body["metadata"]["annotations"][LOGOUT_ANNOTATION]
    ctx.print(f"{RESOURCE}/{args.name} annotated {LOGOUT_ANNOTATION}={stamp}: the number is being unlinked")
    ctx.print(f"Ask for a new QR code later with: kubectl whatsapp reconnect {args.name} -n {ctx.namespace}")
    return 0


_LOGOUT_HELP = f"""\
Ask the operator to log the WhatsApp session out: sets the annotation {LOGOUT_ANNOTATION} to the
current UTC time (a merge patch). The number is unlinked (or a running QR code cycle stopped) and
the instance goes to LoggedOut; it stays in Evolution API until the WhatsAppInstance is deleted."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else 'default')")
    common.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context to use (default: the current one)")

    parser = argparse.ArgumentParser(
        prog="kubectl whatsapp",
        description="Scan, list, reconnect and log out WhatsAppInstances (whatsapp-operator).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    qr = commands.add_parser(
        "qr",
        parents=[common],
        help="show the QR code to scan in the terminal",
        description="Draw status.qr.code as a QR code in the terminal, with the pairing code when "
        "there is one. Exits 0 when connected (or a QR is shown), 1 when there is no QR "
        "code. With --watch, redraws as the QR code rotates and exits 0 once connected.",
    )
    qr.add_argument("name", metavar="NAME")
    qr.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="follow the instance: redraw when the QR code rotates, stop once connected",
    )
    qr.add_argument(
        "--invert",
        action="store_true",
        help="for terminals with a light background: draw dark modules as blocks",
    )
    qr.set_defaults(handler=_cmd_qr)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="list instances and their state",
        description="A table of WhatsAppInstances: phase, number, profile, age of the current QR code, message.",
    )
    status.add_argument("-A", "--all-namespaces", action="store_true", help="list instances in all namespaces")
    status.set_defaults(handler=_cmd_status)

    reconnect = commands.add_parser(
        "reconnect",
        aliases=["restart"],
        parents=[common],
        help="ask the operator for a new QR code",
        description=_RECONNECT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reconnect.add_argument("name", metavar="NAME")
    reconnect.set_defaults(handler=_cmd_reconnect)

    logout = commands.add_parser(
        "logout",
        parents=[common],
        help="ask the operator to unlink the number",
        description=_LOGOUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logout.add_argument("name", metavar="NAME")
    logout.set_defaults(handler=_cmd_logout)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    connect: Callable[..., tuple[Api, str]] = connect,
    out: TextIO | None = None,
    err: TextIO | None = None,
    now: Callable[[], datetime.datetime] | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else 2
    name = getattr(args, "name", None)
    namespace: str | None = args.namespace
    try:
        api, default_namespace = connect(kubeconfig=args.kubeconfig, context=args.context)
        namespace = namespace or default_namespace
        ctx = _Context(api, namespace, out, err, now or (lambda: datetime.datetime.now(datetime.UTC)))
        return int(args.handler(ctx, args))
    except PluginError as error:
        err.write(f"error: {_one_line(error)}\n")
    except ApiException as error:
        err.write(f"error: {_api_error(error, namespace=namespace, name=name)}\n")
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except Exception as error:  # noqa: BLE001 - a CLI prints one line, not a traceback
        err.write(f"error: {_describe_unexpected(error)}\n")
    return 1


def _describe_unexpected(error: Exception) -> str:
    if isinstance(error, urllib3.exceptions.HTTPError):  # connection refused, TLS, timeouts
        reason = getattr(error, "reason", None) or error
        return f"cannot reach the Kubernetes API: {_one_line(reason)}"
    return f"{type(error).__name__}: {_one_line(error)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
