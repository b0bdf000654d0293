"""The kubectl plugin: QR rendering (decoded back), status table, messages, and the CLI on a fake API."""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

import pytest
import segno
from kubernetes.client.exceptions import ApiException

from whatsapp_operator.cli.kubectl import api as kubectl_api
from whatsapp_operator.cli.kubectl import commands, rendering
from whatsapp_operator.engine.state import InstanceState
from whatsapp_operator.names import RECONNECT_ANNOTATION

NOW = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
# The shape of a Baileys QR payload: ref, noise key, identity key, adv secret.
WHATSAPP_CODE = (
    "2@y8sB0kX4pQ1m+T3rNzVh5JcL9wGdE7aUoYfK2iMbRnSxPqZe6vWtHlDjCgFuA0==,"
    "Xn3vQk8Jt1Lp5Rz9Wb2Ys6Md4Hf7Cg0Ae3Ki8Uo1Ol5Nm=,"
    "Vb7Yt2Wq9Xe4Rr1Tt6Yy3Uu8Ii5Oo0Pp7Aa2Ss9Dd4Ff=,"
    "Gg6Hh1Jj8Kk3Ll0Zz5Xx2Cc7Vv4Bb9Nn1Mm6QqWwEe="
)
INK = {" ": (False, False), "▀": (True, False), "▄": (False, True), "█": (True, True)}


def parse_half_blocks(text: str) -> list[list[bool]]:
    """Rendered text back to rows of inked modules (two per character, top then bottom)."""
    lines = text.split("\n")
    assert len({len(line) for line in lines}) == 1, "every line must be as wide as the symbol"
    rows: list[list[bool]] = []
    for line in lines:
        pairs = [INK[char] for char in line]  # KeyError on any other character
        rows.append([top for top, _ in pairs])
        rows.append([bottom for _, bottom in pairs])
    return rows


def segno_matrix(code: str) -> list[list[bool]]:
    qr = segno.make_qr(code, error="L")
    return [[bool(module) for module in row] for row in qr.matrix_iter(scale=1, border=4)]


def decode_dark_modules(text: str, *, invert: bool, height: int) -> list[list[bool]]:
    inked = parse_half_blocks(text)
    assert len(inked) in (height, height + 1)
    assert not any(any(row) for row in inked[height:]), "a padding half row must be background"
    return [[cell == invert for cell in row] for row in inked[:height]]


def wai(name: str = "shop-123", namespace: str = "default", **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "whatsapp-operator.io/v1alpha1",
        "kind": "WhatsAppInstance",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {},
    }
    if status:
        obj["status"] = status
    return obj


