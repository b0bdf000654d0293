"""The operator's own Kubernetes API calls: status patches and Events, outside kopf's handlers.

kopf writes only its own bookkeeping; instance status changes at any moment (a Socket.IO event),
so the operator patches `/status` itself with an async httpx client built from the same
credentials kopf logs in with.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json as jsonlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import kopf

from whatsapp_operator.http11 import CookielessClient, Http11Transport, RequestMaker, discard_answer, json_body
from whatsapp_operator.names import API_VERSION, EVENT_SOURCE, GROUP, KIND, PLURAL, VERSION
from whatsapp_operator.pacing import LARGE_ANSWER_BYTES, ROWS_PER_TURN
from whatsapp_operator.redaction import redact, register_secret
from whatsapp_operator.values import utc_now

logger = logging.getLogger("whatsapp_operator.kube.client")
# Pages of one list read at most (200 objects each: two million objects).
MAX_LIST_PAGES = 10_000
# Only the objects' metadata, else the usual list (docs/kubernetes-api.md §1).
_PARTIAL_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"


class KubeError(Exception):
    def __init__(self, status: int | None, message: str):
        self.status = status
        super().__init__(redact(message))


def login_from_environment() -> kopf.ConnectionInfo:
    """In-cluster service account first, then $KUBECONFIG (read now, not at import) or ~/.kube/config.

    Raises kopf.LoginError with one line saying why when neither gives credentials, including a
    kubeconfig that is not YAML or not a kubeconfig (the client raises yaml, type or decoding
    errors for those, not its ConfigException).
    """
    import kubernetes.client
    import kubernetes.config

    def failure(why: str) -> kopf.LoginError:
        return kopf.LoginError(redact(" ".join(why.split())))  # one line: the command prints it as is

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError) as incluster_error:
        kubeconfig = os.environ.get("KUBECONFIG") or None
        where = f"KUBECONFIG={kubeconfig}" if kubeconfig else "~/.kube/config"
        try:
            kubernetes.config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise failure(
                f"no in-cluster service account ({incluster_error}) and no usable kubeconfig ({where}): {error}"
            ) from None
        except Exception as error:  # noqa: BLE001 - malformed YAML, a list instead of a mapping, not UTF-8 ...
            raise failure(f"the kubeconfig ({where}) is malformed: {type(error).__name__}: {error}") from None
    config = kubernetes.client.Configuration.get_default_copy()
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    register_secret(token)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


class KubeClient:
    def __init__(self, login: Callable[[], kopf.ConnectionInfo] | None = None) -> None:
        self._http: httpx.AsyncClient | None = None  # the base URL, headers and timeouts
        self._transport: httpx.AsyncBaseTransport | None = None
        self._requests: RequestMaker | None = None
        self._ready = asyncio.Event()
        # Service-account tokens rotate: on a 401 the credentials are loaded again, once per call.
        self.login = login

    def use_credentials(self, info: kopf.ConnectionInfo) -> None:
        old = self._http
        self._http, self._transport = _client_for(info)
        self._requests = RequestMaker(self._http)
        self._ready.set()
        if old is not None:
            asyncio.get_running_loop().create_task(old.aclose())

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = _status_path(namespace, name)
        # The answer is the whole object, QR code included: nobody reads it, so it is not decoded.
        await self._call(
            "PATCH", path, json={"status": patch}, content_type="application/merge-patch+json", answer=False
        )

    async def post_event(self, involved: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        namespace = involved["namespace"]
        now = utc_now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, **involved},
            "type": type,
            "reason": reason,
            "message": redact(message)[:1024],
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": EVENT_SOURCE,
            "reportingInstance": os.environ.get("HOSTNAME", EVENT_SOURCE),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call(
            "POST", f"/api/v1/namespaces/{quote(namespace)}/events", json=body, content_type="application/json"
        )

    async def get_cluster_peering(self, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/apis/kopf.dev/v1/clusterkopfpeerings/{quote(name)}")

    async def get_instance(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(self._custom_path(PLURAL, namespace, name))

    async def instance_metadata_pages(self, page_size: int = ROWS_PER_TURN) -> AsyncIterator[list[dict[str, Any]]]:
        """The metadata of every WhatsAppInstance the operator can see (cluster-wide list), a page of
        at most `page_size` objects at a time (docs/kubernetes-api.md §1).

        Asked as a PartialObjectMetadataList: the full list carries every status with its QR code.
        Paged, because even the metadata of thousands of objects (their managed fields, kopf's
        annotations) took one step of the loop of 14-18 ms per thousand to decode, holding every QR
        event back meanwhile. A server that cannot answer so sends the full list, or all of it in
        one page, read the same way. A continue token that expired mid-way is a KubeError (410)."""
        path = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        query = f"?limit={page_size}"
        for _ in range(MAX_LIST_PAGES):  # a server that never stops sending continue tokens: bounded
            found = await self._call("GET", path + query, accept=_PARTIAL_METADATA_LIST)
            if not isinstance(found, dict):
                return
            items = found.get("items")
            yield [
                item["metadata"]
                for item in (items if isinstance(items, list) else ())
                if isinstance(item, dict) and isinstance(item.get("metadata"), dict)
            ]
            listed = found.get("metadata")
            token = listed.get("continue") if isinstance(listed, dict) else None
            if not isinstance(token, str) or not token:
                return
            query = f"?limit={page_size}&continue={quote(token, safe='')}"
        raise KubeError(None, f"GET {path}: still more after {MAX_LIST_PAGES} pages; not read to the end")

    async def annotate_instance(self, namespace: str, name: str, annotation: str, value: str) -> None:
        path = self._custom_path(PLURAL, namespace, name)
        await self._call(
            "PATCH",
            path,
            json={"metadata": {"annotations": {annotation: value}}},
            content_type="application/merge-patch+json",
        )

    # -- Evolution servers -------------------------------------------------------------------------

    @staticmethod
    def _custom_path(plural: str, namespace: str | None, name: str) -> str:
        where = f"/namespaces/{quote(namespace)}" if namespace is not None else ""
        return f"/apis/{GROUP}/{VERSION}{where}/{plural}/{quote(name)}"

    async def get_custom(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(self._custom_path(plural, namespace, name))

    async def patch_custom_status(self, plural: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        await self._call(
            "PATCH",
            self._custom_path(plural, namespace, name) + "/status",
            json={"status": status},
            content_type="application/merge-patch+json",
        )

    # -- Secrets: read only those named in a spec; write only connection Secrets ---------------------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(
            "POST", f"/api/v1/namespaces/{quote(namespace)}/secrets", json=body, content_type="application/json"
        )

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        await self._call(
            "PUT",
            f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}",
            json=body,
            content_type="application/json",
        )

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def get_crd(self, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{quote(name)}")

    async def create_crd(self, body: dict[str, Any]) -> None:
        await self._call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json=body,
            content_type="application/json",
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str | None = None,
        answer: bool = True,
        accept: str | None = None,
    ) -> Any:
        """One API request; every failure is a KubeError (status None: the API could not be reached).

        Sent straight to the client's transport: `AsyncClient.send`'s own steps (auth flow,
        redirects, cookies, event hooks) have nothing to do for this client (credentials are
        headers, the API does not redirect), and were a measurable share of each status write's
        CPU (bench/README.md, "Fourth round")."""
        await self._ready.wait()
        content = None if json is None else _encode(method, path, json)
        headers: tuple[tuple[str, str], ...] = (("content-type", content_type),) if content_type else ()
        if accept:
            headers += (("accept", accept),)
        for attempt in (1, 2):
            assert self._transport is not None and self._requests is not None
            try:
                response = await self._transport.handle_async_request(
                    self._requests.build(method, path, content, *headers)
                )
                if not answer and response.status_code < 400 and _is_json(response):
                    # Nobody reads it (a 200 that is not JSON came from something in between:
                    # decoded, refused below). Read to its end, the connection goes back to the pool,
                    # straight from the transport: httpx's aiter_raw() adds a chunker, a context
                    # manager and a close for bytes nobody looks at.
                    await discard_answer(response)
                    return None
                await response.aread()
                if len(response.content) > LARGE_ANSWER_BYTES:
                    await asyncio.sleep(0)  # a list of thousands of objects: decoded in a turn of its own
            except httpx.HTTPError as error:
                raise KubeError(None, f"{method} {path}: {type(error).__name__}") from None
            if response.status_code != 401 or self.login is None or attempt == 2:
                break
            try:
                self.use_credentials(await asyncio.to_thread(self.login))
            except kopf.LoginError as error:
                raise KubeError(401, f"{method} {path}: HTTP 401 and no fresh credentials: {error}") from None
        body = _decode(response)
        if response.status_code >= 400:
            detail = body.get("message", "") if isinstance(body, dict) else response.text[:200]
            raise KubeError(response.status_code, f"{method} {path}: HTTP {response.status_code} {str(detail)[:1000]}")
        return body


@functools.lru_cache(maxsize=100_000)
def _status_path(namespace: str, name: str) -> str:
    """The status path of one WhatsAppInstance, kept: each is written again with every QR code."""
    return KubeClient._custom_path(PLURAL, namespace, name) + "/status"


def _encode(method: str, path: str, document: Any) -> bytes:
    # What the apiserver could not decode either (NaN, a lone surrogate) is refused here as it would
    # refuse it there: 400, which callers treat as "do not send this again".
    try:
        return json_body(document)
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        raise KubeError(
            400, f"{method} {path}: the request cannot be encoded as JSON ({type(error).__name__})"
        ) from None


def _is_json(response: httpx.Response) -> bool:
    # From the raw headers: Headers.get() works out the encoding of every header first. Several
    # Content-Type headers read as one, joined, as Headers.get() gives them.
    content_type = b", ".join(value for name, value in response.headers.raw if name.lower() == b"content-type")
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return jsonlib.loads(response.content)
    except (ValueError, RecursionError):
        if response.status_code >= 400:
            return None
        raise KubeError(
            None, f"the Kubernetes API answered HTTP {response.status_code} with a body that is not JSON"
        ) from None


def _client_for(info: kopf.ConnectionInfo) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]:
    headers = {"accept": "application/json", "user-agent": "whatsapp-operator"}
    if info.token:
        headers["authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        # What httpx.BasicAuth would add to every request, once (requests go to the transport).
        basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode("ascii")
        register_secret(basic)
        headers["authorization"] = f"Basic {basic}"
    verify: ssl.SSLContext | bool = True
    if info.insecure:
        verify = False
    elif info.ca_path or info.ca_data:
        context = ssl.create_default_context()
        if info.ca_path:
            context.load_verify_locations(cafile=os.fsdecode(info.ca_path))
        else:
            data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
            context.load_verify_locations(cadata=data)
        verify = context
    if isinstance(verify, ssl.SSLContext) and info.certificate_path and info.private_key_path:
        verify.load_cert_chain(os.fsdecode(info.certificate_path), os.fsdecode(info.private_key_path))
    elif info.certificate_path and info.private_key_path:
        context = ssl.create_default_context()
        context.load_cert_chain(os.fsdecode(info.certificate_path), os.fsdecode(info.private_key_path))
        verify = context if verify is True else verify
    transport = Http11Transport(verify=verify, max_connections=64)
    client = CookielessClient(base_url=info.server, headers=headers, timeout=30.0, transport=transport)
    return client, transport
