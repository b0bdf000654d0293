"""Coalesced status writes: latest wins, no-op patches skipped, removed keys become nulls."""

import asyncio

from whatsapp_operator.kube.client import KubeError
from whatsapp_operator.kube.status_writer import StatusWriter, merge_patch


def test_merge_patch_nulls_removed_keys_and_recurses():
    old = {"phase": "AwaitingScan", "qr": {"code": "a", "count": 1}, "connection": {"state": "connecting"}}
    new = {"phase": "Connected", "qr": None, "connection": {"state": "open", "number": "55"}}
    assert merge_patch(old, new) == {"phase": "Connected", "qr": None, "connection": {"state": "open", "number": "55"}}


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


async def test_a_status_refused_as_invalid_is_reported_and_not_retried():
    patches, rejections = [], []

    async def patch(namespace, name, body):
        patches.append(body)
        if "connection" in body:  # the apiserver refuses the rendered status
            raise KubeError(422, 'WhatsAppInstance "shop" is invalid: status.connection.statusReason: Invalid value')

    writer = StatusWriter(patch, on_rejected=lambda key, message: rejections.append((key, message)))
    writer.start()
    key = ("default", "shop")
    ready = {"type": "Ready", "status": "True", "reason": "Connected", "message": "Connected."}
    synced = {
        "type": "Synced",
        "status": "True",
        "reason": "Synced",
        "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    writer.track(key, {"phase": "AwaitingScan"})
    writer.submit(
        key,
        {
            "phase": "Connected",
            "connection": {"statusReason": 1},
            "observedGeneration": 3,
            "conditions": [ready, synced],
        },
    )
    await writer.flush(key)
    assert len(patches) == 2  # the refused one, then the fallback; no retry of the refused document
    fallback = patches[1]
    assert "connection" not in fallback and "phase" not in fallback
    synced_after = next(c for c in fallback["conditions"] if c["type"] == "Synced")
    assert synced_after["status"] == "False" and synced_after["reason"] == "StatusRejected"
    assert synced_after["lastTransitionTime"] == "2026-01-01T00:00:00Z" and synced_after["observedGeneration"] == 3
    assert "statusReason" in synced_after["message"] and fallback["message"] == synced_after["message"]
    assert [c["type"] for c in fallback["conditions"]] == ["Ready", "Synced"]
    assert rejections == [(key, synced_after["message"])]
    assert writer.stats.rejected == 1 and writer.stats.failures == 0
    writer.submit(key, {"phase": "Connected", "conditions": [ready, synced]})  # a valid one goes through
    await writer.flush(key)
    await writer.stop()
    assert patches[2] == {"phase": "Connected", "conditions": [ready, synced], "message": None}


async def test_a_worker_that_dies_mid_write_hands_its_key_over():
    from whatsapp_operator.engine.supervisor import Supervisor

    patches = []
    failed = []

    async def patch(namespace, name, body):
        if not failed:
            failed.append(body)
            raise RuntimeError("a bug nobody foresaw")
        patches.append(body)

    supervisor = Supervisor(initial_delay=0.01, max_delay=0.02)
    writer = StatusWriter(patch, concurrency=1, supervisor=supervisor)
    writer.start()
    key = ("default", "shop")
    writer.track(key, {})
    writer.submit(key, {"phase": "Creating"})
    await asyncio.wait_for(writer.flush(key), 5)
    await writer.stop()
    assert patches == [{"phase": "Creating"}]
    assert supervisor.restarts == {"status-writer": 1}


async def test_an_unchanged_status_with_no_write_under_way_is_settled_without_a_worker():
    # Evolution's silent socket renewals render the status already written: no worker wakes up for
    # them. The writer is not started here, so anything left to a worker would never be settled.
    patches = []

    async def patch(namespace, name, body):
        patches.append(body)

    writer = StatusWriter(patch)
    key = ("default", "shop")
    writer.track(key, {"phase": "AwaitingScan", "qr": {"count": 2}})
    writer.submit(key, {"phase": "AwaitingScan", "qr": {"count": 2}})
    await writer.flush(key, timeout=0.01)
    assert writer.stats.skipped == 1
    assert writer._queue.empty()
    writer.submit(key, {"phase": "AwaitingScan", "qr": {"count": 3}})
    assert not writer._queue.empty()  # a change still goes to a worker
    writer.start()
    await writer.flush(key)
    await writer.stop()
    assert patches == [{"qr": {"count": 3}}]


def held_writer() -> tuple[StatusWriter, list, asyncio.Event, asyncio.Event]:
    """A started writer whose patches are recorded and held until `release` is set; `started`
    is set by the first."""
    patches: list = []
    started, release = asyncio.Event(), asyncio.Event()

    async def patch(namespace, name, body):
        patches.append(body)
        started.set()
        await release.wait()

    writer = StatusWriter(patch)
    writer.start()
    return writer, patches, started, release


async def test_a_status_equal_to_the_written_one_while_a_write_is_under_way_still_reaches_the_worker():
    # The write under way sends the newer status; going back to what was written before must be
    # written too, so such a submission cannot be settled at once.
    writer, patches, started, release = held_writer()
    key = ("default", "shop")
    writer.track(key, {"phase": "Connected"})
    writer.submit(key, {"phase": "Connecting"})
    await asyncio.wait_for(started.wait(), 5)
    writer.submit(key, {"phase": "Connected"})
    release.set()
    await writer.flush(key)
    await writer.stop()
    assert patches == [{"phase": "Connecting"}, {"phase": "Connected"}]


async def test_the_difference_worked_out_on_submission_is_the_one_written(monkeypatch) -> None:
    # submit() works the patch out to know whether a worker is needed: the worker sends that one
    # instead of working it out again, unless something changed in between.
    from whatsapp_operator.kube import status_writer

    worked_out = []

    def counting_merge_patch(old, new):
        if "qr" in new:  # a whole status, not the recursion into it
            worked_out.append(new)
        return merge_patch(old, new)

    monkeypatch.setattr(status_writer, "merge_patch", counting_merge_patch)
    writer, patches, started, release = held_writer()
    key = ("default", "shop")
    writer.track(key, {"qr": {"count": 1}})
    writer.submit(key, {"qr": {"count": 2}})
    await asyncio.wait_for(started.wait(), 5)
    assert len(worked_out) == 1
    writer.submit(key, {"qr": {"count": 3}})  # while the first is under way: worked out by the worker
    release.set()
    await writer.flush(key)
    await writer.stop()
    assert patches == [{"qr": {"count": 2}}, {"qr": {"count": 3}}]
    assert len(worked_out) == 2