def awaiting(
    code: str = WHATSAPP_CODE,
    count: int = 2,
    updated: str = "2025-03-01T11:59:48Z",
    pairing: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    qr = {"code": code, "count": count, "updatedAt": updated}
    if pairing:
        qr["pairingCode"] = pairing
    return wai(
        phase="AwaitingScan",
        message="Waiting for a scan: the QR code is in .status.qr.code.",
        qr=qr,
        **kw,
    )


def connected(name: str = "shop-123", namespace: str = "default", profile: str | None = "ACME") -> dict:
    connection = {"state": "open", "number": "5511987654321"}
    if profile:
        connection["profileName"] = profile
    return wai(
        name,
        namespace,
        phase="Connected",
        message="Connected to WhatsApp as +5511987654321.",
        connection=connection,
    )


# -- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [WHATSAPP_CODE, "hello", "x" * 500])
@pytest.mark.parametrize("invert", [False, True])
def test_rendered_qr_decodes_back_to_segnos_matrix_with_quiet_zone(code: str, invert: bool) -> None:
    expected = segno_matrix(code)
    text = rendering.render_qr(code, invert=invert)
    assert set(text) <= set(INK) | {"\n"}
    assert len(text.split("\n")) == (len(expected) + 1) // 2  # two module rows per line
    assert decode_dark_modules(text, invert=invert, height=len(expected)) == expected


def test_default_rendering_draws_light_modules_as_blocks_for_dark_terminals() -> None:
    text = rendering.render_qr(WHATSAPP_CODE)
    lines = text.split("\n")
    width = len(segno_matrix(WHATSAPP_CODE)[0])
    # The quiet zone is light: the first two lines (four module rows) are solid blocks.
    assert lines[0] == lines[1] == "█" * width
    # Module rows 4 and 5: the upper-left finder pattern (a dark 7-module ring) after four
    # modules of quiet zone; in row 5 its inside is light, so it is inked in the lower half.
    assert lines[2].startswith("████ ▄▄▄▄▄ ")
    inverted = rendering.render_qr(WHATSAPP_CODE, invert=True).split("\n")
    assert inverted[0] == " " * width
    assert inverted[2].startswith("    █▀▀▀▀▀█")


def test_quiet_zone_is_four_modules_on_every_side() -> None:
    dark = decode_dark_modules(rendering.render_qr("hello"), invert=False, height=len(segno_matrix("hello")))
    size = len(dark)
    assert size == 21 + 8  # version 1 plus the quiet zone
    for index in range(4):
        assert not any(dark[index]) and not any(dark[size - 1 - index])
        assert not any(row[index] for row in dark) and not any(row[size - 1 - index] for row in dark)
    assert dark[4][4:11] == [True] * 7  # the top of the upper-left finder pattern


# -- ages, messages, table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (12, "12s"),
        (59, "59s"),
        (60, "1m"),
        (200, "3m"),
        (3599, "59m"),
        (3600, "1h"),
        (86399, "23h"),
        (3 * 86400 + 5, "3d"),
        (-5, "0s"),
    ],
)
def test_format_age(seconds: int, text: str) -> None:
    assert rendering.format_age(datetime.timedelta(seconds=seconds)) == text


def test_qr_age_from_updated_at() -> None:
    assert rendering.qr_age(awaiting(updated="2025-03-01T11:59:48Z"), NOW) == "12s"
    assert rendering.qr_age(awaiting(updated="2025-03-01T11:57:00+00:00"), NOW) == "3m"
    assert rendering.qr_age(awaiting(updated="not a time"), NOW) == "-"
    assert rendering.qr_age(connected(), NOW) == "-"


def test_describe_connected() -> None:
    assert rendering.describe_connected(connected()) == "shop-123 is connected as +5511987654321 (ACME)"
    assert rendering.describe_connected(connected(profile=None)) == "shop-123 is connected as +5511987654321"
    bare = wai(phase="Connected", connection={"state": "open"})
    assert rendering.describe_connected(bare) == "shop-123 is connected"


def test_qr_view_shows_code_pairing_code_count_and_age() -> None:
    view = rendering.qr_view(awaiting(pairing="WZYEH1YY", count=3), NOW)
    qr_text = rendering.render_qr(WHATSAPP_CODE)
    assert view.startswith(qr_text + "\n")
    assert "Pairing code: WZYEH1YY" in view
    assert "QR #3, issued 12s ago." in view
    assert "Linked devices" in view


def test_qr_view_without_qr_gives_phase_and_message_and_the_way_out() -> None:
    obj = wai(phase="LoggedOut", message="The WhatsApp session was logged out.")
    view = rendering.qr_view(obj, NOW)
    assert "█" not in view
    assert "shop-123 has no QR code to scan (LoggedOut): The WhatsApp session was logged out." in view
    assert "kubectl whatsapp reconnect shop-123 -n default" in view
    assert "no status yet" in rendering.qr_view(wai(), NOW)


def test_qr_view_reads_the_status_the_operator_renders() -> None:
    state = InstanceState(instance_name="default-shop-123")
    state.qr_received(WHATSAPP_CODE, "data:image/png;base64,AAAA", "ABCD1234", "2025-03-01T11:59:30Z")
    obj = wai()
    obj["status"] = state.render_status(1, "2025-03-01T11:59:30Z")
    assert rendering.has_qr(obj)
    view = rendering.qr_view(obj, NOW)
    assert rendering.render_qr(WHATSAPP_CODE) in view
    assert "Pairing code: ABCD1234" in view and "QR #1, issued 30s ago." in view
    state.connected("5511987654321:7@s.whatsapp.net", "ACME", None, "2025-03-01T12:00:00Z")
    obj["status"] = state.render_status(1, "2025-03-01T12:00:00Z")
    assert rendering.is_connected(obj) and not rendering.has_qr(obj)
    assert rendering.describe_connected(obj) == "shop-123 is connected as +5511987654321 (ACME)"


