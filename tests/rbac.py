"""RBAC evaluation for tests: does the operator's ClusterRole allow a given API request?

`granted()` evaluates PolicyRules the way the Kubernetes RBAC authorizer does for resource
requests (k8s.io/kubernetes pkg/apis/rbac/v1/evaluation_helpers.go: VerbMatches,
APIGroupMatches, ResourceMatches, ResourceNameMatches): a request is allowed when any single rule
matches all four. `load_operator_rules()` returns the rules that `kubectl apply -k manifests/`
grants to the Deployment's ServiceAccount, read from the manifests themselves.

Typical use with requests recorded by a fake API server:

    rules = load_operator_rules()
    for r in recorded:
        if r.resource is None:      # /version, /api, /apis: granted to everyone by
            continue                # system:discovery and system:public-info-viewer
        assert granted(rules, r.verb, r.api_group, r.resource, r.subresource, name=r.name), r

Pass `name` for requests on one object (get, patch, update, delete, and list/watch with a
`metadata.name` field selector): rules with `resourceNames` grant only those.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# What load_kustomization() understands; anything else (namespace:, patches:, ...) could change
# the objects, so it is refused instead of being evaluated wrongly. `images` only sets image names.
_SUPPORTED_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images"}
_ROLE_KINDS = {"ClusterRole", "Role"}


def granted(
    cluster_role_docs: list[dict],
    verb: str,
    group: str,
    resource: str,
    subresource: str | None,
    name: str | None = None,
) -> bool:
    """True if any rule allows `verb` on `group`/`resource`[/`subresource`] (object `name`).

    `cluster_role_docs` may hold ClusterRole/Role documents (their `rules` are used), bare
    PolicyRules (dicts with `verbs`, e.g. from load_operator_rules()), or both; other documents
    (bindings, ...) grant nothing. `group` is "" for the core API group. Only resource requests
    are evaluated: rules with just `nonResourceURLs` never match here.
    """
    if group is None or not resource:
        raise ValueError("granted() evaluates resource requests: pass group ('' for core) and resource")
    combined = f"{resource}/{subresource}" if subresource else resource
    return any(
        _verb_matches(rule, verb)
        and _group_matches(rule, group)
        and _resource_matches(rule, combined, subresource or "")
        and _name_matches(rule, name or "")
        for rule in _rules_of(cluster_role_docs)
    )


def _rules_of(docs: Iterable[dict]) -> Iterator[dict]:
    for doc in docs:
        if not isinstance(doc, dict):
            raise TypeError(f"expected a dict, got {type(doc).__name__}")
        if "verbs" in doc:  # a bare PolicyRule
            yield doc
        elif doc.get("kind") in _ROLE_KINDS:
            yield from doc.get("rules") or []


def _verb_matches(rule: dict, verb: str) -> bool:
    return any(v == "*" or v == verb for v in rule.get("verbs") or [])


def _group_matches(rule: dict, group: str) -> bool:
    return any(g == "*" or g == group for g in rule.get("apiGroups") or [])


def _resource_matches(rule: dict, combined: str, subresource: str) -> bool:
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            return True
        # "*/status" grants the status subresource of every resource in the rule's groups.
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _name_matches(rule: dict, name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


# --- reading the manifests --------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document of one file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def find_kustomization_file(directory: Path) -> Path:
    found = [directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()]
    if len(found) != 1:
        raise FileNotFoundError(f"{directory}: expected exactly one of {KUSTOMIZATION_FILES}, found {found}")
    return found[0]


def load_kustomization(directory: Path = MANIFESTS) -> list[dict]:
    """The objects a kustomization renders, for the subset of kustomize this project uses:
    `resources` (files, and directories holding a kustomization) and `images`, which is applied.
    Refuses other fields rather than ignore a transformation."""
    kfile = find_kustomization_file(directory)
    (spec,) = load_yaml_documents(kfile)
    unknown = set(spec) - _SUPPORTED_KUSTOMIZATION_KEYS
    if unknown:
        raise NotImplementedError(f"{kfile}: kustomize fields not understood by tests/rbac.py: {sorted(unknown)}")
    docs: list[dict] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            docs.extend(load_kustomization(target))
        elif target.is_file():
            docs.extend(load_yaml_documents(target))
        else:
            raise FileNotFoundError(f"{kfile}: resource {entry!r} does not exist")
    for image in spec.get("images") or []:
        _set_image(docs, image)
    return docs


def _set_image(docs: list[dict], image: dict) -> None:
    for doc in docs:
        pod = (
            (doc.get("spec") or {}).get("template", {}).get("spec")
            if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job")
            else None
        )
        for container in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            ref = container.get("image", "")
            base = ref.split("@", 1)[0]
            base_name = base.rsplit(":", 1)[0] if ":" in base.rsplit("/", 1)[-1] else base
            if base_name != image["name"]:
                continue
            new_name = image.get("newName", base_name)
            if "digest" in image:
                container["image"] = f"{new_name}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new_name}:{image['newTag']}"
            else:
                container["image"] = new_name + ref[len(base_name) :]


def operator_service_account(docs: list[dict]) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount the single operator Deployment runs as."""
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise ValueError(f"expected one Deployment in the manifests, found {len(deployments)}")
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    namespace = deployment["metadata"].get("namespace", "default")
    return namespace, pod.get("serviceAccountName") or "default"


def bindings_for(docs: list[dict], namespace: str, name: str) -> list[dict]:
    """The (Cluster)RoleBindings whose subjects include this ServiceAccount."""

    def binds(subject: dict) -> bool:
        return (
            subject.get("kind") == "ServiceAccount"
            and subject.get("name") == name
            and subject.get("namespace") == namespace
        )

    return [
        d
        for d in docs
        if d.get("kind") in ("ClusterRoleBinding", "RoleBinding") and any(binds(s) for s in d.get("subjects") or [])
    ]


def load_operator_rules(directory: Path = MANIFESTS) -> list[dict]:
    """The PolicyRules of every ClusterRole bound (by a ClusterRoleBinding in the kustomization
    under `directory`) to the operator Deployment's ServiceAccount: what it may do by default."""
    docs = load_kustomization(directory)
    namespace, name = operator_service_account(docs)
    bindings = bindings_for(docs, namespace, name)
    if any(b["kind"] == "RoleBinding" for b in bindings):
        raise NotImplementedError("RoleBindings (namespace-limited grants) are not evaluated here")
    if not bindings:
        raise LookupError(f"no ClusterRoleBinding binds ServiceAccount {namespace}/{name}")
    roles = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ClusterRole"}
    rules: list[dict] = []
    for binding in bindings:
        ref = binding["roleRef"]
        if ref.get("kind") != "ClusterRole" or ref["name"] not in roles:
            raise LookupError(f"{binding['metadata']['name']}: roleRef {ref} is not a ClusterRole of the manifests")
        rules.extend(copy.deepcopy(roles[ref["name"]].get("rules") or []))
    return rules


def all_rule_values(rules: Iterable[dict]) -> Iterator[tuple[str, Any]]:
    """(field, value) for every entry of every list field of the rules, to look for wildcards."""
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for value in rule.get(field) or []:
                yield field, value
