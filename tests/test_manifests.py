"""The kustomize manifests in manifests/: structure, Pod Security, probes, RBAC, examples.

No cluster needed. If `kustomize` or `kubectl` is on PATH, one test also renders the
kustomization with it and compares the result with what these tests read.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_cli
from rbac import (
    MANIFESTS,
    REPO,
    all_rule_values,
    bindings_for,
    find_kustomization_file,
    granted,
    load_kustomization,
    load_operator_rules,
    load_yaml_documents,
    operator_service_account,
)

CRD_FILE = REPO / "crds" / "whatsappinstances.whatsapp-operator.io.yaml"
CRD_NAMES = [
    "whatsappinstances.whatsapp-operator.io",
    "evolutionservers.whatsapp-operator.io",
    "clusterevolutionservers.whatsapp-operator.io",
]
# Objects a user writes: they need not carry the operator's labels.
USER_KINDS = {"WhatsAppInstance", "EvolutionServer", "ClusterEvolutionServer"}
EXAMPLES = MANIFESTS / "examples"
OPTIONAL_RBAC = MANIFESTS / "rbac-install-crds.yaml"
# manifests/*.yaml that are deliberately NOT part of the default install.
NOT_INSTALLED = {"kustomization.yaml", OPTIONAL_RBAC.name}


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return load_kustomization(MANIFESTS)


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(docs: list[dict]) -> dict:
    return only(docs, "Deployment")


@pytest.fixture(scope="module")
def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def option(args: list[str], flag: str) -> str:
    """The value of `--flag VALUE` or `--flag=VALUE` in an argument list."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def resolve_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"no container port named {port!r}"
    return named[0]


# --- every file ---------------------------------------------------------------------------------