def test_status_table() -> None:
    on_main = connected("b-shop", "team-b")
    on_main["status"]["server"] = "ClusterEvolutionServer/main"
    items = [
        on_main,
        awaiting(name="a-shop", namespace="team-a", server="environment"),
        wai(
            "c-shop",
            "team-a",
            phase="Disconnected",
            message="The WhatsApp session is closed;\nset the annotation.",
        ),
    ]
    table = rendering.format_status_table(items, NOW, all_namespaces=True)
    lines = table.split("\n")
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "SERVER",
        "PHASE",
        "NUMBER",
        "PROFILE",
        "QR",
        "AGE",
        "MESSAGE",
    ]
    assert lines[1].split()[:7] == ["team-a", "a-shop", "environment", "AwaitingScan", "-", "-", "12s"]
    assert lines[2].split()[:7] == ["team-a", "c-shop", "-", "Disconnected", "-", "-", "-"]  # no status.server yet
    assert lines[2].endswith("The WhatsApp session is closed; set the annotation.")
    assert lines[3].split()[:7] == [
        "team-b",
        "b-shop",
        "ClusterEvolutionServer/main",
        "Connected",
        "+5511987654321",
        "ACME",
        "-",
    ]
    # Every column lines up: PHASE starts at the same offset on each line.
    assert len({line.index(word) for line, word in zip(lines, ["PHASE", "Awaiting", "Disc", "Conn"], strict=True)}) == 1
    # Columns line up: every MESSAGE starts at the same offset.
    starts = {line.index(word) for line, word in zip(lines, ["MESSAGE", "Waiting", "The", "Connected to"], strict=True)}
    assert len(starts) == 1
    assert all(line == line.rstrip() for line in lines)


def test_status_table_without_namespace_column_and_empty() -> None:
    table = rendering.format_status_table([connected()], NOW, all_namespaces=False)
    assert table.split("\n")[0].startswith("NAME ")
    assert "default" not in table
    deleting = connected()
    deleting["metadata"]["deletionTimestamp"] = "2025-03-01T11:00:00Z"
    assert "Connected (deleting)" in rendering.format_status_table([deleting], NOW, all_namespaces=False)
    assert rendering.format_status_table([], NOW, all_namespaces=True) == ""


def test_reconnect_patch_body() -> None:
    body = kubectl_api.reconnect_patch(
        datetime.datetime(2025, 3, 1, 9, 0, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=-3)))
    )
    assert body == {"metadata": {"annotations": {RECONNECT_ANNOTATION: "2025-03-01T12:00:05.123456Z"}}}
    assert RECONNECT_ANNOTATION == "whatsapp-operator.io/reconnect"


# -- the CLI on a fake API -------------------------------------------------------------------------


def not_found(name: str) -> ApiException:
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "NotFound",
        "code": 404,
        "message": f'whatsappinstances.whatsapp-operator.io "{name}" not found',
        "details": {"name": name, "group": "whatsapp-operator.io", "kind": "whatsappinstances"},
    }
    return ApiException(status=404, reason="Not Found", body=json.dumps(body))


