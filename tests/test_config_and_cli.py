"""Configuration from the environment and the command line's first steps."""

from __future__ import annotations

import pytest

from whatsapp_operator.cli import install_crds, main
from whatsapp_operator.config import ConfigError, OperatorConfig, WebsocketMode
from whatsapp_operator.redaction import redact


def test_minimal_environment():
    config = OperatorConfig.from_env({"EVOLUTION_API_URL": "http://evo:8080/", "EVOLUTION_API_KEY": "cfg-key-1"})
    assert config.evolution_url == "http://evo:8080"
    assert config.websocket_mode is WebsocketMode.AUTO
    assert "cfg-key-1" not in repr(config)
    assert "cfg-key-1" not in redact("key is cfg-key-1")


def test_key_from_a_file(tmp_path):
    key_file = tmp_path / "apikey"
    key_file.write_text("file-key-2\n")
    config = OperatorConfig.from_env({"EVOLUTION_API_URL": "https://evo", "EVOLUTION_API_KEY_FILE": str(key_file),
                                      "EVOLUTION_WEBSOCKET_MODE": "Instance"})
    assert config.evolution_api_key == "file-key-2"
    assert config.websocket_mode is WebsocketMode.INSTANCE


@pytest.mark.parametrize("env,fragment", [
    ({}, "EVOLUTION_API_URL is not set"),
    ({"EVOLUTION_API_URL": "evo:8080", "EVOLUTION_API_KEY": "k"}, "must start with http"),
    ({"EVOLUTION_API_URL": "http://evo"}, "EVOLUTION_API_KEY"),
    ({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY": "k", "EVOLUTION_API_KEY_FILE": "/x"}, "only one"),
    ({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY_FILE": "/nonexistent/key"}, "cannot read"),
    ({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY": "k", "EVOLUTION_WEBSOCKET_MODE": "both"}, "global, instance, auto"),
    ({"EVOLUTION_API_URL": "http://evo", "EVOLUTION_API_KEY": "k", "WHATSAPP_OPERATOR_RESYNC_SECONDS": "-1"}, "positive"),
])
def test_bad_environment_is_a_clear_error(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        OperatorConfig.from_env(env)


def test_run_without_configuration_exits_2_with_a_message(monkeypatch, capsys):
    for name in ("EVOLUTION_API_URL", "EVOLUTION_API_KEY", "EVOLUTION_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--all-namespaces"]) == 2
    assert "EVOLUTION_API_URL is not set" in capsys.readouterr().err


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
        assert len(posts) == 1
        crd = kube.get("apiextensions.k8s.io", "v1", "customresourcedefinitions", "whatsappinstances.whatsapp-operator.io")
        assert crd is not None and crd["spec"]["names"]["shortNames"] == ["wai"]


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "whatsapp_operator", "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("whatsapp-operator ")


def test_crds_are_found_from_the_working_directory(tmp_path, monkeypatch):
    from whatsapp_operator import cli

    (tmp_path / "crds").mkdir()
    monkeypatch.chdir(tmp_path)
    fake_globals = {**cli.default_crds_dir.__globals__, "__file__": str(tmp_path / "site" / "pkg" / "cli.py")}
    relocated = type(cli.default_crds_dir)(cli.default_crds_dir.__code__, fake_globals)
    assert relocated() == tmp_path / "crds"
