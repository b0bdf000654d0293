"""Configuration from the environment and the command line's first steps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import kopf
import pytest

from whatsapp_operator.cli.main import install_crds, main
from whatsapp_operator.config import ConfigError, OperatorConfig, WebsocketMode
from whatsapp_operator.kube.client import login_from_environment
from whatsapp_operator.redaction import redact

from conftest import run_cli


def test_minimal_environment():
    config = OperatorConfig.from_env({"EVOLUTION_API_URL": "http://evo:8080/", "EVOLUTION_API_KEY": "cfg-key-1"})
    assert config.evolution_url == "http://evo:8080"
    assert config.websocket_mode is WebsocketMode.AUTO
    assert "cfg-key-1" not in repr(config)
    assert "cfg-key-1" not in redact("key is cfg-key-1")


def test_key_from_a_file(tmp_path):
    key_file = tmp_path / "apikey"
    key_file.write_text("file-key-2\n")
    config = OperatorConfig.from_env(
        {
            "EVOLUTION_API_URL": "https://evo",
            "EVOLUTION_API_KEY_FILE": str(key_file),
            "EVOLUTION_WEBSOCKET_MODE": "Instance",
        }
    )
    assert config.evolution_api_key == "file-key-2"
    assert config.websocket_mode is WebsocketMode.INSTANCE


GOOD = {"EVOLUTION_API_URL": "http://evo:8080", "EVOLUTION_API_KEY": "k"}


@pytest.mark.parametrize(
    "env,message",
    [
        ({}, "EVOLUTION_API_URL: not set (for example http://evolution-api:8080)"),
        (
            {"EVOLUTION_API_URL": "evo:8080", "EVOLUTION_API_KEY": "k"},
            "EVOLUTION_API_URL: must start with http:// or https://",
        ),
        (
            {"EVOLUTION_API_URL": "http://evo"},
            "EVOLUTION_API_KEY: not set (set it, or EVOLUTION_API_KEY_FILE to a file holding it)",
        ),
        (
            {**GOOD, "EVOLUTION_API_KEY_FILE": "/x"},
            "EVOLUTION_API_KEY_FILE: set only one of EVOLUTION_API_KEY and EVOLUTION_API_KEY_FILE",
        ),
        (
            {"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY_FILE": "/nonexistent/key"},
            "EVOLUTION_API_KEY_FILE: cannot read '/nonexistent/key': No such file or directory",
        ),
        (
            {**GOOD, "EVOLUTION_WEBSOCKET_MODE": "both"},
            "EVOLUTION_WEBSOCKET_MODE: must be one of: global, instance, auto; got 'both'",
        ),
        (
            {**GOOD, "WHATSAPP_OPERATOR_RESYNC_SECONDS": "-1"},
            "WHATSAPP_OPERATOR_RESYNC_SECONDS: must be a number of seconds from 10 to 86400, got '-1'",
        ),
    ],
)
def test_bad_environment_is_one_line_naming_the_setting(env, message):
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env(env)
    assert str(raised.value) == message
    assert raised.value.setting == message.split(":")[0]


@pytest.mark.parametrize("value", ["0.5", "0", "1025", "64 connects", "nan"])
def test_max_concurrent_connects_is_a_whole_number_from_1_to_1024(value):
    with pytest.raises(ConfigError, match=r"^EVOLUTION_MAX_CONCURRENT_CONNECTS: must be a whole number from 1 to 1024"):
        OperatorConfig.from_env({**GOOD, "EVOLUTION_MAX_CONCURRENT_CONNECTS": value})
    assert OperatorConfig.from_env(GOOD).max_concurrent_connects == 64
    assert OperatorConfig.from_env({**GOOD, "EVOLUTION_MAX_CONCURRENT_CONNECTS": "1"}).max_concurrent_connects == 1


@pytest.mark.parametrize("value", ["0.5", "0", "1.0", "-3", "1025", "8 requests", "٨", "1e1", "nan"])
def test_max_concurrent_requests_is_a_whole_number_from_1_to_1024(value):
    # 0.5 used to be accepted as int(0.5) == 0: a semaphore of 0, every REST call waiting forever.
    with pytest.raises(ConfigError, match=r"^EVOLUTION_MAX_CONCURRENT_REQUESTS: must be a whole number from 1 to 1024"):
        OperatorConfig.from_env({**GOOD, "EVOLUTION_MAX_CONCURRENT_REQUESTS": value})
    assert OperatorConfig.from_env({**GOOD, "EVOLUTION_MAX_CONCURRENT_REQUESTS": "1"}).max_concurrent_requests == 1
    assert (
        OperatorConfig.from_env({**GOOD, "EVOLUTION_MAX_CONCURRENT_REQUESTS": "1024"}).max_concurrent_requests == 1024
    )


@pytest.mark.parametrize(
    "name,low,high",
    [
        ("WHATSAPP_OPERATOR_RESYNC_SECONDS", "10", "86400"),
        ("EVOLUTION_REQUEST_TIMEOUT_SECONDS", "1", "600"),
        ("WHATSAPP_OPERATOR_NUDGE_SECONDS", "5", "86400"),
        ("WHATSAPP_OPERATOR_DRIFT_SECONDS", "60", "86400"),
        ("WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS", "60", "86400"),
    ],
)
@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "infinity", "1e999", "0", "-5", "0.5", "1_000", "٣٠", "30s", "1e6"]
)
def test_seconds_are_finite_and_within_their_range(name, low, high, value):
    # float("nan") > 0 is False, but so is float("nan") <= 0: NaN used to pass, and a NaN resync
    # interval means no resync ever. "٣٠" (Arabic-Indic 30) and "1_000" are floats to Python only.
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({**GOOD, name: value})
    assert str(raised.value) == f"{name}: must be a number of seconds from {low} to {high}, got {value!a}"


def test_seconds_bounds_are_inclusive_and_decimals_are_fine():
    config = OperatorConfig.from_env(
        {**GOOD, "WHATSAPP_OPERATOR_RESYNC_SECONDS": "10", "EVOLUTION_REQUEST_TIMEOUT_SECONDS": "600"}
    )
    assert (config.resync_interval, config.request_timeout) == (10.0, 600.0)
    config = OperatorConfig.from_env(
        {**GOOD, "WHATSAPP_OPERATOR_RESYNC_SECONDS": " 86400 ", "EVOLUTION_REQUEST_TIMEOUT_SECONDS": "1.5"}
    )
    assert (config.resync_interval, config.request_timeout) == (86400.0, 1.5)
    config = OperatorConfig.from_env(
        {**GOOD, "WHATSAPP_OPERATOR_RESYNC_SECONDS": "", "EVOLUTION_REQUEST_TIMEOUT_SECONDS": ""}
    )
    assert (config.resync_interval, config.request_timeout) == (300.0, 30.0)  # empty: the default


def test_nudge_seconds_set_both_how_often_and_how_long_an_object_waited():
    config = OperatorConfig.from_env({**GOOD, "WHATSAPP_OPERATOR_NUDGE_SECONDS": "5"})
    assert (config.nudge_interval, config.stuck_object_after) == (5.0, 5.0)
    config = OperatorConfig.from_env(GOOD)
    assert (config.nudge_interval, config.stuck_object_after) == (60.0, 60.0)


def test_drift_and_flapping_settings_have_defaults_and_inclusive_bounds():
    config = OperatorConfig.from_env(GOOD)
    assert (config.drift_interval, config.flapping_changes, config.flapping_window) == (3600.0, 6, 600.0)
    low = OperatorConfig.from_env(
        {
            **GOOD,
            "WHATSAPP_OPERATOR_DRIFT_SECONDS": "60",
            "WHATSAPP_OPERATOR_FLAPPING_CHANGES": "2",
            "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS": "60",
        }
    )
    assert (low.drift_interval, low.flapping_changes, low.flapping_window) == (60.0, 2, 60.0)
    high = OperatorConfig.from_env(
        {
            **GOOD,
            "WHATSAPP_OPERATOR_DRIFT_SECONDS": " 86400 ",
            "WHATSAPP_OPERATOR_FLAPPING_CHANGES": "1000",
            "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS": "1.44e3",
        }
    )
    assert (high.drift_interval, high.flapping_changes, high.flapping_window) == (86400.0, 1000, 1440.0)
    assert type(high.flapping_changes) is int
    empty = OperatorConfig.from_env(
        {
            **GOOD,
            "WHATSAPP_OPERATOR_DRIFT_SECONDS": "",
            "WHATSAPP_OPERATOR_FLAPPING_CHANGES": " ",
            "WHATSAPP_OPERATOR_FLAPPING_WINDOW_SECONDS": "",
        }
    )
    assert (empty.drift_interval, empty.flapping_changes, empty.flapping_window) == (3600.0, 6, 600.0)


@pytest.mark.parametrize("value", ["1", "0", "1001", "-6", "+6", "6.0", "6e0", "٦", "６", "six", "nan", "1" * 5000])
def test_flapping_changes_is_a_whole_number_from_2_to_1000(value):
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({**GOOD, "WHATSAPP_OPERATOR_FLAPPING_CHANGES": value})
    shown = ascii(value[:40]) + ("..." if len(value) > 40 else "")
    assert str(raised.value) == (
        f"WHATSAPP_OPERATOR_FLAPPING_CHANGES: must be a whole number from 2 to 1000, got {shown}"
    )
    assert raised.value.setting == "WHATSAPP_OPERATOR_FLAPPING_CHANGES"


@pytest.mark.parametrize("value", ["٩٠٩٠", "９０９０", "65536", "-1", "+80", "80.0", "1" * 5000])
def test_metrics_port_is_ascii_digits_up_to_65535(value):
    # "٩٠٩٠".isdigit() is True: Arabic-Indic digits used to be accepted as a port.
    with pytest.raises(ConfigError, match=r"^WHATSAPP_OPERATOR_METRICS_PORT: must be a port number from 0 to 65535"):
        OperatorConfig.from_env({**GOOD, "WHATSAPP_OPERATOR_METRICS_PORT": value})
    assert OperatorConfig.from_env({**GOOD, "WHATSAPP_OPERATOR_METRICS_PORT": "0"}).metrics_port == 0
    assert OperatorConfig.from_env({**GOOD, "WHATSAPP_OPERATOR_METRICS_PORT": "65535"}).metrics_port == 65535


KEY_PROBLEMS = [
    ("abc\ndef-secret", "a line break"),
    ("abc\r\ndef-secret", "a line break"),
    ("abc\x00def-secret", "a control character"),
    ("abc\x1b[31mdef-secret", "a control character"),
    ("abc\x7fdef-secret", "a control character"),
    ("abc\x85def-secret", "a line break"),
    ("abc def-secret", "whitespace"),
    ("abc\tdef-secret", "whitespace"),
    ("abc\u00a0def-secret", "whitespace"),
    ("abc\u202edef-secret", "a character outside printable ASCII"),
    ("abcédef-secret", "a character outside printable ASCII"),
]


@pytest.mark.parametrize("key,problem", KEY_PROBLEMS)
def test_api_key_with_control_characters_or_whitespace_is_refused_without_showing_it(key, problem):
    # Such a key used to fail much later, as a misleading "cannot reach Evolution API".
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY": key})
    message = str(raised.value)
    assert message.startswith(f"EVOLUTION_API_KEY: the key contains {problem} (the key is not shown)")
    assert "def-secret" not in message and "abc" not in message


@pytest.mark.parametrize("key,problem", KEY_PROBLEMS)
def test_api_key_file_with_control_characters_or_whitespace_is_refused(tmp_path, key, problem):
    key_file = tmp_path / "apikey"
    key_file.write_bytes(key.encode("utf-8") + b"\n")
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY_FILE": str(key_file)})
    message = str(raised.value)
    assert message.startswith(f"EVOLUTION_API_KEY_FILE: the key in the file contains {problem}")
    assert "def-secret" not in message


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"\xff\xfekey", "is not UTF-8 text"),
        (b"k" * 70_000, "is larger than 65536 bytes: not an API key"),
    ],
)
def test_api_key_file_that_holds_no_key(tmp_path, content, message):
    key_file = tmp_path / "apikey"
    key_file.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY_FILE": str(key_file)})
    assert str(raised.value) == f"EVOLUTION_API_KEY_FILE: {str(key_file)!a} {message}"


def test_api_key_file_trailing_newline_is_stripped_and_a_directory_is_refused(tmp_path):
    key_file = tmp_path / "apikey"
    key_file.write_bytes(b"file-key-3\r\n")
    env = {"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY_FILE": str(key_file)}
    assert OperatorConfig.from_env(env).evolution_api_key == "file-key-3"
    with pytest.raises(ConfigError, match=r"^EVOLUTION_API_KEY_FILE: cannot read .*: Is a directory$"):
        OperatorConfig.from_env({**env, "EVOLUTION_API_KEY_FILE": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"^EVOLUTION_API_KEY_FILE: the path contains a NUL character$"):
        OperatorConfig.from_env({**env, "EVOLUTION_API_KEY_FILE": "/a\x00b"})
    # Found by tests/test_config_properties.py: open() raised UnicodeEncodeError, not OSError.
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({**env, "EVOLUTION_API_KEY_FILE": "/keys/\ud800"})
    assert str(raised.value) == (
        "EVOLUTION_API_KEY_FILE: cannot read '/keys/\\ud800': the path cannot be encoded for the file system"
    )


@pytest.mark.parametrize(
    "url,why",
    [
        ("http://evo:8080/?debug=1", "must not have a query (?...) or a fragment (#...)"),
        ("http://evo:8080/#top", "must not have a query (?...) or a fragment (#...)"),
        ("http://evo?", "must not have a query (?...) or a fragment (#...)"),
        ("http://", "has no host name (for example http://evolution-api:8080)"),
        ("http:///evolution", "has no host name (for example http://evolution-api:8080)"),
        ("http://:8080", "has no host name (for example http://evolution-api:8080)"),
        ("http://evo:http", "the port must be a number from 1 to 65535, got 'http'"),
        ("http://evo:65536", "the port must be a number from 1 to 65535, got '65536'"),
        ("http://evo:0", "the port must be a number from 1 to 65535, got '0'"),
        ("http://evo:", "the port must be a number from 1 to 65535, got ''"),
        ("http://evo:80:80", "the port must be a number from 1 to 65535, got '80:80'"),
        (
            "http://evo:٨٠",
            (
                "must be printable ASCII without spaces or control characters "
                "(write an international host name in its xn-- form)"
            ),
        ),
        (
            "http://evo lution:8080",
            (
                "must be printable ASCII without spaces or control characters "
                "(write an international host name in its xn-- form)"
            ),
        ),
        (
            "http://evo\x1b[2J:8080",
            (
                "must be printable ASCII without spaces or control characters "
                "(write an international host name in its xn-- form)"
            ),
        ),
        ("ftp://evo", "must start with http:// or https://"),
        ("ws://evo:8080", "must start with http:// or https://"),
        ("http:/evo", "must start with http:// or https://"),
        ("http://999.1.1.1:8080", "has an invalid IPv4 address '999.1.1.1'"),
        ("http://[::g]:8080", "has an invalid IPv6 address '::g'"),
        ("http://[::1:8080", "has a malformed IPv6 address (write it as http://[::1]:8080)"),
        (
            "http://evo$:8080",
            (
                "has an invalid host name 'evo$' (letters, digits, '-' and '_' in dot-separated "
                "labels of up to 63 characters)"
            ),
        ),
        (
            "http://evo..local",
            (
                "has an invalid host name 'evo..local' (letters, digits, '-' and '_' in "
                "dot-separated labels of up to 63 characters)"
            ),
        ),
    ],
)
def test_bad_urls_are_refused(url, why):
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({**GOOD, "EVOLUTION_API_URL": url})
    assert str(raised.value) == f"EVOLUTION_API_URL: {why}"


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2-pw@evo:8080",
        "http://admin@evo:8080",
        "https://admin:hunter2/pw@evo",
        "http://evo:8080/@hunter2-pw",
    ],
)
def test_urls_with_credentials_are_refused_without_showing_them(url):
    # The URL ends up in error messages (and so in status.message): no user:password in it.
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({**GOOD, "EVOLUTION_API_URL": url})
    assert str(raised.value).startswith("EVOLUTION_API_URL: must not contain a user name or password")
    assert "hunter2" not in str(raised.value) and "admin" not in str(raised.value)


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://evo:8080/", "http://evo:8080"),
        ("  HTTPS://Evolution-API.example.com/api/v2/  ", "https://Evolution-API.example.com/api/v2"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("http://evolution_api:8080", "http://evolution_api:8080"),  # docker compose service names
        (
            "http://evolution-api.evolution.svc.cluster.local.:8080",
            "http://evolution-api.evolution.svc.cluster.local.:8080",
        ),
        ("http://xn--evolucin-i2a.example", "http://xn--evolucin-i2a.example"),
    ],
)
def test_good_urls(url, expected):
    assert OperatorConfig.from_env({**GOOD, "EVOLUTION_API_URL": url}).evolution_url == expected


def test_run_without_configuration_exits_2_with_a_message(monkeypatch, capsys):
    for name in ("EVOLUTION_API_URL", "EVOLUTION_API_KEY", "EVOLUTION_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--all-namespaces"]) == 2
    assert capsys.readouterr().err == (
        "whatsapp-operator: EVOLUTION_API_URL: not set (for example http://evolution-api:8080)\n"
    )


@pytest.fixture(autouse=True)
def kopf_objects_level() -> Any:
    # main() sets the level of kopf's object logger for the process; later tests read kopf's lines.
    kopf_objects = logging.getLogger("kopf.objects")
    level = kopf_objects.level
    kopf_objects.setLevel(logging.NOTSET)
    yield kopf_objects
    kopf_objects.setLevel(level)  # setLevel, not the attribute: loggers cache isEnabledFor


@pytest.mark.parametrize(("flags", "level"), [((), logging.WARNING), (("--verbose",), logging.DEBUG)])
def test_kopfs_per_object_lines_are_shown_only_when_verbose(monkeypatch, kopf_objects_level, flags, level):
    monkeypatch.delenv("EVOLUTION_API_URL", raising=False)
    kopf_objects = kopf_objects_level
    assert main(["run", "--all-namespaces", *flags]) == 2  # stops at the configuration, after logging is set
    assert kopf_objects.level == level
    assert kopf_objects.isEnabledFor(logging.WARNING) and kopf_objects.isEnabledFor(logging.INFO) is bool(flags)


def test_the_event_loop_is_uvloops_unless_asyncio_is_asked_for_or_uvloop_is_missing(monkeypatch, caplog):
    import uvloop

    from whatsapp_operator.cli.main import event_loop_factory

    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    with caplog.at_level(logging.WARNING, logger="whatsapp_operator"):
        assert event_loop_factory("uvloop") is None
    assert "uvloop is not installed" in caplog.text


# -- the real command in a child process -----------------------------------------------------------


def run_command(
    env: dict[str, str], tmp_path, args=("run", "--all-namespaces", "--standalone"), timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`python -m whatsapp_operator ARGS` with exactly `env` (plus PATH/PYTHONPATH) and no Kubernetes credentials."""
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "PYTHONPATH", "LANG", "LC_ALL")}
    full = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), **base, **env}
    return subprocess.run(
        [sys.executable, "-m", "whatsapp_operator", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_command_without_configuration_is_one_line():
    result = run_cli(["run", "--all-namespaces"])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "whatsapp-operator: EVOLUTION_API_URL: not set (for example http://evolution-api:8080)\n"


BAD_SETTINGS = [
    (
        "EVOLUTION_MAX_CONCURRENT_REQUESTS",
        "0.5",
        "EVOLUTION_MAX_CONCURRENT_REQUESTS: must be a whole number from 1 to 1024, got '0.5'",
    ),
    (
        "WHATSAPP_OPERATOR_RESYNC_SECONDS",
        "nan",
        "WHATSAPP_OPERATOR_RESYNC_SECONDS: must be a number of seconds from 10 to 86400, got 'nan'",
    ),
    (
        "WHATSAPP_OPERATOR_METRICS_PORT",
        "٩٠٩٠",
        (
            "WHATSAPP_OPERATOR_METRICS_PORT: must be a port number from 0 to 65535 (0 turns the endpoint off), "
            "got '\\u0669\\u0660\\u0669\\u0660'"
        ),
    ),
    (
        "EVOLUTION_API_KEY",
        "sk-live\nX-Other: 1",
        (
            "EVOLUTION_API_KEY: the key contains a line break (the key is not shown); "
            "an Evolution API key is printable ASCII without spaces"
        ),
    ),
    (
        "EVOLUTION_API_URL",
        "http://ops:s3cr3t@evo:8080",
        (
            "EVOLUTION_API_URL: must not contain a user name or password (user:password@) or any '@'; "
            "the API key goes in EVOLUTION_API_KEY"
        ),
    ),
]


def test_command_with_a_bad_setting_prints_one_line_and_exits_2(tmp_path):
    name, value, line = BAD_SETTINGS[0]
    result = run_command(
        {"EVOLUTION_API_URL": "http://evo:8080", "EVOLUTION_API_KEY": "sk-live", name: value}, tmp_path
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"whatsapp-operator: {line}\n")


@pytest.mark.parametrize("name,value,line", BAD_SETTINGS)
def test_run_with_a_bad_setting_prints_one_line_and_exits_2(monkeypatch, capsys, name, value, line):
    monkeypatch.setenv("EVOLUTION_API_URL", "http://evo:8080")
    monkeypatch.setenv("EVOLUTION_API_KEY", "sk-live")
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(kopf, "run", lambda **_: pytest.fail("kopf.run must not start with a bad setting"))
    assert main(["run", "--standalone"]) == 2
    assert capsys.readouterr() == ("", f"whatsapp-operator: {line}\n")


MALFORMED_KUBECONFIGS = {
    "missing": None,
    "empty": b"",
    "not yaml": b"apiVersion: v1\nkind: Config\n  bad: [\n",
    "a list": b"- a\n- b\n",
    "not utf-8": b"\xff\xfe\x00",
    "a directory": "directory",
    "no such CA": (
        b"apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        b"clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9', certificate-authority: /nonexistent/ca}}]\n"
        b"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
    ),
}


def write_kubeconfig(tmp_path, case: str):
    kubeconfig = tmp_path / "kubeconfig"
    content = MALFORMED_KUBECONFIGS[case]
    if content == "directory":
        kubeconfig.mkdir()
    elif content is not None:
        kubeconfig.write_bytes(content)
    return kubeconfig


def test_command_without_kubernetes_credentials_exits_2_instead_of_retrying(tmp_path):
    # kopf used to print a traceback and retry the login every 60 s, forever.
    result = run_command(
        {
            "EVOLUTION_API_URL": "http://evo:8080",
            "EVOLUTION_API_KEY": "sk-live",
            "KUBECONFIG": str(tmp_path / "missing"),
        },
        tmp_path,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "whatsapp-operator: kubernetes credentials: no in-cluster service account (Service host/port is not set.) "
        f"and no usable kubeconfig (KUBECONFIG={tmp_path / 'missing'}): Invalid kube-config file. "
        "No configuration found.\n"
    )


@pytest.mark.parametrize("case", list(MALFORMED_KUBECONFIGS))
def test_run_checks_the_credentials_before_starting_kopf(tmp_path, monkeypatch, capsys, case):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path, case)))
    monkeypatch.setenv("EVOLUTION_API_URL", "http://evo:8080")
    monkeypatch.setenv("EVOLUTION_API_KEY", "sk-live")
    monkeypatch.setattr(kopf, "run", lambda **_: pytest.fail("kopf.run must not start without credentials"))
    assert main(["run", "--standalone"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("whatsapp-operator: kubernetes credentials: "), err
    assert err.count("\n") == 1 and "Traceback" not in err and "sk-live" not in err


def test_login_error_names_the_kubeconfig_and_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(MALFORMED_KUBECONFIGS["not yaml"])
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(kopf.LoginError) as raised:
        login_from_environment()
    message = str(raised.value)
    assert message.startswith(f"the kubeconfig (KUBECONFIG={kubeconfig}) is malformed: ScannerError: ")
    assert "\n" not in message
    kubeconfig.unlink()
    with pytest.raises(kopf.LoginError) as raised:
        login_from_environment()
    assert str(raised.value) == (
        "no in-cluster service account (Service host/port is not set.) and no usable kubeconfig "
        f"(KUBECONFIG={kubeconfig}): Invalid kube-config file. No configuration found."
    )


async def test_install_crds_creates_missing_crds_once(tmp_path, monkeypatch):
    from kube_standin import KubeStandin

    async with KubeStandin(crds_installed=False) as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kube.write_kubeconfig(kubeconfig)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        from pathlib import Path

        crds = Path(__file__).resolve().parent.parent / "crds"
        await install_crds(crds)
        await install_crds(crds)  # a second run finds it installed
        posts = [r for r in kube.requests if r.method == "POST" and r.resource == "customresourcedefinitions"]
        assert len(posts) == len(list(crds.glob("*.yaml"))) == 3  # every CRD of crds/, each once
        crd = kube.get(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions", "whatsappinstances.whatsapp-operator.io"
        )
        assert crd is not None and crd["spec"]["names"]["shortNames"] == ["wai"]


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "whatsapp_operator", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("whatsapp-operator ")


def test_crds_are_found_from_the_working_directory(tmp_path, monkeypatch):
    from whatsapp_operator.cli import main as cli

    (tmp_path / "crds").mkdir()
    monkeypatch.chdir(tmp_path)
    fake_globals = {**cli.default_crds_dir.__globals__, "__file__": str(tmp_path / "site" / "pkg" / "cli.py")}
    relocated = type(cli.default_crds_dir)(cli.default_crds_dir.__code__, fake_globals)
    assert relocated() == tmp_path / "crds"