class FakeApi:
    def __init__(
        self,
        objects: list[dict[str, Any]],
        watch_events: list[list[tuple[str, dict]]] | None = None,
    ):
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.watch_events = list(watch_events or [])
        self.calls: list[tuple[Any, ...]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", namespace, name))
        if len(self.calls) > 20:
            raise AssertionError("runaway loop")
        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise not_found(name) from None

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list", namespace))
        return [o for (ns, _), o in self.objects.items() if namespace is None or ns == namespace]

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", namespace, name, body))
        obj = self.get(namespace, name)
        obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        return obj

    def watch(self, namespace: str, name: str, resource_version: str | None):
        self.calls.append(("watch", namespace, name, resource_version))
        if not self.watch_events:
            raise AssertionError("watched with no events left")
        for kind, obj in self.watch_events.pop(0):
            if isinstance(obj, Exception):
                raise obj
            if kind != "DELETED":
                self.objects[(namespace, name)] = obj
            yield kind, obj


def run(argv: list[str], api: FakeApi, namespace: str = "default") -> tuple[int, str, str, dict]:
    out, err = io.StringIO(), io.StringIO()
    seen: dict[str, Any] = {}

    def fake_connect(**kwargs: Any) -> tuple[FakeApi, str]:
        seen.update(kwargs)
        return api, namespace

    code = commands.main(argv, connect=fake_connect, out=out, err=err, now=lambda: NOW)
    return code, out.getvalue(), err.getvalue(), seen


def test_cli_status_all_namespaces() -> None:
    api = FakeApi([connected("b", "team-b"), awaiting(namespace="team-a")])
    code, out, err, _ = run(["status", "-A"], api)
    assert code == 0 and err == ""
    assert api.calls == [("list", None)]
    assert out.split("\n")[0].startswith("NAMESPACE")
    assert "team-a" in out and "team-b" in out and "12s" in out


def test_cli_status_in_default_and_explicit_namespace() -> None:
    api = FakeApi([connected("b", "team-b"), awaiting(namespace="team-a")])
    code, out, err, seen = run(["status"], api, namespace="team-b")
    assert code == 0 and api.calls == [("list", "team-b")]
    assert out.split("\n")[0].startswith("NAME") and "+5511987654321" in out and "team-a" not in out
    assert seen == {"kubeconfig": None, "context": None}
    code, out, err, seen = run(["status", "-n", "nowhere", "--context", "prod"], api, namespace="team-b")
    assert code == 0 and out == "" and err == "No WhatsAppInstances found in nowhere namespace.\n"
    assert api.calls[-1] == ("list", "nowhere") and seen["context"] == "prod"


def test_cli_qr_once_prints_the_code() -> None:
    api = FakeApi([awaiting(pairing="WZYEH1YY")])
    code, out, err, _ = run(["qr", "shop-123"], api)
    assert code == 0 and err == ""
    assert rendering.render_qr(WHATSAPP_CODE) in out and "Pairing code: WZYEH1YY" in out
    code, out, _, _ = run(["qr", "shop-123", "--invert"], api)
    assert rendering.render_qr(WHATSAPP_CODE, invert=True) in out


def test_cli_qr_once_connected_and_without_qr() -> None:
    api = FakeApi(
        [
            connected(namespace="team-a"),
            wai("gone", "team-a", phase="Disconnected", message="No scan before the QR limit."),
        ]
    )
    code, out, err, _ = run(["qr", "shop-123", "-n", "team-a"], api)
    assert (code, out, err) == (0, "shop-123 is connected as +5511987654321 (ACME)\n", "")
    code, out, err, _ = run(["qr", "gone", "-n", "team-a"], api)
    assert code == 1 and "(Disconnected): No scan before the QR limit." in out


def test_cli_qr_watch_redraws_on_rotation_and_exits_when_connected() -> None:
    first = awaiting(count=1)
    bookkeeping = awaiting(count=1)  # the same QR: kopf annotations changed, nothing to redraw
    rotated = awaiting(code=WHATSAPP_CODE[::-1], count=2, updated="2025-03-01T11:59:58Z")
    scanned = wai(phase="Connecting", message="Evolution is starting the WhatsApp session.")
    api = FakeApi(
        [first],
        [
            [("MODIFIED", bookkeeping), ("MODIFIED", rotated)],  # then the watch ends
            [("MODIFIED", scanned), ("MODIFIED", connected())],
        ],
    )
    code, out, err, _ = run(["qr", "shop-123", "--watch"], api)
    assert code == 0 and err == ""
    assert out.count(rendering.render_qr(WHATSAPP_CODE)) == 1
    assert out.count(rendering.render_qr(WHATSAPP_CODE[::-1])) == 1
    assert "QR #2, issued 2s ago." in out
    assert "no QR code to scan (Connecting)" in out
    assert out.rstrip().endswith("shop-123 is connected as +5511987654321 (ACME)")
    assert "\x1b[" not in out  # not a terminal: no screen clearing
    kinds = [call[0] for call in api.calls]
    assert kinds == ["get", "watch", "get", "watch"]  # the object is read again after a watch ends
    assert api.calls[1] == ("watch", "default", "shop-123", "1")


def test_cli_qr_watch_survives_an_expired_watch_and_reports_deletion() -> None:
    api = FakeApi(
        [awaiting()],
        [[("MODIFIED", ApiException(status=410, reason="Gone"))], [("DELETED", awaiting())]],
    )
    code, out, err, _ = run(["qr", "shop-123", "-w"], api)
    assert code == 1 and out.count(rendering.render_qr(WHATSAPP_CODE)) == 1  # drawn once, not per read
    assert err == 'error: whatsappinstances.whatsapp-operator.io "shop-123" was deleted\n'
    assert [call[0] for call in api.calls] == ["get", "watch", "get", "watch"]


def test_cli_reconnect_patches_the_annotation() -> None:
    api = FakeApi([wai(phase="LoggedOut", message="logged out")])
    code, out, err, _ = run(["reconnect", "shop-123"], api)
    assert code == 0 and err == ""
    expected = {"metadata": {"annotations": {RECONNECT_ANNOTATION: "2025-03-01T12:00:00.000000Z"}}}
    assert api.calls[0] == ("patch", "default", "shop-123", expected)
    assert "kubectl whatsapp qr shop-123 -n default --watch" in out
    assert "nothing changes" not in out
    api = FakeApi([connected()])
    code, out, _, _ = run(["restart", "shop-123"], api)
    assert code == 0 and api.calls[0][0] == "patch"
    assert "nothing changes now" in out


def test_cli_logout_patches_the_logout_annotation() -> None:
    api = FakeApi([connected()])
    code, out, err, _ = run(["logout", "shop-123"], api)
    assert code == 0 and err == ""
    expected = {"metadata": {"annotations": {"whatsapp-operator.io/logout": "2025-03-01T12:00:00.000000Z"}}}
    assert api.calls[0] == ("patch", "default", "shop-123", expected)
    assert "kubectl whatsapp reconnect shop-123" in out


def test_cli_reconnect_help_names_the_annotation(capsys: pytest.CaptureFixture[str]) -> None:
    code = commands.main(["reconnect", "--help"], connect=lambda **_: pytest.fail("no API for --help"))
    assert code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert RECONNECT_ANNOTATION in help_text


def test_cli_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["qr"], connect=lambda **_: pytest.fail("no API for usage errors")) == 2
    assert commands.main([], connect=lambda **_: pytest.fail("no API for usage errors")) == 2
    assert "usage: kubectl whatsapp" in capsys.readouterr().err


