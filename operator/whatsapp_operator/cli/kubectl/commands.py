"""`kubectl whatsapp`: a kubectl plugin to scan, list, reconnect and log out WhatsAppInstances.

Installed as the console script `kubectl-whatsapp` (this module's `main`); kubectl finds it on
PATH and runs it for `kubectl whatsapp ...`:

    kubectl whatsapp qr NAME [-n NS] [--watch] [--invert]   the QR code, drawn in the terminal
    kubectl whatsapp status [-n NS | -A]                     a table of instances
    kubectl whatsapp reconnect NAME [-n NS]                  ask the operator for a new QR code
    kubectl whatsapp logout NAME [-n NS]                     ask the operator to unlink the number

Owns the argument parsing, the four commands and what reaches stdout, stderr and the exit code
(including the screen clearing of `qr --watch` on a terminal). It wires the two other modules and
may not do their work: what an object looks like as text is `rendering.py`'s (pure functions of the
object and the clock), every Kubernetes call and error message is `api.py`'s, behind the `Api`
protocol; `main()` accepts a replacement `connect` for tests. Strings from an object are printed
only through `rendering` (its `printable()`), never formatted here from the raw object.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from kubernetes.client.exceptions import ApiException

from whatsapp_operator.cli.kubectl.api import (
    Api,
    PluginError,
    annotation_patch,
    connect,
    describe_api_error,
    describe_unexpected_error,
    reconnect_patch,
)
from whatsapp_operator.cli.kubectl.rendering import (
    describe_connected,
    format_status_table,
    is_connected,
    name_of,
    one_line,
    phase_of,
    printable,
    qr_screen_key,
    qr_view,
    qr_view_and_usable,
)
from whatsapp_operator.names import LOGOUT_ANNOTATION, RECONNECT_ANNOTATION, RESOURCE

_CLEAR_SCREEN = "\x1b[H\x1b[2J"


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
        key = qr_screen_key(current)
        if key == shown:
            return  # an update that changes nothing on screen (kopf bookkeeping, conditions)
        if shown is not None and not clear:
            ctx.print("")
        ctx.out.write(clear)
        ctx.print(qr_view(current, ctx.now(), invert=args.invert))
        ctx.print(f"Waiting for {name_of(current)} to connect (Ctrl-C to stop)...")
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
    phase = phase_of(obj)
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
        description="A table of WhatsAppInstances: Evolution server, phase, number, profile, age of the current "
        "QR code, message.",
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
        err.write(f"error: {one_line(error)}\n")
    except ApiException as error:
        err.write(f"error: {describe_api_error(error, namespace=namespace, name=name)}\n")
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except Exception as error:  # noqa: BLE001 - a CLI prints one line, not a traceback
        err.write(f"error: {describe_unexpected_error(error)}\n")
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
