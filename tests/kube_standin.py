"""An in-process stand-in for the Kubernetes API server, for tests without a cluster.

It serves discovery, CRUD, patches, the ``status`` subresource and watch-streams on
127.0.0.1 with the apiserver semantics listed in shared/kubernetes/TEST-STANDIN.md, so that
real kopf (and the official client) can run against it, and plays the garbage collector for
``ownerReferences`` (background propagation: see ``_collect_garbage``). Where the stand-in is stricter or
looser than a real apiserver, the comment at that spot says so.

All state changes go through a few synchronous methods (``_create``, ``_update``, ``_delete``);
the HTTP handlers and the direct Python API for tests share them. Being synchronous, a write
and its fan-out to the watchers happen in one event-loop step, so a watcher that subscribes
and snapshots in one step can neither miss nor duplicate an event.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import copy
import dataclasses
import datetime
import json
import os
import re
import secrets as _secrets
import uuid
from collections.abc import Callable
from typing import Any, Self, TypeVar

from aiohttp import web

import schema_check

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
T = TypeVar("T")
Obj = dict[str, Any]  # a Kubernetes object as JSON


@dataclasses.dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Defined by a CRD: PUT needs a resourceVersion, list items keep their kind and apiVersion.
    custom: bool = False
    peering: bool = False  # served only when the stand-in is built with peering=True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:  # as apiservers spell it in messages: "plural.group"
        return f"{self.plural}.{self.group}" if self.group else self.plural


# Everything the stand-in serves: adding a resource is one entry here.
# fmt: off
RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    ResourceType("", "v1", "events", "Event", namespaced=True, short_names=("ev",)),
    ResourceType("", "v1", "secrets", "Secret", namespaced=True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", namespaced=False, short_names=("crd", "crds"),
                 status_subresource=True),
    ResourceType("whatsapp-operator.io", "v1alpha1", "whatsappinstances", "WhatsAppInstance",
                 namespaced=True, short_names=("wai",), categories=("whatsapp",),
                 status_subresource=True, custom=True),
    ResourceType("whatsapp-operator.io", "v1alpha1", "evolutionservers", "EvolutionServer",
                 namespaced=True, short_names=("evs",), categories=("whatsapp",),
                 status_subresource=True, custom=True),
    ResourceType("whatsapp-operator.io", "v1alpha1", "clusterevolutionservers", "ClusterEvolutionServer",
                 namespaced=False, short_names=("cevs",), categories=("whatsapp",),
                 status_subresource=True, custom=True),
    ResourceType("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering",
                 namespaced=False, custom=True, peering=True),
    ResourceType("kopf.dev", "v1", "kopfpeerings", "KopfPeering",
                 namespaced=True, custom=True, peering=True),
)
# fmt: on
# Where a request keeps (index in KubeStandin.requests, record) of its RecordedRequest.
_RECORD_KEY = web.RequestKey("kube_standin.record", tuple)
_NAMESPACES = next(rt for rt in RESOURCES if (rt.group, rt.plural) == ("", "namespaces"))


class KubeApiError(Exception):
    """A failure as the apiserver reports it; ``status`` is the Status object it answers."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details:
            self.status["details"] = details


def _not_found(rt: ResourceType, name: str) -> KubeApiError:
    return KubeApiError(
        404,
        "NotFound",
        f'{rt.qualified} "{name}" not found',
        name=name,
        group=rt.group,
        kind=rt.plural,
    )


def _no_such_resource(**details: Any) -> KubeApiError:
    return KubeApiError(404, "NotFound", "the server could not find the requested resource", **details)


def _invalid(message: str) -> KubeApiError:
    return KubeApiError(422, "Invalid", message)


def _schema_invalid(rt: ResourceType, name: str, causes: list[schema_check.Cause]) -> KubeApiError:
    """The apiserver's 422 for a custom resource its CRD schema refuses."""
    return KubeApiError(
        422,
        "Invalid",
        schema_check.invalid_message(rt.kind, rt.group, name, causes),
        name=name,
        group=rt.group,
        kind=rt.kind,
        causes=[cause.as_status_cause() for cause in causes],
    )