def test_cli_errors_are_one_line_on_stderr() -> None:
    code, out, err, _ = run(["qr", "missing", "-n", "team-a"], FakeApi([]))
    assert (code, out) == (1, "")
    assert err == 'error: whatsappinstances.whatsapp-operator.io "missing" not found in namespace "team-a"\n'

    class NoCrd(FakeApi):
        def list(self, namespace: str | None) -> list[dict[str, Any]]:
            raise ApiException(status=404, reason="Not Found", body="404 page not found")

    code, _, err, _ = run(["status", "-A"], NoCrd([]))
    assert code == 1 and err.count("\n") == 1 and "is the CRD installed?" in err

    class Forbidden(FakeApi):
        def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
            message = (
                'whatsappinstances.whatsapp-operator.io "shop-123" is forbidden: User "dev" '
                'cannot patch resource "whatsappinstances"'
            )
            raise ApiException(status=403, reason="Forbidden", body=json.dumps({"message": message}))

    code, _, err, _ = run(["reconnect", "shop-123"], Forbidden([]))
    assert code == 1 and err.startswith('error: whatsappinstances.whatsapp-operator.io "shop-123" is forbidden')
    assert err.count("\n") == 1


def test_cli_no_kubeconfig_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = commands.main(["status"], out=out, err=err)  # the real connect()
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue().startswith("error: no kubeconfig found") and err.getvalue().count("\n") == 1


