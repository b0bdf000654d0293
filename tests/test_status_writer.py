"""Coalesced status writes: latest wins, no-op patches skipped, removed keys become nulls."""

import asyncio

from whatsapp_operator.kube import KubeError
from whatsapp_operator.status_writer import StatusWriter, merge_patch


def test_merge_patch_nulls_removed_keys_and_recurses():
    old = {"phase": "AwaitingScan", "qr": {"code": "a", "count": 1}, "connection": {"state": "connecting"}}
    new = {"phase": "Connected", "qr": None, "connection": {"state": "open", "number": "55"}}
    assert merge_patch(old, new) == {"phase": "Connected", "qr": None,
                                     "connection": {"state": "open", "number": "55"}}


def test_merge_patch_of_equal_documents_is_empty():
    doc = {"phase": "Connected", "conditions": [{"type": "Ready", "status": "True"}], "qr": None}
    assert merge_patch(doc, dict(doc)) == {}
    assert merge_patch({}, {"qr": None}) == {}


async def test_burst_of_submissions_is_coalesced_into_the_latest():
    patches = []
    first_patch_started = asyncio.Event()
    release = asyncio.Event()

    async def patch(namespace, name, body):
        patches.append(body)
        first_patch_started.set()
        await release.wait()

    writer = StatusWriter(patch, concurrency=2)
    writer.start()
    key = ("default", "shop")
    writer.track(key, {})
    writer.submit(key, {"phase": "Creating"})
    await asyncio.wait_for(first_patch_started.wait(), 5)
    for count in range(1, 50):
        writer.submit(key, {"phase": "AwaitingScan", "qr": {"count": count}})
    release.set()
    await writer.flush(key)
    await writer.stop()
    assert patches == [{"phase": "Creating"}, {"phase": "AwaitingScan", "qr": {"count": 49}}]
    assert writer.stats.patches == 2


async def test_unchanged_status_is_not_patched():
    patches = []

    async def patch(namespace, name, body):
        patches.append(body)

    writer = StatusWriter(patch)
    writer.start()
    key = ("default", "shop")
    writer.track(key, {"phase": "Connected"})
    writer.submit(key, {"phase": "Connected"})
    await writer.flush(key)
    await writer.stop()
    assert patches == []
    assert writer.stats.skipped == 1


async def test_failed_patch_is_retried_and_a_vanished_object_is_forgotten():
    calls = []

    async def patch(namespace, name, body):
        calls.append(name)
        if name == "flaky" and calls.count("flaky") == 1:
            raise KubeError(500, "apiserver hiccup")
        if name == "gone":
            raise KubeError(404, "not found")

    writer = StatusWriter(patch)
    writer._retry_template.initial = 0.001
    writer.start()
    for name in ("flaky", "gone"):
        writer.track(("default", name), {})
        writer.submit(("default", name), {"phase": "Creating"})
    await writer.flush(("default", "flaky"))
    await writer.flush(("default", "gone"))
    await writer.stop()
    assert calls.count("flaky") == 2 and writer.stats.failures == 1
    assert calls.count("gone") == 1