def _bad_request(message: str) -> KubeApiError:
    return KubeApiError(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    verb: str  # as RBAC names it: get, list, watch, create, update, patch, delete, deletecollection
    api_group: str | None  # "" for core; None for /version and unknown paths
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    content_type: str | None
    body: Any = None  # the parsed JSON body, if any
    status: int | None = None  # the HTTP status answered (a watch: once its stream started)


# The reason and message a real apiserver puts in the Status of each injectable failure.
_FAULT_REASONS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden: injected fault"),
    404: ("NotFound", "the server could not find the requested resource"),
    409: ("Conflict", "the object has been modified; please apply your changes to the latest version and try again"),
    410: ("Expired", "too old resource version"),
    422: ("Invalid", "the object is invalid (injected fault)"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


@dataclasses.dataclass(eq=False)
class _FaultRule:
    method: str  # upper case, or "*"
    path: str | re.Pattern[str]
    status: int
    times: int
    body: Obj | None
    retry_after: int | None
    content_type: str | None

    def matches(self, method: str, path: str, content_type: str | None) -> bool:
        if self.method != "*" and self.method != method.upper():
            return False
        if self.content_type is not None and self.content_type != content_type:
            return False
        if isinstance(self.path, str):
            return path.startswith(self.path)
        return self.path.search(path) is not None


@dataclasses.dataclass(frozen=True)
class _Change:
    rv: int
    rt: ResourceType
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # stored objects and history entries are never mutated after commit
    old: Obj | None


@dataclasses.dataclass(eq=False)
class _Watcher:
    rt: ResourceType
    namespace: str | None
    selector: Callable[[Obj], bool]
    queue: asyncio.Queue[tuple[str, Obj] | None]

    def translate(self, change: _Change) -> tuple[str, Obj] | None:
        """What this watcher sees of a change: as the apiserver does, an object that starts or
        stops matching the label selector arrives as ADDED or DELETED."""
        if change.rt is not self.rt:
            return None
        if self.namespace is not None and change.obj["metadata"].get("namespace") != self.namespace:
            return None
        now = self.selector(change.obj)
        if change.type != "MODIFIED":
            return (change.type, change.obj) if now else None
        before = change.old is not None and self.selector(change.old)
        if now:
            return ("MODIFIED" if before else "ADDED", change.obj)
        return ("DELETED", change.obj) if before else None


_SELECTOR_TERM = re.compile(
    r"\s*(?P<neg>!?)\s*(?P<key>[\w./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[\w./-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)


def parse_label_selector(text: str | None) -> Callable[[Obj], bool]:
    """Equality (a=b, a==b, a!=b), set (a in (x,y), a notin (x)) and existence (a, !a) terms."""
    terms: list[tuple[str, str, frozenset[str]]] = []  # (key, in/notin/exists/absent, values)
    for term in re.split(r",(?![^(]*\))", text or ""):
        if not term.strip():
            continue
        m = _SELECTOR_TERM.fullmatch(term)
        if m is None or (m["neg"] and (m["op"] or m["setop"])):
            raise _bad_request(f"unable to parse requirement: {term!r}")
        if m["op"]:
            terms.append((m["key"], "notin" if m["op"] == "!=" else "in", frozenset([m["value"]])))
        elif m["setop"]:
            values = frozenset(v.strip() for v in m["values"].split(","))
            terms.append((m["key"], m["setop"], values))
        else:
            terms.append((m["key"], "absent" if m["neg"] else "exists", frozenset()))

    def holds(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
        if op == "in":
            return labels.get(key) in values
        if op == "notin":  # true without the label too, as on the apiserver
            return labels.get(key) not in values
        return (key in labels) == (op == "exists")

    def selects(obj: Obj) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(holds(labels, *term) for term in terms)

    return selects


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch. A failed ``test`` or a bad path is a 422, as on the apiserver."""
    if not isinstance(ops, list):
        raise _bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def split(pointer: str) -> tuple[Any, str]:  # -> (container, last token)
        if not isinstance(pointer, str) or not pointer.startswith("/"):
            raise _invalid(f"invalid JSON pointer: {pointer!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
        node = doc
        for token in tokens[:-1]:
            node = get(node, token)
        return node, tokens[-1]

    def get(node: Any, token: str) -> Any:
        try:
            return node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _invalid(f"path element {token!r} not found") from None

    def add(pointer: str, value: Any) -> None:
        node, token = split(pointer)
        if isinstance(node, list):
            index = len(node) if token == "-" else int(token) if token.isdigit() else -1
            if not 0 <= index <= len(node):
                raise _invalid(f"invalid index {token!r} in {pointer!r}")
            node.insert(index, value)
        elif isinstance(node, dict):
            node[token] = value
        else:
            raise _invalid(f"cannot add to {pointer!r}")

    def remove(pointer: str) -> Any:
        node, token = split(pointer)
        value = get(node, token)
        if isinstance(node, list):
            del node[int(token)]
        else:
            del node[token]
        return value

    for op in ops:
        if not isinstance(op, dict):
            raise _bad_request(f"a JSON patch operation must be an object: {op!r}")
        kind, path, source = op.get("op"), str(op.get("path", "")), str(op.get("from", ""))
        if kind == "add":
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            remove(path)
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            add(path, remove(source))
        elif kind == "copy":
            node, token = split(source)
            add(path, copy.deepcopy(get(node, token)))
        elif kind == "test":
            node, token = split(path)
            if get(node, token) != op.get("value"):
                raise _invalid(f"testing value {path} failed")
        else:
            raise _invalid(f"unknown JSON patch operation: {kind!r}")
    return doc


def _wants_partial_metadata(accept: str) -> bool:
    """Whether the first media type of an Accept header the server can serve is a
    PartialObjectMetadataList (`application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`).
    A real apiserver takes the alternatives in order and answers 406 when it can serve none; the
    stand-in serves plain JSON for anything else, as clients always list it as the fallback."""
    for alternative in accept.split(","):
        kind, *parameters = (part.strip() for part in alternative.split(";"))
        params = dict(p.split("=", 1) for p in parameters if "=" in p)
        if kind in ("application/json", "*/*") and "as" not in params:
            return False
        if kind == "application/json" and params == {"as": "PartialObjectMetadataList", "g": "meta.k8s.io", "v": "v1"}:
            return True
    return False


# Chunked lists a client started and has not finished, kept at most (the apiserver lets them expire).
_PENDING_LISTS = 100


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fold_string_data(obj: Obj) -> None:
    """Secrets: the apiserver merges write-only ``stringData`` into base64 ``data``."""
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()


def _owner_uids(obj: Obj) -> set[str]:
    references = obj["metadata"].get("ownerReferences") or []
    return {ref["uid"] for ref in references if isinstance(ref, dict) and isinstance(ref.get("uid"), str)}


def _content_type(request: web.Request) -> str | None:
    return request.headers.get("Content-Type", "").split(";")[0].strip() or None  # no charset


@dataclasses.dataclass(frozen=True)
class _Target:
    group: str
    version: str
    rt: ResourceType | None  # None for discovery
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


class KubeStandin:
    def __init__(
        self,
        *,
        peering: bool = False,
        crds_installed: bool = True,
        history_size: int = 1000,
        bookmark_interval: float = 5.0,
    ) -> None:
        """``crds_installed=False`` serves the custom resources only once their CRD is created
        through the API (to test installing CRDs). ``history_size`` bounds the watch history:
        a watch from an older resourceVersion gets 410 Gone. ``bookmark_interval``: how long a
        watch-stream that asked for bookmarks may stay silent before it gets one.

        Custom resources are pruned, defaulted and validated against their CRD's structural
        schema on every write, as on the apiserver (see tests/schema_check.py): the schemas
        come from the repository's crds/ directory when ``crds_installed``, and from each CRD
        created or updated through the API. CEL rules are not evaluated."""
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.bookmark_interval = bookmark_interval
        self.failures_served = 0  # how many requests fail_next() rules have answered
        self._faults: list[_FaultRule] = []
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._store: dict[ResourceType, dict[tuple[str, str], Obj]] = {}
        # (group, version, plural) -> the served version's openAPIV3Schema
        self._schemas: dict[tuple[str, str, str], schema_check.Schema] = {}
        for rt in RESOURCES:
            if (peering or not rt.peering) and (crds_installed or not rt.custom or rt.peering):
                self._register(rt)
        if crds_installed:
            for crd in schema_check.repo_crds():
                self._learn_schemas(crd, only_served=True)
        self._rv = 0
        self._history: collections.deque[_Change] = collections.deque(maxlen=history_size)
        self._compacted_rv = 0  # watches from before this resourceVersion get 410 Gone
        self._watchers: set[_Watcher] = set()
        # The garbage collector's view: where each stored object is, by uid, and which stored
        # objects name a uid in their ownerReferences (see _collect_garbage).
        self._by_uid: dict[str, tuple[ResourceType, tuple[str, str]]] = {}
        self._dependents: dict[str, set[tuple[ResourceType, tuple[str, str]]]] = {}
        self._changed = asyncio.Event()  # replaced on every write; see wait_for()
        # Chunked lists (`limit`/`continue`): what each issued continue token still has to serve,
        # read at the first chunk's resourceVersion (the apiserver serves every chunk of one list
        # from one snapshot). Tokens moved to `_expired_continuations` answer 410 Expired.
        self._continuations: dict[str, tuple[int, builtins.list[Obj]]] = {}
        self._expired_continuations: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._create(_NAMESPACES, None, {"metadata": {"name": "default"}})

    def _register(self, rt: ResourceType) -> None:
        self._types.setdefault((rt.group, rt.version, rt.plural), rt)
        self._store.setdefault(self._types[rt.group, rt.version, rt.plural], {})

    def _learn_schemas(self, crd: Obj, *, only_served: bool = False) -> None:
        """Take the schemas of a CRD's served versions (``only_served``: of those the stand-in
        already serves). A version without a schema is then written unchecked."""
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural")
        schemas = schema_check.crd_schemas(crd)
        for version, schema in schemas.items():
            if schema is not None:
                try:
                    schema_check.check_supported(schema)
                except schema_check.UnsupportedSchema as e:  # the stand-in's limit, not Kubernetes'
                    raise _invalid(f"spec.versions[{version}].schema.openAPIV3Schema: {e}") from None
        for version, schema in schemas.items():
            key = (str(spec.get("group")), version, str(plural))
            if only_served and key not in self._types:
                continue
            if schema is None:
                self._schemas.pop(key, None)
            else:
                self._schemas[key] = copy.deepcopy(schema)

    # ---- fault injection ----------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int,
        *,
        times: int = 1,
        body: Obj | None = None,
        retry_after: int | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` HTTP requests that match with ``status`` and no side effect.

        A request matches when its method equals ``method`` (``"*"``: any), its URL path starts
        with ``path`` (a ``str``) or ``re.search``-matches it (a compiled pattern), and, when
        ``content_type`` is given, its Content-Type (without parameters) equals it, e.g.
        ``application/json-patch+json`` for kopf's finalizer patches. Watch requests
        (``?watch=true``) never match. Rules are used in the order they were added; a request
        uses up one answer of the first rule it matches. The answer is a Kubernetes ``Status``
        (``Conflict``, ``TooManyRequests``, ``InternalError``, ``Invalid``, ...) or ``body`` if
        given; ``retry_after`` (1 by default for 429) sets the ``Retry-After`` header and
        ``details.retryAfterSeconds``. The request is still recorded in ``requests``, with the
        status it got. Only HTTP requests are affected, not the Python API (``create``,
        ``patch``, ...)."""
        if times < 1:
            raise ValueError("times must be at least 1")
        if not 400 <= status <= 599:
            raise ValueError(f"not an error status: {status}")
        self._faults.append(_FaultRule(method.upper(), path, status, times, body, retry_after, content_type))

    def clear_failures(self) -> None:
        """Forget every fail_next() rule not used up yet (failures_served keeps its count)."""
        self._faults.clear()

    def _injected_failure(
        self, request: web.Request, target: _Target | None, query: dict[str, str]
    ) -> web.Response | None:
        if not self._faults or query.get("watch") in ("true", "1"):
            return None
        content_type = _content_type(request)
        rule = next(
            (r for r in self._faults if r.matches(request.method, request.path, content_type)),
            None,
        )
        if rule is None:
            return None
        rule.times -= 1
        if rule.times <= 0:
            self._faults.remove(rule)
        self.failures_served += 1
        self._changed.set()  # wait_until() re-checks after a served failure too
        self._changed = asyncio.Event()
        retry_after = rule.retry_after
        if retry_after is None and rule.status == 429:
            retry_after = 1
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if rule.body is not None:
            return web.json_response(rule.body, status=rule.status, headers=headers)
        reason, message = _FAULT_REASONS.get(rule.status, ("", "injected fault"))
        details: Obj = {}
        rt = target.rt if target is not None else None
        if rt is not None:
            details.update(group=rt.group, kind=rt.plural)
            if target is not None and target.name is not None:
                details["name"] = target.name
                if rule.status == 409:
                    message = f'Operation cannot be fulfilled on {rt.qualified} "{target.name}": {message}'
                elif rule.status == 422:
                    message = f'{rt.kind}.{rt.group} "{target.name}" is invalid: injected fault'
                    details["kind"] = rt.kind
                    details["causes"] = [{"reason": "FieldValueInvalid", "message": "injected fault", "field": ""}]
        if rule.status == 500:
            details["causes"] = [{"message": "injected fault"}]
        if retry_after is not None:
            details["retryAfterSeconds"] = retry_after
        error = KubeApiError(rule.status, reason, message, **details)
        return web.json_response(error.status, status=rule.status, headers=headers)

    # ---- Python API for tests -----------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a watch handler ends as soon as its client disconnects.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)  # ends the stream, so shutdown does not wait for it
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": "default"},
                }
            ],
        }
        with open(path, "w") as f:
            json.dump(config, f)  # JSON is YAML, which the kubeconfig loaders read

    def create(self, group: str, version: str, plural: str, body: Obj, namespace: str | None = None) -> Obj:
        rt = self._type(group, version, plural)
        if rt.namespaced and namespace is None:
            namespace = body.get("metadata", {}).get("namespace")
        return self._create(rt, namespace, body)

    def get(self, group: str, version: str, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        rt = self._type(group, version, plural)
        obj = self._store[rt].get(self._key(rt, namespace, name))
        return copy.deepcopy(obj)

    def list(self, group: str, version: str, plural: str, namespace: str | None = None) -> builtins.list[Obj]:
        return self._list(self._type(group, version, plural), namespace)

    def patch(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        rt = self._type(group, version, plural)
        self._check_subresource(rt, subresource)
        return self._patch(rt, namespace, name, MERGE_PATCH, patch, subresource)

    def delete(self, group: str, version: str, plural: str, name: str, namespace: str | None = None) -> None:
        self._delete(self._type(group, version, plural), namespace, name)

    async def wait_for(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        predicate: Callable[[Obj | None], bool],
        namespace: str | None = None,
        timeout: float = 10,
    ) -> Obj | None:
        """Wait until ``predicate(object or None)`` holds, re-checking after every write."""
        seen: list[Obj | None] = [None]

        def check() -> bool:
            seen[0] = self.get(group, version, plural, name, namespace)
            return predicate(seen[0])

        await self.wait_until(
            check,
            timeout=timeout,
            describe=lambda: f"{plural} {namespace}/{name}; last seen: {json.dumps(seen[0], indent=2)}",
        )
        return seen[0]

    async def wait_until(
        self,
        condition: Callable[[], T],
        timeout: float = 10,
        describe: Callable[[], str] = lambda: "",
    ) -> T:
        """Wait until ``condition()`` is truthy, re-checking after every write and every failure
        served by fail_next(); return it."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed  # taken before the check: no write slips between
                    if result := condition():
                        return result
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout}s: {describe()}") from None

    def events_for(self, namespace: str | None, name: str) -> builtins.list[Obj]:
        return [e for e in self.list("", "v1", "events", namespace) if e.get("involvedObject", {}).get("name") == name]

    # ---- storage and semantics ----------------------------------------------------------------

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self._types[group, version, plural]
        except KeyError:
            raise _no_such_resource(group=group, kind=plural) from None

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        if rt.namespaced and not namespace:
            raise ValueError(f"{rt.plural} is namespaced: a namespace is needed")
        return (namespace or "", name) if rt.namespaced else ("", name)

    @staticmethod
    def _check_subresource(rt: ResourceType, subresource: str | None) -> None:
        if subresource is not None and (subresource != "status" or not rt.status_subresource):
            raise _no_such_resource()

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[tuple[str, str], Obj]:
        key = self._key(rt, namespace, name)
        if key not in self._store[rt]:
            raise _not_found(rt, name)
        return key, self._store[rt][key]

    def _list(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Callable[[Obj], bool] = lambda obj: True,
    ) -> builtins.list[Obj]:
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._store[rt].items())
            if (namespace is None or ns == namespace) and selector(obj)
        ]

    def _chunk(
        self, list_items: Callable[[], builtins.list[Obj]], query: dict[str, str]
    ) -> tuple[builtins.list[Obj], Obj]:
        """One chunk of a list and its list metadata, as the apiserver answers `limit`/`continue`.

        `limit` bounds the chunk; when more remain, `metadata.continue` holds an opaque token and
        `metadata.remainingItemCount` their number. A later request with the token gets the next
        chunk of the same snapshot, at the first chunk's resourceVersion. A token the server no
        longer holds answers 410 Expired; one it never issued, 400."""
        text = query.get("limit", "0")
        try:
            limit = int(text)
        except ValueError:
            raise _bad_request(f"limit: invalid value {text!r}") from None
        token = query.get("continue")
        rv = self._rv
        if not token:
            items = list_items()  # the snapshot: later chunks come from it, not from a new list
        else:
            if token in self._expired_continuations:
                raise KubeApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                )
            if token not in self._continuations:
                raise _bad_request("continue key is not valid")
            rv, items = self._continuations.pop(token)
        listed: Obj = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) > limit:
            items, rest = items[:limit], items[limit:]
            next_token = _secrets.token_urlsafe(12)
            self._continuations[next_token] = (rv, rest)
            if len(self._continuations) > _PENDING_LISTS:  # lists nobody finished: the oldest expires
                oldest = next(iter(self._continuations))
                del self._continuations[oldest]
                self._expired_continuations.add(oldest)
            listed["continue"] = next_token
            listed["remainingItemCount"] = len(rest)
        return items, listed

    def expire_list_continuations(self) -> None:
        """The continue tokens issued so far expire (etcd compacted their revision): 410 on use."""
        self._expired_continuations.update(self._continuations)
        self._continuations.clear()

    def _commit(self, rt: ResourceType, key: tuple[str, str], obj: Obj, old: Obj | None, type_: str) -> Obj:
        """The one place that writes: bumps the resourceVersion, stores, feeds the watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if type_ == "DELETED":
            del self._store[rt][key]
        else:
            self._store[rt][key] = obj
        self._index(rt, key, old, None if type_ == "DELETED" else obj)
        change = _Change(self._rv, rt, type_, obj, old)
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(change)
        for watcher in self._watchers:
            if (event := watcher.translate(change)) is not None:
                watcher.queue.put_nowait(event)
        self._changed.set()
        self._changed = asyncio.Event()
        if type_ == "DELETED":
            self._collect_garbage(rt, obj)
        return copy.deepcopy(obj)

    def _index(self, rt: ResourceType, key: tuple[str, str], old: Obj | None, new: Obj | None) -> None:
        """Keep the uid and owner indexes in step with one write (``new`` None: removed)."""
        where = (rt, key)
        if old is not None:
            self._by_uid.pop(old["metadata"].get("uid", ""), None)
            for uid in _owner_uids(old):
                dependents = self._dependents.get(uid)
                if dependents is not None:
                    dependents.discard(where)
                    if not dependents:
                        del self._dependents[uid]
        if new is not None:
            if new["metadata"].get("uid"):
                self._by_uid[new["metadata"]["uid"]] = where
            for uid in _owner_uids(new):
                self._dependents.setdefault(uid, set()).add(where)

    def _collect_garbage(self, owner_rt: ResourceType, owner: Obj) -> None:
        """The garbage collector, with background propagation, for an owner just removed for good.

        Each dependent (an object whose ``metadata.ownerReferences`` names the owner's uid; in the
        owner's namespace when the owner is namespaced, anywhere when it is cluster-scoped, and
        never a cluster-scoped object owned by a namespaced one, which the real collector refuses)
        is deleted as by a DELETE: one with finalizers is only marked, and goes when they are
        removed, its own dependents after it. A dependent that another existing owner still holds
        is not deleted: the reference to the gone owner is removed from it, as the collector does.

        Where this differs from the apiserver: the collector runs at once, in the same step as the
        owner's removal, not a moment later; only background propagation exists (DeleteOptions'
        ``propagationPolicy`` Foreground and Orphan are not honoured, nor ``blockOwnerDeletion``);
        and an object created with references to owners that never existed is kept.
        """
        uid = owner["metadata"].get("uid")
        owner_namespace = owner["metadata"].get("namespace") if owner_rt.namespaced else None
        for rt, key in sorted(self._dependents.get(uid or "", ()), key=lambda where: (where[0].plural, where[1])):
            dependent = self._store[rt].get(key)
            if dependent is None:  # removed meanwhile, by an earlier dependent's own collection
                continue
            if owner_rt.namespaced and (not rt.namespaced or key[0] != owner_namespace):
                continue
            references = dependent["metadata"].get("ownerReferences") or []
            remaining = [ref for ref in references if ref.get("uid") != uid]
            if any(ref.get("uid") in self._by_uid for ref in remaining):
                new = copy.deepcopy(dependent)
                new["metadata"]["ownerReferences"] = remaining
                self._commit(rt, key, new, dependent, "MODIFIED")
            else:
                self._delete(rt, key[0] or None, key[1])

    def _create(self, rt: ResourceType, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request("the body must be an object with object metadata")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        for field, expected in (("apiVersion", rt.api_version), ("kind", rt.kind)):
            if obj.setdefault(field, expected) != expected:
                raise _bad_request(f"{field} {obj[field]!r} does not match the expected {expected!r}")
        if meta.get("resourceVersion"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            if not namespace:
                raise _bad_request("a namespace is required for namespaced resources")
            if meta.get("namespace", namespace) != namespace:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if ("", namespace) not in self._store[_NAMESPACES]:
                raise _not_found(_NAMESPACES, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid("metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + _secrets.token_hex(3)[:5]
        key = self._key(rt, namespace, meta["name"])
        if rt.status_subresource:
            obj.pop("status", None)  # with a status subresource, create ignores status too
        obj = self._admit(rt, obj, meta["name"])  # validation comes before the existence check
        meta = obj["metadata"]
        if key in self._store[rt]:
            raise KubeApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{meta["name"]}" already exists',
                name=meta["name"],
                group=rt.group,
                kind=rt.plural,
            )
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if (rt.group, rt.plural) == ("", "secrets"):
            _fold_string_data(obj)
        if rt is _NAMESPACES:
            obj["status"] = {"phase": "Active"}
        if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._accept_crd(obj)
        return self._commit(rt, key, obj, None, "ADDED")

    def _admit(self, rt: ResourceType, obj: Obj, name: str) -> Obj:
        """What the apiserver makes of a custom resource it is asked to store: pruned of fields
        its schema does not declare, defaulted, and validated (a 422 Invalid if not valid)."""
        schema = self._schemas.get((rt.group, rt.version, rt.plural)) if rt.custom else None
        if schema is None:
            return obj
        admitted, causes = schema_check.admit(schema, obj)
        if causes:
            raise _schema_invalid(rt, name, causes)
        result: Obj = admitted
        return result

    def _accept_crd(self, crd: Obj) -> None:
        """Mark a CRD established and serve its resource if nothing with that group/version/plural
        is served yet (the RESOURCES table wins). Deleting a CRD leaves its resource served."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        if crd["metadata"]["name"] != f"{names.get('plural')}.{spec.get('group')}":
            raise _invalid('metadata.name: Invalid value: must be spec.names.plural+"."+spec.group')
        self._learn_schemas(crd)  # first: it refuses schemas the stand-in cannot check
        for version in spec.get("versions") or []:
            if version.get("served"):
                self._register(
                    ResourceType(
                        spec["group"],
                        version["name"],
                        names["plural"],
                        names["kind"],
                        namespaced=spec.get("scope") == "Namespaced",
                        short_names=tuple(names.get("shortNames") or ()),
                        categories=tuple(names.get("categories") or ()),
                        status_subresource="status" in (version.get("subresources") or {}),
                        custom=True,
                    )
                )
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": _now()} for t in ("NamesAccepted", "Established")
            ],
        }

    def _update(
        self,
        rt: ResourceType,
        key: tuple[str, str],
        old: Obj,
        candidate: Any,
        subresource: str | None,
    ) -> Obj:
        """Turn a client's proposed object (from PUT or a patch) into the stored one."""
        if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata", {}), dict):
            raise _bad_request("the body must be an object with object metadata")
        wanted_rv = candidate.get("metadata", {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != old["metadata"]["resourceVersion"]:
            raise KubeApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{key[1]}": the '
                "object has been modified; please apply your changes to the latest version and "
                "try again",
                name=key[1],
                group=rt.group,
                kind=rt.plural,
            )
        if candidate.get("metadata", {}).get("name", key[1]) != key[1]:
            raise _bad_request("the name of the object does not match the name on the URL")
        # The status subresource writes only status; the main endpoint everything but status.
        if subresource == "status":
            new, source = copy.deepcopy(old), candidate
        else:
            new, source = copy.deepcopy(candidate), old if rt.status_subresource else candidate
        new.pop("status", None)
        if "status" in source:
            new["status"] = copy.deepcopy(source["status"])
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        for field in (
            "uid",
            "name",
            "namespace",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if (rt.group, rt.plural) == ("", "secrets"):
            _fold_string_data(new)
        new = self._admit(rt, new, key[1])  # before the generation: a pruned field changes nothing
        meta = new["metadata"]
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old_meta.get("generation", 0) + 1
        finalizers = meta.get("finalizers") or []
        if "deletionTimestamp" in meta and set(finalizers) - set(old_meta.get("finalizers") or []):
            raise _invalid(
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"
            )
        if new == old:  # a no-op write changes nothing: no new resourceVersion, no watch event
            return copy.deepcopy(old)
        if rt.group == "apiextensions.k8s.io" and rt.plural == "customresourcedefinitions":
            self._learn_schemas(new)  # an updated CRD's schema applies from now on
        if "deletionTimestamp" in meta and not finalizers:
            return self._commit(rt, key, new, old, "DELETED")
        return self._commit(rt, key, new, old, "MODIFIED")

    def _patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str | None,
        patch: Any,
        subresource: str | None,
    ) -> Obj:
        key, old = self._existing(rt, namespace, name)
        if content_type == JSON_PATCH:
            candidate = json_patch(old, patch)
        elif content_type in (MERGE_PATCH, STRATEGIC_PATCH):
            # Strategic merge differs from merge only for lists in built-in types (merge keys);
            # none of the served kinds relies on that, so both are merged the same way.
            if not isinstance(patch, dict):
                raise _bad_request("a merge patch must be a JSON object")
            candidate = merge_patch(old, patch)
        else:
            raise KubeApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {content_type}",
            )
        return self._update(rt, key, old, candidate, subresource)

    def _replace(self, rt: ResourceType, namespace: str | None, name: str, body: Any, subresource: str | None) -> Obj:
        key, old = self._existing(rt, namespace, name)
        # Custom resources do not allow unconditional updates (built-ins mostly do).
        if rt.custom and isinstance(body, dict) and not body.get("metadata", {}).get("resourceVersion"):
            raise _invalid("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
        return self._update(rt, key, old, body, subresource)

    def _delete(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        key, old = self._existing(rt, namespace, name)
        if not old["metadata"].get("finalizers"):
            return self._commit(rt, key, copy.deepcopy(old), old, "DELETED")
        if "deletionTimestamp" in old["metadata"]:
            return copy.deepcopy(old)  # already being deleted: nothing changes
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        if "generation" in new["metadata"]:  # the apiserver bumps it when marking for deletion
            new["metadata"]["generation"] += 1
        return self._commit(rt, key, new, old, "MODIFIED")

    # ---- HTTP ---------------------------------------------------------------------------------

    def _route(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _no_such_resource()
        if not rest:
            if not any(g == group and v == version for g, v, _ in self._types):
                raise _no_such_resource()
            return _Target(group, version, None)
        namespace = None
        # /namespaces/{ns}/{plural} is a namespaced path only if {plural} is namespaced;
        # otherwise it is the namespace {ns} itself with a subresource.
        maybe = self._types.get((group, version, rest[2])) if len(rest) >= 3 else None
        if rest[0] == "namespaces" and maybe is not None and maybe.namespaced:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise _no_such_resource()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        rt = self._type(group, version, plural)
        self._check_subresource(rt, subresource)
        if rt.namespaced and name is not None and namespace is None:
            raise _no_such_resource()
        return _Target(group, version, rt, namespace, name, subresource)

    @staticmethod
    def _verb(method: str, target: _Target | None, query: dict[str, str]) -> str:
        if method == "GET":
            if target is None or target.rt is None or target.name is not None:
                return "get"
            return "watch" if query.get("watch") in ("true", "1") else "list"
        if method == "DELETE" and target is not None and target.name is None:
            return "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        path = request.path.rstrip("/")
        target: _Target | None = None
        failure: KubeApiError | None = None
        if path not in ("/version", "/api", "/apis"):
            try:
                target = self._route(path)
            except KubeApiError as e:
                failure = e
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError as e:
            body, failure = raw, failure or _bad_request(f"invalid JSON: {e}")
        self._record(request, target, query, body)
        response: web.StreamResponse
        try:
            injected = self._injected_failure(request, target, query)
            if injected is not None:
                response = injected
            elif failure is not None:
                raise failure
            elif path == "/version":
                response = web.json_response(
                    {
                        "major": "1",
                        "minor": "36",
                        "gitVersion": "v1.36.0-standin",
                        "platform": "linux/amd64",
                    }
                )
            elif path in ("/api", "/apis"):
                response = web.json_response(self._discovery_root(path))
            else:
                assert target is not None
                response = await self._serve(request, target, query, body)
        except KubeApiError as e:
            response = web.json_response(e.status, status=e.code)
        self._mark(request, response.status)
        return response

    def _mark(self, request: web.Request, status: int) -> None:
        """Note the status answered in the request's record (once: a watch marks it at start)."""
        index, record = request.get(_RECORD_KEY, (0, None))
        if record is None or record.status is not None:
            return
        marked = dataclasses.replace(record, status=status)
        if not (0 <= index < len(self.requests) and self.requests[index] is record):
            index = next(
                (i for i in range(len(self.requests) - 1, -1, -1) if self.requests[i] is record),
                -1,
            )
        if index >= 0:
            self.requests[index] = marked
        request[_RECORD_KEY] = (index, marked)

    def _record(self, request: web.Request, target: _Target | None, query: dict[str, str], body: Any) -> None:
        rt = target.rt if target else None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=query,
            verb=self._verb(request.method, target, query),
            api_group=target.group if target else None,
            version=target.version if target else None,
            resource=rt.plural if rt else None,
            subresource=target.subresource if target else None,
            namespace=target.namespace if target else None,
            name=target.name if target else None,
            content_type=_content_type(request),
            body=body,
        )
        # The record itself, not self.requests[-1]: a benchmark may swap in a list that keeps nothing.
        self.requests.append(record)
        request[_RECORD_KEY] = (len(self.requests) - 1, record)

    async def _serve(
        self, request: web.Request, target: _Target, query: dict[str, str], body: Any
    ) -> web.StreamResponse:
        rt, ns, name, sub = target.rt, target.namespace, target.name, target.subresource
        method = request.method
        if rt is None:
            if method != "GET":
                raise KubeApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return web.json_response(self._discovery_group_version(target.group, target.version))
        if name is None:  # collection
            if method == "GET" and query.get("watch") in ("true", "1"):
                return await self._watch(request, rt, ns, query)
            selector = parse_label_selector(query.get("labelSelector"))
            if method == "GET":
                items, listed = self._chunk(lambda: self._list(rt, ns, selector), query)
                if _wants_partial_metadata(request.headers.get("Accept", "")):
                    return web.json_response(
                        {
                            "kind": "PartialObjectMetadataList",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": listed,
                            "items": [
                                {
                                    "kind": "PartialObjectMetadata",
                                    "apiVersion": "meta.k8s.io/v1",
                                    "metadata": item["metadata"],
                                }
                                for item in items
                            ],
                        }
                    )
                if not rt.custom:  # built-in lists carry kind/apiVersion only at the list level
                    for item in items:
                        item.pop("kind", None)
                        item.pop("apiVersion", None)
                return web.json_response(self._list_body(rt, items) | {"metadata": listed})
            if method == "POST":
                return web.json_response(self._create(rt, ns, body), status=201)
            if method == "DELETE":
                deleted = [
                    self._delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                    for obj in self._list(rt, ns, selector)
                ]
                return web.json_response(self._list_body(rt, deleted))
        elif method == "GET":
            return web.json_response(copy.deepcopy(self._existing(rt, ns, name)[1]))
        elif method == "PUT":
            return web.json_response(self._replace(rt, ns, name, body, sub))
        elif method == "PATCH":
            return web.json_response(self._patch(rt, ns, name, _content_type(request), body, sub))
        elif method == "DELETE" and sub is None:
            return web.json_response(self._delete(rt, ns, name))
        raise KubeApiError(405, "MethodNotAllowed", "the server does not allow this method")

    def _list_body(self, rt: ResourceType, items: builtins.list[Obj]) -> Obj:
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _discovery_root(self, path: str) -> Obj:
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//")[-1]}],
            }
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                    "preferredVersion": {
                        "groupVersion": f"{group}/{versions[0]}",
                        "version": versions[0],
                    },
                }
                for group, versions in groups.items()
            ],
        }

    def _discovery_group_version(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self._types.values():
            if (rt.group, rt.version) != (group, version):
                continue
            entry = {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ALL_VERBS,
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str | None, query: dict[str, str]
    ) -> web.StreamResponse:
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial_events = query.get("sendInitialEvents") == "true"
        since = query.get("resourceVersion") or "0"
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError:
            raise _bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from None
        watcher = _Watcher(rt, namespace, parse_label_selector(query.get("labelSelector")), asyncio.Queue())
        # Subscribe and take the initial events in the same loop step: nothing lost or doubled.
        self._watchers.add(watcher)
        subscribed_rv = self._rv  # later changes go to the queue, not into the backlog
        try:
            backlog: builtins.list[tuple[str, Obj]] = []
            if since == "0" or initial_events:  # "any version": the current state as ADDED
                backlog = [("ADDED", obj) for obj in self._list(rt, namespace, watcher.selector)]
            elif not since.isdigit():
                raise _bad_request(f"invalid resource version: {since!r}")
            elif int(since) < self._compacted_rv:
                gone = KubeApiError(410, "Expired", f"too old resource version: {since} ({self._compacted_rv})")
                backlog = [("ERROR", gone.status)]
            else:
                backlog = [
                    event
                    for change in self._history
                    if change.rv > int(since)
                    if (event := watcher.translate(change)) is not None
                ]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            self._mark(request, response.status)

            async def send(type_: str, obj: Obj) -> None:
                await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

            async def bookmark(rv: int, **annotations: str) -> None:
                meta: Obj = {"resourceVersion": str(rv)}
                if annotations:
                    meta["annotations"] = annotations
                await send("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})

            for type_, obj in backlog:
                await send(type_, obj)
            if backlog[:1] and backlog[0][0] == "ERROR":  # the apiserver ends the stream after it
                return response
            # Changes queued while the backlog was sent are newer than this bookmark: a client
            # resuming from it misses none of them.
            if bookmarks and initial_events:
                await bookmark(subscribed_rv, **{"k8s.io/initial-events-end": "true"})
            elif bookmarks:
                await bookmark(subscribed_rv)
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                if bookmarks:
                    wait = self.bookmark_interval if wait is None else min(wait, self.bookmark_interval)
                try:
                    async with asyncio.timeout(wait):
                        event = await watcher.queue.get()
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        break
                    # The queue is empty, so every change up to now has been sent:
                    # the current resourceVersion is a safe point to resume from.
                    await bookmark(self._rv)
                    continue
                if event is None:  # the stand-in is stopping
                    break
                await send(*event)
            await response.write_eof()
            return response
        except ConnectionError:
            return web.Response()  # the client went away; nobody will read this
        finally:
            self._watchers.discard(watcher)