@pytest.fixture
def restore_kubernetes_defaults():
    """connect() loads a kubeconfig into the client's process-wide default configuration."""
    import kubernetes.client

    saved = kubernetes.client.Configuration.get_default_copy()
    yield
    kubernetes.client.Configuration.set_default(saved)


def test_cli_unreachable_cluster_is_one_line(tmp_path: Any, restore_kubernetes_defaults: None) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: shops}}]\n"
    )
    api, namespace = kubectl_api.connect(kubeconfig=str(kubeconfig))
    assert namespace == "shops" and isinstance(api, kubectl_api.KubeApi)
    out, err = io.StringIO(), io.StringIO()
    code = commands.main(["status", "--kubeconfig", str(kubeconfig)], out=out, err=err)  # real connect()
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue().startswith("error: cannot reach the Kubernetes API")
    assert err.getvalue().count("\n") == 1


# -- the thin Kubernetes layer ---------------------------------------------------------------------


class RecordingCustomObjects:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            return {"items": [connected()]} if method.startswith("list") else connected()

        return call


class FakeWatch:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.stream_calls: list[tuple[Any, ...]] = []

    def stream(self, func: Any, *args: Any, **kwargs: Any):
        self.stream_calls.append((func, args, kwargs))
        return iter(self.events)


def test_kube_api_calls_the_custom_objects_api_for_whatsappinstances() -> None:
    custom = RecordingCustomObjects()
    watch = FakeWatch([{"type": "MODIFIED", "raw_object": connected(), "object": None}])
    api = kubectl_api.KubeApi(custom, watch_factory=lambda: watch)
    assert api.get("ns", "shop")["metadata"]["name"] == "shop-123"
    assert len(api.list("ns")) == 1 and len(api.list(None)) == 1
    api.patch("ns", "shop", {"metadata": {}})
    group = ("whatsapp-operator.io", "v1alpha1")
    assert custom.calls == [
        ("get_namespaced_custom_object", (*group, "ns", "whatsappinstances", "shop"), {}),
        ("list_namespaced_custom_object", (*group, "ns", "whatsappinstances"), {}),
        ("list_cluster_custom_object", (*group, "whatsappinstances"), {}),
        (
            "patch_namespaced_custom_object",
            (*group, "ns", "whatsappinstances", "shop", {"metadata": {}}),
            {},
        ),
    ]
    events = list(api.watch("ns", "shop", "42"))
    assert events == [("MODIFIED", connected())]
    func, args, kwargs = watch.stream_calls[0]
    assert args == (*group, "ns", "whatsappinstances")
    assert kwargs == {"field_selector": "metadata.name=shop", "resource_version": "42"}
    func()  # the function watched is the API object's list_namespaced_custom_object
    assert custom.calls[-1][0] == "list_namespaced_custom_object"


# -- text from Evolution and other users is printed safely ------------------------------------------

# Escape sequences that would clear the screen, set the window title, draw a hyperlink, switch
# colours or reset the terminal, 8-bit C1 controls, and bidirectional overrides and isolates.
HOSTILE = [
    "\x1b[2J\x1b[H",
    "\x1b]0;owned\x07",
    "\x1b]8;;https://evil.example\x1b\\",
    "\x1b[31m",
    "\x1bc",
    "\x9b1;31m",
    "\x9d2;title\x9c",
    "\x00\x07\x08\x7f\x8d\x90",
    "\u202e",
    "\u202a\u202b\u202c\u202d",
    "\u2066\u2067\u2068\u2069",
    "\u200e\u200f\u061c",
]
UNSAFE = set(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) - {"\n"}
UNSAFE |= {
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
}


def spiked(text: str) -> str:
    """`text` with every hostile sequence inserted around and inside it."""
    middle = len(text) // 2
    return "".join(HOSTILE) + text[:middle] + "".join(HOSTILE) + text[middle:] + "".join(HOSTILE)


