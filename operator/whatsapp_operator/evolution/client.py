"""Evolution API REST client: the few calls the operator needs, each with its contract traps handled.

Every call goes through `_request`, which bounds concurrency toward Evolution, turns transport
failures, HTTP errors and Evolution's HTTP-200 error bodies into `EvolutionError`, and never lets
the API key or an instance token reach a message. Instance tokens returned by Evolution
(`hash` on create, `token` in fetchInstances) are dropped as soon as a response is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from whatsapp_operator.evolution.errors import (
    EvolutionError,
    InstanceNotFound,
    error_message_from_body,
    reason_for_status,
)

logger = logging.getLogger("whatsapp_operator.evolution")

# Events every instance is subscribed to on its own namespace. These four names are valid in the
# /websocket/set enum of both 2.2.3 and 2.3.6; the create call accepts the longer list unvalidated.
INSTANCE_EVENTS_FOR_SET = ("QRCODE_UPDATED", "CONNECTION_UPDATE", "LOGOUT_INSTANCE", "REMOVE_INSTANCE")
INSTANCE_EVENTS_AT_CREATE = (*INSTANCE_EVENTS_FOR_SET, "INSTANCE_CREATE", "INSTANCE_DELETE", "STATUS_INSTANCE")
_SECRET_FIELDS = frozenset({"token", "hash", "apikey"})


@dataclass(frozen=True)
class QRPayload:
    """A QR object as Evolution returns it; every field may be missing (`{"count":0}`)."""

    code: str | None = None
    base64: str | None = None
    pairing_code: str | None = None
    count: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QRPayload:
        count = data.get("count")
        return cls(
            code=_optional_str(data.get("code")),
            base64=_optional_str(data.get("base64")),
            pairing_code=_optional_str(data.get("pairingCode")),
            count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        )


@dataclass(frozen=True)
class ConnectResult:
    state: str | None  # "open" when already connected, else None
    qr: QRPayload | None


@dataclass(frozen=True)
class CreatedInstance:
    instance_id: str | None
    status: str | None
    qr: QRPayload | None


@dataclass(frozen=True)
class InstanceRecord:
    """One row of fetchInstances, without its token."""

    instance_id: str | None
    name: str
    connection_status: str | None
    owner_jid: str | None
    profile_name: str | None
    profile_picture_url: str | None
    disconnection_reason_code: int | None

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> InstanceRecord:
        code = row.get("disconnectionReasonCode")
        return cls(
            instance_id=_optional_str(row.get("id")),
            name=str(row.get("name") or ""),
            connection_status=_optional_str(row.get("connectionStatus")),
            owner_jid=_optional_str(row.get("ownerJid")),
            profile_name=_optional_str(row.get("profileName")),
            profile_picture_url=_optional_str(row.get("profilePicUrl")),
            disconnection_reason_code=code if isinstance(code, int) else None,
        )


# A reconciliation starts with a connectionState read and continues with create/connect/fetch.
# Serving the follow-ups first finishes instances one by one: with 1,000 new resources the first
# QR codes appear at once instead of after every instance's first read (bench/README.md).
FOLLOW_UP_PRIORITY = 0
ENTRY_PRIORITY = 1


class PrioritySlots:
    """A semaphore that lets waiters in by priority (lower first), then by arrival."""

    def __init__(self, capacity: int):
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # the slot was handed over just as the waiter was cancelled
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():  # cancelled waiters are skipped
                granted.set_result(None)
                return
        self._free += 1


class InstanceAlreadyExists(EvolutionError):
    def __init__(self, message: str):
        super().__init__("InstanceAlreadyExists", message, status=403, endpoint="create instance")


class EvolutionClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_concurrent_requests: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"apikey": api_key, "accept": "application/json"},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_concurrent_requests * 2),
        )
        self._slots = PrioritySlots(max_concurrent_requests)
        self.calls: dict[tuple[str, str], int] = {}  # (endpoint, outcome) -> count

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- instance lifecycle -------------------------------------------------------------------

    async def create_instance(
        self,
        name: str,
        *,
        integration: str,
        settings: dict[str, Any],
    ) -> CreatedInstance:
        body: dict[str, Any] = {
            "instanceName": name,
            "integration": integration,
            # qrcode:false returns at once; the QR cycle is started by connect(), which also
            # carries the pairing number, so create never blocks for Evolution's fixed 5 s wait.
            "qrcode": False,
            **settings,
            "websocket": {"enabled": True, "events": list(INSTANCE_EVENTS_AT_CREATE)},
        }
        try:
            data = await self._request("POST", "/instance/create", "create instance", json=body)
        except EvolutionError as error:
            if error.status == 403 and "already in use" in error.message:
                raise InstanceAlreadyExists(error.message) from None
            raise
        instance = data.get("instance") if isinstance(data, dict) else None
        if not isinstance(instance, dict):
            raise EvolutionError("EvolutionBadResponse", "create instance: the answer has no instance object",
                                 endpoint="create instance")
        qr = data.get("qrcode")
        return CreatedInstance(
            instance_id=_optional_str(instance.get("instanceId")),
            status=_optional_str(instance.get("status")),
            qr=QRPayload.from_json(qr) if isinstance(qr, dict) else None,
        )

    async def connect(self, name: str, *, number: str | None = None) -> ConnectResult:
        params = {"number": number} if number else None
        data = await self._request("GET", f"/instance/connect/{_segment(name)}", "connect instance",
                                   params=params, instance=name)
        if not isinstance(data, dict):
            raise EvolutionError("EvolutionBadResponse", "connect instance: the answer is not an object",
                                 endpoint="connect instance")
        instance = data.get("instance")
        if isinstance(instance, dict):
            state = _optional_str(instance.get("state") or instance.get("status"))
            qr = data.get("qrcode")
            return ConnectResult(state=state, qr=QRPayload.from_json(qr) if isinstance(qr, dict) else None)
        return ConnectResult(state=None, qr=QRPayload.from_json(data))

    async def connection_state(self, name: str) -> str | None:
        """The live in-memory state (open/connecting/close); None while Evolution is still loading it."""
        data = await self._request("GET", f"/instance/connectionState/{_segment(name)}",
                                   "read connection state", instance=name, priority=ENTRY_PRIORITY)
        instance = data.get("instance") if isinstance(data, dict) else None
        if not isinstance(instance, dict):
            raise EvolutionError("EvolutionBadResponse", "read connection state: the answer has no instance object",
                                 endpoint="read connection state")
        return _optional_str(instance.get("state"))

    async def fetch_instance(self, name: str) -> InstanceRecord | None:
        """The stored row of one instance; None when Evolution has it in its database only."""
        try:
            data = await self._request("GET", "/instance/fetchInstances", "fetch instance",
                                       params={"instanceName": name}, instance=name)
        except InstanceNotFound:
            return None
        rows = data if isinstance(data, list) else [data]
        for row in rows:
            if isinstance(row, dict) and row.get("name") == name:
                return InstanceRecord.from_json(_without_secrets(row))
        return None

    async def delete_instance(self, name: str) -> bool:
        """Remove the instance; False when Evolution did not have it (404 counts as gone)."""
        try:
            await self._request("DELETE", f"/instance/delete/{_segment(name)}", "delete instance", instance=name)
        except InstanceNotFound:
            return False
        return True

    async def logout(self, name: str) -> None:
        await self._request("DELETE", f"/instance/logout/{_segment(name)}", "log out instance", instance=name)

    async def set_settings(self, name: str, settings: dict[str, Any]) -> None:
        await self._request("POST", f"/settings/set/{_segment(name)}", "apply settings",
                            json=settings, instance=name)

    async def subscribe_events(self, name: str) -> None:
        """Make sure the instance emits our events on its own namespace (needed for adopted instances)."""
        body = {"websocket": {"enabled": True, "events": list(INSTANCE_EVENTS_FOR_SET)}}
        await self._request("POST", f"/websocket/set/{_segment(name)}", "subscribe events",
                            json=body, instance=name, allow_empty=True)

    # -- transport ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        instance: str | None = None,
        allow_empty: bool = False,
        priority: int = FOLLOW_UP_PRIORITY,
    ) -> Any:
        async with self._slots.slot(priority):
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TimeoutException:
                self._count(endpoint, "timeout")
                raise EvolutionError("EvolutionUnreachable",
                                     f"{endpoint}: Evolution API at {self.base_url} did not answer in time",
                                     endpoint=endpoint) from None
            except httpx.TransportError as error:
                self._count(endpoint, "unreachable")
                raise EvolutionError("EvolutionUnreachable",
                                     f"{endpoint}: cannot reach Evolution API at {self.base_url} "
                                     f"({type(error).__name__})", endpoint=endpoint) from None
        return self._decode(response, endpoint, instance=instance, allow_empty=allow_empty)

    def _decode(self, response: httpx.Response, endpoint: str, *, instance: str | None,
                allow_empty: bool) -> Any:
        status = response.status_code
        try:
            body: Any = response.json() if response.content else None
        except ValueError:
            body = response.text
        if status >= 400:
            self._count(endpoint, str(status))
            detail = error_message_from_body(body) or response.reason_phrase
            message = f"{endpoint}: Evolution API answered HTTP {status}: {detail}"
            if status == 404 and instance is not None:
                raise InstanceNotFound(instance, message, endpoint=endpoint)
            raise EvolutionError(reason_for_status(status), message, status=status, endpoint=endpoint)
        if body is None and not allow_empty:
            self._count(endpoint, "bad_response")
            raise EvolutionError("EvolutionBadResponse", f"{endpoint}: Evolution API sent an empty answer",
                                 status=status, endpoint=endpoint)
        if isinstance(body, str) and not allow_empty:
            self._count(endpoint, "bad_response")
            raise EvolutionError("EvolutionBadResponse", f"{endpoint}: Evolution API sent a non-JSON answer",
                                 status=status, endpoint=endpoint)
        if isinstance(body, dict) and body.get("error") is True:
            # connect and restart catch their own failures and answer HTTP 200 {"error":true,...};
            # the usual cause is an instance that exists in the database but is not loaded yet.
            self._count(endpoint, "error_body")
            detail = error_message_from_body(body)
            if not detail or detail == "[object Object]":
                detail = "Evolution reported an error without details (the instance may not be loaded yet)"
            raise EvolutionError("EvolutionNotReady", f"{endpoint}: {detail}", status=status, endpoint=endpoint)
        self._count(endpoint, "ok")
        return body

    def _count(self, endpoint: str, outcome: str) -> None:
        key = (endpoint, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1


def _segment(name: str) -> str:
    return quote(name, safe="")


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _without_secrets(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in _SECRET_FIELDS}