def all_yaml_files() -> list[Path]:
    # The install (manifests/*.yaml), the examples and crds/; other subdirectories of manifests/
    # (e.g. argocd/) hold other kinds of files and have tests of their own.
    files = [
        *sorted(MANIFESTS.glob("*.yaml")),
        *sorted(EXAMPLES.glob("*.yaml")),
        *sorted((REPO / "crds").glob("*.yaml")),
    ]
    return files + [REPO / "crds" / "Kustomization"]


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_parses_into_kubernetes_objects(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{path} is empty"
    for doc in documents:
        assert isinstance(doc, dict)
        if doc.get("kind") == "Kustomization":
            assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
            continue
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"
        if doc["kind"] in USER_KINDS:
            continue  # a user's object: no labels required
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "whatsapp-operator", (
            f"{path}: {doc['kind']}/{doc['metadata']['name']} lacks the part-of label"
        )


def test_kustomization_resources_exist_and_cover_the_directory() -> None:
    kfile = find_kustomization_file(MANIFESTS)
    (spec,) = load_yaml_documents(kfile)
    listed = spec["resources"]
    for entry in listed:
        target = MANIFESTS / entry
        assert target.exists(), f"kustomization resource {entry} does not exist"
        if target.is_dir():
            find_kustomization_file(target)  # a directory must hold a kustomization
    assert "../crds" in listed, "the WhatsAppInstance CRD must be installed from crds/"
    # Every top-level manifest is either installed or deliberately left out (a forgotten file
    # would otherwise silently not be applied); examples are never installed.
    top_level = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert top_level - NOT_INSTALLED == set(listed) - {"../crds"}
    assert not any(str(e).startswith("examples") for e in listed)


def test_crds_kustomization_does_not_break_plain_kubectl_apply_of_crds_dir() -> None:
    # `kubectl apply -f crds/` and `run --install-crds` read crds/*.yaml (and *.yml/*.json for
    # kubectl): a kustomization.yaml there would be sent to the API server as an object.
    crds_dir = REPO / "crds"
    assert not list(crds_dir.glob("*.yml")) and not list(crds_dir.glob("*.json"))
    for path in crds_dir.glob("*.yaml"):
        assert all(d["kind"] == "CustomResourceDefinition" for d in load_yaml_documents(path)), path
    crds = load_kustomization(crds_dir)
    assert [d["metadata"]["name"] for d in crds] == CRD_NAMES
    assert sorted(p.name for p in crds_dir.glob("*.yaml")) == sorted(f"{name}.yaml" for name in CRD_NAMES)


def test_installs_exactly_the_expected_objects(docs: list[dict]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted(
        [
            ("Namespace", "whatsapp-operator"),
            *(("CustomResourceDefinition", name) for name in CRD_NAMES),
            ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
            ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
            ("ClusterKopfPeering", "whatsapp-operator"),
            ("ServiceAccount", "whatsapp-operator"),
            ("ClusterRole", "whatsapp-operator"),
            ("ClusterRoleBinding", "whatsapp-operator"),
            ("ConfigMap", "whatsapp-operator-config"),
            ("Deployment", "whatsapp-operator"),
            ("Service", "whatsapp-operator-metrics"),
        ]
    )
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are examples, never installed"
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for d in docs:
        if d["kind"] in cluster_scoped:
            assert "namespace" not in d["metadata"], f"{d['kind']} is cluster-scoped"
        else:
            assert d["metadata"].get("namespace") == "whatsapp-operator", d["metadata"]["name"]


def test_namespace_enforces_restricted_pod_security(docs: list[dict]) -> None:
    labels = only(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_peering_crds_match_kopf_and_the_deployment_names_the_peering_object(docs, container) -> None:
    for plural, kind, scope in (
        ("clusterkopfpeerings", "ClusterKopfPeering", "Cluster"),
        ("kopfpeerings", "KopfPeering", "Namespaced"),
    ):
        crd = only(docs, "CustomResourceDefinition", f"{plural}.kopf.dev")["spec"]
        assert (crd["group"], crd["scope"], crd["names"]["kind"], crd["names"]["plural"]) == (
            "kopf.dev",
            scope,
            kind,
            plural,
        )
        (version,) = crd["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        # kopf writes its peers into .status with a merge patch on the main resource: the status
        # must keep unknown fields and must not be a subresource.
        assert "subresources" not in version
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
    args = container["args"]
    assert "--all-namespaces" in args and "--standalone" not in args
    peering = only(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert option(args, "--peering") == peering["metadata"]["name"]


# --- the Deployment -----------------------------------------------------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: dict) -> list[str]:
    """The Kubernetes Pod Security Standards, "restricted" profile (baseline included), checked
    field by field as the PodSecurity admission controller does for a pod spec."""
    problems: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]
    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"pod {field}")
    for volume in pod.get("volumes", []):
        types = set(volume) - {"name"}
        if not types <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} type {sorted(types)}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        problems.append("pod seLinuxOptions user/role")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("pod hostProcess")
    # restricted, pod level
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    for c in containers:
        csc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if csc.get("privileged"):
            problems.append(f"{where} privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{where} hostPort")
        if csc.get("procMount", "Default") != "Default":
            problems.append(f"{where} procMount")
        if (csc.get("seLinuxOptions") or {}).get("user") or (csc.get("seLinuxOptions") or {}).get("role"):
            problems.append(f"{where} seLinuxOptions user/role")
        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where} hostProcess")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allowPrivilegeEscalation must be false")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where} must drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{where} runAsNonRoot must be true (pod or container)")
        if csc.get("runAsUser") == 0:
            problems.append(f"{where} runAsUser 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} seccompProfile must be RuntimeDefault or Localhost (pod or container)")
    return problems