def assert_clean(output: str) -> None:
    found = sorted({f"U+{ord(char):04X}" for char in output if char in UNSAFE})
    assert not found, f"unsafe characters printed: {found}"
    assert "owned" not in output and "evil.example" not in output and "title" not in output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Connected to WhatsApp as +5511987654321.", "Connected to WhatsApp as +5511987654321."),
        ("A\x1b[1;31mred\x1b[0m", "Ared"),
        ("x\x1b]0;title\x07y", "xy"),
        ("x\x1b]8;;http://e\x1b\\link\x1b]8;;\x1b\\y", "xlinky"),
        ("x\x1b]2;unterminated", "x2;unterminated"),  # no terminator: only ESC ] goes
        ("\x90not a string\x1b[0m", "not a string"),
        ("a\x1bcb", "ab"),
        ("a\x9b2Jb", "ab"),
        ("a\x00b\x7fc\x85d", "abc d"),
        ("one\ntwo\r\nthree\tfour", "one two three four"),
        ("\u202etxt.exe\u202c", "txt.exe"),
        ("\u2066a\u2069 \u200eb\u200f\u061c", "a b"),
        ("Loja \u00e1gua \U0001f468\u200d\U0001f469", "Loja \u00e1gua \U0001f468\u200d\U0001f469"),
        (None, ""),
        (12, "12"),
    ],
)
def test_printable(text: Any, expected: str) -> None:
    assert rendering.printable(text) == expected


def hostile_connected() -> dict[str, Any]:
    obj = connected(profile=spiked("ACME"))
    obj["metadata"]["name"] = spiked("shop-123")
    obj["metadata"]["namespace"] = spiked("default")
    # The phase stays "Connected" (it decides what is shown); the CRD's enum also keeps it clean.
    obj["status"]["message"] = spiked("Connected to WhatsApp.")
    obj["status"]["connection"]["number"] = spiked("5511987654321")
    obj["status"]["conditions"] = [
        {"type": "Ready", "status": "True", "reason": "Connected", "message": spiked("ready")}
    ]
    return obj


def hostile_awaiting() -> dict[str, Any]:
    obj = awaiting(pairing=spiked("WZYEH1YY"))
    obj["metadata"]["name"] = spiked("shop-123")
    obj["status"]["message"] = spiked("Waiting for a scan.")
    obj["status"]["conditions"] = [{"type": "Synced", "status": "False", "reason": "X", "message": spiked("bad")}]
    return obj


def test_describe_connected_prints_clean_profile_number_and_name() -> None:
    text = rendering.describe_connected(hostile_connected())
    assert_clean(text)
    assert text == "shop-123 is connected as +5511987654321 (ACME)"


def test_qr_view_prints_clean_pairing_code_and_message() -> None:
    view = rendering.qr_view(hostile_awaiting(), NOW)
    assert_clean(view)
    assert "Pairing code: WZYEH1YY (Link" in view
    assert view.split("\n")[-3].startswith("shop-123: scan with WhatsApp")
    no_qr = wai(spiked("gone"), phase=spiked("Disconnected"), message=spiked("No scan."))
    view = rendering.qr_view(no_qr, NOW)
    assert_clean(view)
    assert "gone has no QR code to scan (Disconnected): No scan." in view
    assert "kubectl whatsapp reconnect gone -n default" in view


def test_status_table_prints_clean_cells() -> None:
    hostile = wai(
        spiked("c-shop"),
        spiked("team-a"),
        phase=spiked("Disconnected"),
        message=spiked("closed"),
        connection={"number": spiked("5511"), "profileName": spiked("Shop")},
        server=spiked("EvolutionServer/evo"),
    )
    table = rendering.format_status_table([hostile, hostile_connected()], NOW, all_namespaces=True)
    assert_clean(table)
    lines = table.split("\n")
    assert lines[1].split() == [
        "default",
        "shop-123",
        "-",
        "Connected",
        "+5511987654321",
        "ACME",
        "-",
        "Connected",
        "to",
        "WhatsApp.",
    ]
    assert lines[2].split() == [
        "team-a",
        "c-shop",
        "EvolutionServer/evo",
        "Disconnected",
        "+5511",
        "Shop",
        "-",
        "closed",
    ]