def test_pod_passes_the_restricted_pod_security_standard(deployment: dict) -> None:
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (
            lambda p: (
                p["securityContext"].pop("runAsNonRoot") and p["containers"][0]["securityContext"].pop("runAsNonRoot")
            ),
            "runAsNonRoot",
        ),
        (
            lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
            "adds capabilities",
        ),
        (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser 0"),
        (lambda p: p["containers"][0]["ports"][0].update(hostPort=8080), "hostPort"),
    ],
)
def test_the_restricted_check_catches_each_violation(deployment: dict, breakage, expected: str) -> None:
    pod = copy.deepcopy(deployment["spec"]["template"]["spec"])
    breakage(pod)
    problems = restricted_violations(pod)
    assert any(expected in p for p in problems), problems


def test_pod_hardening_beyond_the_standard(deployment: dict, container: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert (psc["runAsNonRoot"], psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (True, 65532, 65532, 65532)
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs a writable /tmp (tempfile, the kubernetes client's CA files).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 30


def test_pod_user_matches_the_image_user(deployment: dict) -> None:
    user_line = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("USER ")][-1]
    uid, gid = user_line.split()[1].split(":")
    psc = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"]) == (int(uid), int(gid))


def test_probes_use_the_liveness_endpoint_from_the_args(container: dict) -> None:
    url = urllib.parse.urlsplit(option(container["args"], "--liveness"))
    assert url.scheme == "http" and url.hostname == "0.0.0.0", "kubelet must reach it on the pod IP"
    probes = {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container}
    assert {"livenessProbe", "readinessProbe"} <= set(probes)
    for kind, probe in probes.items():
        get = probe["httpGet"]
        assert get["path"] == url.path, kind
        assert resolve_port(container, get["port"]) == url.port, kind
        assert get.get("scheme", "HTTP") == "HTTP", kind
    assert url.port in [p["containerPort"] for p in container["ports"]]


def test_deployment_args_are_accepted_by_the_real_command_line() -> None:
    # Parse the Deployment's args with whatsapp-operator's own parser: with no Evolution settings
    # it must get past argument parsing and stop at the configuration check.
    deployment = only(load_kustomization(MANIFESTS), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    ok = run_cli(args)
    assert ok.returncode == 2 and "EVOLUTION_API_URL: not set" in ok.stderr, ok.stderr
    bad = run_cli([*args, "--no-such-option"])
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr, bad.stderr


def test_configuration_reaches_the_operator(docs: list[dict], deployment: dict, container: dict) -> None:
    env = {e["name"]: e for e in container["env"]}
    # The API key comes from the mounted Secret evolution-api-key, key apikey.
    key_file = env["EVOLUTION_API_KEY_FILE"]["value"]
    assert "EVOLUTION_API_KEY" not in env
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = [m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mount) == 1 and mount[0].get("readOnly") is True
    secret = volumes[mount[0]["name"]]["secret"]
    assert secret["secretName"] == "evolution-api-key"
    relative = key_file[len(mount[0]["mountPath"].rstrip("/")) + 1 :]
    assert {"key": "apikey", "path": relative} in secret["items"]
    assert secret.get("optional") is not True, "without the key the operator cannot start"
    assert secret["defaultMode"] == 0o440
    # EVOLUTION_API_URL (and the websocket mode) from the ConfigMap.
    config_maps = [s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s]
    data = {}
    for name in config_maps:
        data.update(only(docs, "ConfigMap", name)["data"])
    assert re.match(r"^https?://", data["EVOLUTION_API_URL"])
    assert data.get("EVOLUTION_WEBSOCKET_MODE", "auto") in ("auto", "global", "instance")
    # kopf names the peer after POD_ID.
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_resources_scraping_and_spreading(deployment: dict, container: dict) -> None:
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    terms = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert any(
        t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
        for t in terms
    )
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_two_replicas_with_distinct_peering_priorities(deployment: dict, container: dict) -> None:
    # kopf pauses ALL peers that share a priority: two replicas make an active/standby pair only
    # because every process draws its own priority (no fixed --priority in the args).
    from whatsapp_operator.cli.main import peering_identity

    assert deployment["spec"]["replicas"] == 2
    assert "--priority" not in container["args"] and "--standalone" not in container["args"]
    priorities = {peering_identity("whatsapp-operator").priority for _ in range(5)}
    assert len(priorities) == 5


def test_image_is_tagged_with_the_project_version(container: dict) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"].endswith(f"whatsapp-operator:{version}")


def test_metrics_service_selects_the_operator_pod(docs: list[dict], deployment: dict) -> None:
    service = only(docs, "Service")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["port"] == 9090
    assert resolve_port(deployment["spec"]["template"]["spec"]["containers"][0], port["targetPort"]) == 9090


# --- RBAC ---------------------------------------------------------------------------------------

OPERATOR_REQUESTS = [
    # (verb, group, resource, subresource, name)   -- what kopf and the operator send
    ("list", "whatsapp-operator.io", "whatsappinstances", None, None),
    ("watch", "whatsapp-operator.io", "whatsappinstances", None, None),
    ("patch", "whatsapp-operator.io", "whatsappinstances", None, "shop-123"),
    ("patch", "whatsapp-operator.io", "whatsappinstances", "status", "shop-123"),
    *(
        request
        for plural in ("evolutionservers", "clusterevolutionservers")
        for request in (
            ("get", "whatsapp-operator.io", plural, None, "main"),
            ("list", "whatsapp-operator.io", plural, None, None),
            ("watch", "whatsapp-operator.io", plural, None, None),
            ("patch", "whatsapp-operator.io", plural, None, "main"),
            ("patch", "whatsapp-operator.io", plural, "status", "main"),
        )
    ),
    # The Secrets objects point at (any name, any namespace), and the connection Secrets.
    ("get", "", "secrets", None, "evolution-api-key"),
    ("get", "", "secrets", None, "shop-webhook"),
    ("create", "", "secrets", None, None),
    ("update", "", "secrets", None, "shop-123-evolution"),
    ("patch", "", "secrets", None, "shop-123-evolution"),
    ("delete", "", "secrets", None, "shop-123-evolution"),
    ("create", "", "events", None, None),
    ("list", "", "namespaces", None, None),
    ("watch", "", "namespaces", None, None),
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
    ("list", "kopf.dev", "clusterkopfpeerings", None, None),
    ("watch", "kopf.dev", "clusterkopfpeerings", None, None),
    ("get", "kopf.dev", "clusterkopfpeerings", None, "whatsapp-operator"),
    ("patch", "kopf.dev", "clusterkopfpeerings", None, "whatsapp-operator"),
    ("list", "kopf.dev", "kopfpeerings", None, None),
    ("watch", "kopf.dev", "kopfpeerings", None, None),
    ("patch", "kopf.dev", "kopfpeerings", None, "whatsapp-operator"),
]
NOT_GRANTED = [
    # Secrets are read one by one, by the name an object gives: never listed or watched.
    ("list", "", "secrets", None, None),
    ("watch", "", "secrets", None, None),
    ("deletecollection", "", "secrets", None, None),
    ("get", "", "configmaps", None, "whatsapp-operator-config"),
    ("create", "whatsapp-operator.io", "evolutionservers", None, None),
    ("delete", "whatsapp-operator.io", "clusterevolutionservers", None, "main"),
    ("update", "whatsapp-operator.io", "evolutionservers", "status", "main"),
    ("delete", "whatsapp-operator.io", "whatsappinstances", None, "shop-123"),
    ("update", "whatsapp-operator.io", "whatsappinstances", None, "shop-123"),
    ("create", "whatsapp-operator.io", "whatsappinstances", None, None),
    ("update", "whatsapp-operator.io", "whatsappinstances", "status", "shop-123"),
    ("get", "whatsapp-operator.io", "whatsappinstances", "status", "shop-123"),
    ("patch", "", "events", None, "x.1"),
    ("create", "events.k8s.io", "events", None, None),
    ("get", "apiextensions.k8s.io", "customresourcedefinitions", None, "whatsappinstances.whatsapp-operator.io"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", None, None),
    ("patch", "kopf.dev", "clusterkopfpeerings", None, "someone-else"),
    ("patch", "kopf.dev", "clusterkopfpeerings", None, None),
    ("delete", "kopf.dev", "clusterkopfpeerings", None, "whatsapp-operator"),
    ("patch", "zalando.org", "clusterkopfpeerings", None, "whatsapp-operator"),
    ("patch", "", "namespaces", None, "default"),
]


@pytest.fixture(scope="module")
def operator_rules() -> list[dict]:
    return load_operator_rules()


@pytest.mark.parametrize("request_", OPERATOR_REQUESTS, ids=lambda r: " ".join(x for x in r if x))
def test_operator_may_make_every_request_it_needs(operator_rules: list[dict], request_) -> None:
    verb, group, resource, subresource, name = request_
    assert granted(operator_rules, verb, group, resource, subresource, name=name)


@pytest.mark.parametrize("request_", NOT_GRANTED, ids=lambda r: " ".join(x for x in r if x))
def test_operator_may_not_do_more(operator_rules: list[dict], request_) -> None:
    verb, group, resource, subresource, name = request_
    assert not granted(operator_rules, verb, group, resource, subresource, name=name)


def test_rbac_has_no_wildcards() -> None:
    roles = [
        d
        for path in (MANIFESTS / "rbac.yaml", OPTIONAL_RBAC)
        for d in load_yaml_documents(path)
        if d["kind"] in ("ClusterRole", "Role")
    ]
    assert len(roles) == 2
    values = list(all_rule_values(r for role in roles for r in role["rules"]))
    assert values
    assert [(f, v) for f, v in values if "*" in str(v)] == []
    assert all("aggregationRule" not in role for role in roles)


def test_the_binding_binds_the_deployments_service_account(docs: list[dict]) -> None:
    namespace, name = operator_service_account(docs)
    assert (namespace, name) == ("whatsapp-operator", "whatsapp-operator")
    account = only(docs, "ServiceAccount", name)
    assert account["metadata"]["namespace"] == namespace
    (binding,) = bindings_for(docs, namespace, name)
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": only(docs, "ClusterRole")["metadata"]["name"],
    }


def test_optional_install_crds_role_is_separate_and_sufficient(docs: list[dict]) -> None:
    optional = load_yaml_documents(OPTIONAL_RBAC)
    names = {d["metadata"]["name"] for d in optional}
    assert not names & {d["metadata"]["name"] for d in docs if d["kind"].startswith("ClusterRole")}
    namespace, account = operator_service_account(docs)
    (binding,) = bindings_for(optional, namespace, account)
    (role,) = [d for d in optional if d["kind"] == "ClusterRole"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    for crd in CRD_NAMES:  # every CRD of crds/, which --install-crds reads
        assert granted([role], "get", "apiextensions.k8s.io", "customresourcedefinitions", None, name=crd)
    assert granted([role], "create", "apiextensions.k8s.io", "customresourcedefinitions", None)
    assert not granted([role], "get", "apiextensions.k8s.io", "customresourcedefinitions", None, name="other.x")
    assert not granted([role], "delete", "apiextensions.k8s.io", "customresourcedefinitions", None, name=crd)
    # Without it (the default), --install-crds could not work.
    assert not granted(load_operator_rules(), "create", "apiextensions.k8s.io", "customresourcedefinitions", None)


# --- granted(): the RBAC evaluation itself ------------------------------------------------------


def role(*rules: dict) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r"},
        "rules": list(rules),
    }


def test_granted_matches_verb_group_and_resource_exactly() -> None:
    r = role({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]})
    assert granted([r], "get", "", "pods", None)
    assert granted([r], "list", "", "pods", None)
    assert not granted([r], "watch", "", "pods", None)
    assert not granted([r], "get", "apps", "pods", None)  # "" is the core group only
    assert not granted([r], "get", "", "services", None)
    assert not granted([r], "get", "", "pod", None)


def test_granted_treats_subresources_as_separate_resources() -> None:
    parent = role({"apiGroups": ["g"], "resources": ["things"], "verbs": ["patch"]})
    assert not granted([parent], "patch", "g", "things", "status")
    sub = role({"apiGroups": ["g"], "resources": ["things/status"], "verbs": ["patch"]})
    assert granted([sub], "patch", "g", "things", "status")
    assert not granted([sub], "patch", "g", "things", None)
    assert not granted([sub], "patch", "g", "things", "scale")
    star_sub = role({"apiGroups": ["g"], "resources": ["*/status"], "verbs": ["patch"]})
    assert granted([star_sub], "patch", "g", "others", "status")
    assert not granted([star_sub], "patch", "g", "others", None)


def test_granted_honours_wildcards_as_kubernetes_does() -> None:
    r = role({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert granted([r], "delete", "anything.io", "whatever", "status", name="x")
    assert not granted([role({"apiGroups": ["g"], "resources": ["*"], "verbs": ["get"]})], "get", "h", "x", None)


def test_granted_with_resource_names_needs_a_matching_name() -> None:
    r = role({"apiGroups": ["g"], "resources": ["things"], "resourceNames": ["a"], "verbs": ["get", "list"]})
    assert granted([r], "get", "g", "things", None, name="a")
    assert not granted([r], "get", "g", "things", None, name="b")
    assert not granted([r], "list", "g", "things", None)  # no name: a collection request
    # The union of rules: another rule without resourceNames still grants.
    r2 = role({"apiGroups": ["g"], "resources": ["things"], "verbs": ["list"]})
    assert granted([r, r2], "list", "g", "things", None)


def test_granted_accepts_role_documents_and_bare_rules_and_ignores_other_kinds() -> None:
    rule = {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
    assert granted([rule], "create", "", "events", None)
    assert granted([role(rule)], "create", "", "events", None)
    binding = {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {}, "subjects": []}
    assert not granted([binding], "create", "", "events", None)
    assert not granted([], "create", "", "events", None)
    assert not granted([role({"nonResourceURLs": ["/healthz"], "verbs": ["get"]})], "get", "", "healthz", None)
    with pytest.raises(ValueError):
        granted([rule], "create", None, "events", None)  # type: ignore[arg-type]


def test_load_operator_rules_follows_the_binding(tmp_path: Path) -> None:
    # A kustomization whose binding names another account grants the Deployment nothing.
    for name in ("deployment.yaml", "serviceaccount.yaml"):
        (tmp_path / name).write_text((MANIFESTS / name).read_text())
    rbac = (
        (MANIFESTS / "rbac.yaml")
        .read_text()
        .replace("    name: whatsapp-operator\n    namespace:", "    name: someone-else\n    namespace:")
    )
    (tmp_path / "rbac.yaml").write_text(rbac)
    (tmp_path / "kustomization.yaml").write_text("resources: [deployment.yaml, serviceaccount.yaml, rbac.yaml]\n")
    with pytest.raises(LookupError):
        load_operator_rules(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("namespace: x\nresources: [rbac.yaml]\n")
    with pytest.raises(NotImplementedError):
        load_operator_rules(tmp_path)


# --- examples -----------------------------------------------------------------------------------


def crd_schema() -> dict:
    (crd,) = load_yaml_documents(CRD_FILE)
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return version["schema"]["openAPIV3Schema"]


TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
UNDERSTOOD = {
    "maxItems",
    "type",
    "properties",
    "required",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "items",
    "description",
    "default",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def schema_errors(value: Any, schema: dict, path: str = "") -> list[str]:
    """Validate against the structural-schema subset the CRD uses. Unknown fields are errors:
    the API server would prune them silently. CEL rules are not evaluated here."""
    unknown_keywords = set(schema) - UNDERSTOOD
    if unknown_keywords:
        raise NotImplementedError(f"{path or '/'}: schema keywords {sorted(unknown_keywords)}")
    where = path or "/"
    kind = schema.get("type")
    if kind and not TYPE_CHECKS[kind](value):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: {name} is required")
        properties = schema.get("properties")
        for name, item in value.items():
            if properties is not None and name in properties:
                errors.extend(schema_errors(item, properties[name], f"{path}/{name}"))
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}/{name}: unknown field (would be pruned)")
    if isinstance(value, list) and len(value) > schema.get("maxItems", len(value)):
        errors.append(f"{where}: more than {schema['maxItems']} items")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors.extend(schema_errors(item, schema["items"], f"{path}/{i}"))
    return errors


def example_instances() -> list[Path]:
    return sorted(
        p for p in EXAMPLES.glob("*.yaml") if any(d.get("kind") == "WhatsAppInstance" for d in load_yaml_documents(p))
    )


def test_examples_cover_the_qr_and_the_pairing_flow() -> None:
    names = [p.name for p in example_instances()]
    assert names == ["whatsappinstance-full.yaml", "whatsappinstance-pairing.yaml", "whatsappinstance.yaml"]
    (qr,) = load_yaml_documents(EXAMPLES / "whatsappinstance.yaml")
    (pairing,) = load_yaml_documents(EXAMPLES / "whatsappinstance-pairing.yaml")
    assert "number" not in qr["spec"]
    assert pairing["spec"]["number"]


@pytest.mark.parametrize("path", example_instances(), ids=lambda p: p.name)
def test_example_instances_validate_against_the_crd(path: Path) -> None:
    from whatsapp_operator.engine.spec import InstanceSpec, check_instance_name

    (crd,) = load_yaml_documents(CRD_FILE)
    for doc in load_yaml_documents(path):
        if doc["kind"] == "Secret":
            continue  # what the instance refers to; test_example_references_resolve checks them
        assert doc["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
        assert doc["kind"] == crd["spec"]["names"]["kind"]
        assert schema_errors(doc, crd_schema()) == []
        # The CEL rule on instanceName lists reserved names; the operator checks them too.
        parsed = InstanceSpec.parse(doc["metadata"]["namespace"], doc["metadata"]["name"], doc["spec"])
        check_instance_name(parsed.instance_name)
        rule = crd_schema()["properties"]["spec"]["properties"]["instanceName"]["x-kubernetes-validations"][0]["rule"]
        assert parsed.instance_name not in re.findall(r"'([^']+)'", rule)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.update(number="+5511987654321"), "/spec/number"),
        (lambda s: s.update(integration="WHATSAPP-BUSINESS"), "/spec/integration"),
        (lambda s: s.update(instanceName="shop 123"), "/spec/instanceName"),
        (lambda s: s.update(instanceName=""), "/spec/instanceName: shorter"),
        (lambda s: s["settings"].update(msgCall="x" * 101), "/spec/settings/msgCall: longer"),
        (lambda s: s["settings"].update(rejectCall="yes"), "/spec/settings/rejectCall: expected boolean"),
        (lambda s: s.update(numbr="5511987654321"), "/spec/numbr: unknown field"),
    ],
)
def test_the_schema_check_rejects_bad_specs(change, expected: str) -> None:
    (doc,) = load_yaml_documents(EXAMPLES / "whatsappinstance.yaml")
    change(doc["spec"])
    errors = schema_errors(doc, crd_schema())
    assert any(e.startswith(expected) for e in errors), errors
    del doc["spec"]
    assert "/: spec is required" in schema_errors(doc, crd_schema())


def example_objects() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(EXAMPLES.glob("*.yaml")) for d in load_yaml_documents(p)]


def cel_violations(value: Any, schema: dict, path: str = "") -> list[str]:
    """The messages of the CRD's CEL rules that ``value`` breaks at creation (rules that compare
    with ``oldSelf`` only apply to updates)."""
    import celpy

    found: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue
        environment = celpy.Environment()
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            found.append(f"{path or '/'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, item in value.items():
            if name in (schema.get("properties") or {}):
                found += cel_violations(item, schema["properties"][name], f"{path}/{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += cel_violations(item, schema["items"], f"{path}/{i}")
    return found


def test_example_custom_resources_are_admitted_unchanged_by_their_crd() -> None:
    from schema_check import admit, load_crd_schema, prune

    kinds = set()
    for file, doc in example_objects():
        if doc["kind"] not in USER_KINDS:
            continue
        kinds.add(doc["kind"])
        schema = load_crd_schema(doc["kind"])
        assert doc["apiVersion"] == "whatsapp-operator.io/v1alpha1", file
        admitted, causes = admit(schema, doc)
        assert causes == [], (file, [str(c) for c in causes])
        assert prune(schema, doc) == doc, f"{file}: {doc['kind']} has fields the apiserver would drop"
        assert cel_violations(admitted["spec"], schema["properties"]["spec"]) == [], file
        cluster_scoped = doc["kind"].startswith("Cluster")
        assert ("namespace" in doc["metadata"]) is not cluster_scoped, file
    assert kinds == USER_KINDS


def test_the_full_example_uses_every_new_field_and_its_references_resolve(deployment: dict) -> None:
    objects = [doc for _, doc in example_objects()]
    secrets = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in objects if d["kind"] == "Secret"}
    servers = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in objects}
    operator_namespace = deployment["metadata"]["namespace"]

    def secret_has(namespace: str, ref: dict) -> bool:
        secret = secrets.get((namespace, ref["name"]))
        return secret is not None and ref.get("key", "ca.crt") in {**secret.get("data", {}), **secret["stringData"]}

    (full,) = [
        d for d in load_yaml_documents(EXAMPLES / "whatsappinstance-full.yaml") if d["kind"] == "WhatsAppInstance"
    ]
    spec, namespace = full["spec"], full["metadata"]["namespace"]
    assert {"serverRef", "webhook", "writeConnectionSecretToRef", "deletionPolicy"} <= spec.keys()
    ref = spec["serverRef"]
    assert (ref["kind"], None, ref["name"]) in servers or (ref["kind"], namespace, ref["name"]) in servers
    (header,) = spec["webhook"]["headers"]
    assert "value" not in header and secret_has(namespace, header["valueFrom"]["secretKeyRef"])
    assert spec["writeConnectionSecretToRef"]["name"] not in {name for _, name in secrets}  # the operator writes it
    # Each server's API key is in the Secret its example ships: beside a namespaced server, in the
    # operator's namespace for the cluster kind.
    for (kind, server_namespace, _), server in servers.items():
        if kind in ("EvolutionServer", "ClusterEvolutionServer"):
            home = server_namespace if kind == "EvolutionServer" else operator_namespace
            assert secret_has(home, server["spec"]["apiKeySecretRef"]), server["metadata"]["name"]


def test_example_secret_is_the_one_the_deployment_mounts(deployment: dict) -> None:
    (secret,) = load_yaml_documents(EXAMPLES / "evolution-api-key-secret.yaml")
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "Secret",
        "evolution-api-key",
        deployment["metadata"]["namespace"],
    )
    assert secret["stringData"] == {"apikey": "change-me"}
    mounted = [v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert mounted == [secret["metadata"]["name"]]


# --- optional: render with the real kustomize ---------------------------------------------------


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_real_kustomize_renders_what_the_tests_read(docs: list[dict]) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "neither kustomize nor kubectl is on PATH: the manifests were checked above "
            "with tests/rbac.py's loader only"
        )
    result = subprocess.run([*command, str(MANIFESTS)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]

    def key(d: dict) -> tuple[str, str, str]:
        return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]

    assert sorted(map(key, rendered)) == sorted(map(key, docs))
    by_key = {key(d): d for d in docs}
    for d in rendered:
        assert d == by_key[key(d)], f"kustomize changed {key(d)}"