def test_every_command_prints_clean_text() -> None:
    name = hostile_awaiting()["metadata"]["name"]
    # qr, once: a QR with a hostile pairing code and message
    code, out, err, _ = run(["qr", name], FakeApi([hostile_awaiting()]))
    assert code == 0 and err == ""
    assert_clean(out)
    # qr, once, connected
    code, out, err, _ = run(
        ["qr", name],
        FakeApi([{**hostile_connected(), "metadata": {**hostile_connected()["metadata"], "namespace": "default"}}]),
    )
    assert code == 0 and out == "shop-123 is connected as +5511987654321 (ACME)\n"
    # qr --watch: redraws with hostile text, then a hostile connected object
    first = hostile_awaiting()
    rotated = hostile_awaiting()
    rotated["status"]["qr"] = {"code": WHATSAPP_CODE[::-1], "count": 3, "pairingCode": spiked("ABCD")}
    done = hostile_connected()
    done["metadata"]["namespace"] = "default"
    api = FakeApi([first], [[("MODIFIED", rotated), ("MODIFIED", done)]])
    code, out, err, _ = run(["qr", name, "--watch"], api)
    assert code == 0 and err == ""
    assert_clean(out)
    assert "Pairing code: ABCD (" in out and "Waiting for shop-123 to connect" in out
    # status
    code, out, err, _ = run(["status", "-A"], FakeApi([hostile_awaiting(), done]))
    assert code == 0 and err == ""
    assert_clean(out)

    # errors quoting the API server's message
    class Forbidden(FakeApi):
        def list(self, namespace: str | None) -> list[dict[str, Any]]:
            raise ApiException(status=403, reason="Forbidden", body=json.dumps({"message": spiked("forbidden")}))

    code, out, err, _ = run(["status"], Forbidden([]))
    assert code == 1 and err == "error: forbidden\n"


TOO_LONG = "2@" + "x" * 3000  # a version 40 symbol holds 2,953 bytes at level L


def test_a_code_too_long_for_a_qr_symbol_still_shows_the_pairing_code() -> None:
    with pytest.raises(segno.DataOverflowError):
        segno.make_qr(TOO_LONG, error="L")
    api = FakeApi([awaiting(code=TOO_LONG, pairing="WZYEH1YY")])
    code, out, err, _ = run(["qr", "shop-123"], api)
    assert (code, err) == (0, "")
    assert (
        "shop-123: the QR code in status.qr.code cannot be drawn: 3002 characters are more than "
        "a QR symbol holds; use the pairing code." in out
    )
    assert "Pairing code: WZYEH1YY" in out and "█" not in out


def test_a_code_too_long_without_pairing_code_exits_1_with_a_clear_message() -> None:
    code, out, err, _ = run(["qr", "shop-123"], FakeApi([awaiting(code=TOO_LONG)]))
    assert (code, err) == (1, "")
    assert out.startswith(
        "shop-123: the QR code in status.qr.code cannot be drawn: 3002 characters are more than a QR symbol holds.\n"
    )
    # Not a string at all (someone else wrote the status): the same, no traceback.
    code, out, err, _ = run(["qr", "shop-123"], FakeApi([awaiting(code=["x"])]))  # type: ignore[arg-type]
    assert (code, err) == (1, "") and "cannot be drawn: it is not a string but list." in out


def test_watch_goes_on_past_a_code_too_long_and_draws_the_next_one() -> None:
    api = FakeApi(
        [awaiting(code=TOO_LONG, count=1)],
        [[("MODIFIED", awaiting(count=2)), ("MODIFIED", connected())]],
    )
    code, out, err, _ = run(["qr", "shop-123", "--watch"], api)
    assert (code, err) == (0, "")
    assert "cannot be drawn: 3002 characters" in out
    assert out.count(rendering.render_qr(WHATSAPP_CODE)) == 1
    assert out.rstrip().endswith("shop-123 is connected as +5511987654321 (ACME)")
