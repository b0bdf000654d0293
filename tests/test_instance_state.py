"""The event-to-status mapping, as plain function calls."""

from whatsapp_operator.engine.state import InstanceState, Phase, number_from_jid
from whatsapp_operator.evolution.connection import ConnectionState
from whatsapp_operator.evolution.events import ConnectionUpdated

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"


def condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status["conditions"] if c["type"] == kind), None)


def awaiting_scan() -> InstanceState:
    state = InstanceState("shop-123")
    state.created("id-1")
    state.qr_received("2@abc", "data:image/png;base64,AAA", None, T0)
    return state


def test_new_instance_is_pending_and_not_ready():
    status = InstanceState("shop-123").render_status(1, T0)
    assert status["phase"] == "Pending"
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "True"
    assert status["qr"] is None


def test_created_moves_to_creating_with_a_created_notice():
    state = InstanceState("shop-123")
    notices = state.created("id-1")
    assert state.phase is Phase.CREATING
    assert [n.reason for n in notices] == ["Created"]
    assert state.render_status(1, T0)["instanceId"] == "id-1"


def test_adopted_and_recreated_are_told_apart():
    assert InstanceState("a").created("x", adopted=True)[0].reason == "Adopted"
    recreated = InstanceState("a").created("x", recreated=True)[0]
    assert (recreated.reason, recreated.type) == ("Recreated", "Warning")


def test_first_qr_fills_status_and_announces_once():
    state = InstanceState("shop-123")
    state.created("id-1")
    first = state.qr_received("2@abc", "data:image/png;base64,AAA", None, T0)
    second = state.qr_received("2@def", "data:image/png;base64,BBB", None, T1)
    status = state.render_status(1, T1)
    assert [n.reason for n in first] == ["QRCodeIssued"]
    assert second == []  # a rotation is not a new Kubernetes Event
    assert status["phase"] == "AwaitingScan"
    assert status["qr"] == {"code": "2@def", "base64": "data:image/png;base64,BBB", "count": 2, "updatedAt": T1}


def test_same_qr_seen_twice_changes_nothing():
    state = awaiting_scan()
    before = state.render_status(1, T0)
    assert state.qr_received("2@abc", "data:image/png;base64,AAA", None, T1) == []
    assert state.render_status(1, T1) == before


def test_pairing_code_is_reported_with_the_qr():
    state = InstanceState("shop-123")
    state.qr_received("2@abc", "data:x", "WZ7K3M9Q", T0, count=1)
    status = state.render_status(1, T0)
    assert status["qr"]["pairingCode"] == "WZ7K3M9Q"
    assert "WZ7K3M9Q" in status["message"]


def test_open_connects_removes_qr_and_sets_ready():
    state = awaiting_scan()
    event = ConnectionUpdated("shop-123", "open", 200, "5511987654321:3@s.whatsapp.net", "ACME", "https://pic")
    notices = state.connection_updated(event, T1)
    status = state.render_status(1, T1)
    assert [n.reason for n in notices] == ["Connected"]
    assert status["phase"] == "Connected"
    assert status["qr"] is None
    assert status["connection"] == {
        "state": "open",
        "statusReason": 200,
        "number": "5511987654321",
        "profileName": "ACME",
        "profilePictureUrl": "https://pic",
        "since": T1,
    }
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Reconciling") is None


def test_open_without_profile_name_keeps_the_known_one():
    state = awaiting_scan()
    state.connection_updated(ConnectionUpdated("shop-123", "open", 200, "551100000000@s.whatsapp.net", "ACME"), T1)
    state.connection_updated(ConnectionUpdated("shop-123", "open", 200, "551100000000@s.whatsapp.net"), T2)
    assert state.profile_name == "ACME"


def test_open_event_carrying_close_is_trusted_as_close():
    state = awaiting_scan()
    state.connection_updated(ConnectionUpdated("shop-123", "close", 428), T1)
    assert state.phase is Phase.DISCONNECTED


def test_connecting_during_qr_cycle_keeps_the_qr():
    state = awaiting_scan()
    assert state.connection_updated(ConnectionUpdated("shop-123", "connecting", 200), T1) == []
    assert state.phase is Phase.AWAITING_SCAN and state.qr is not None


def test_connected_then_connecting_is_a_disconnection():
    state = awaiting_scan()
    state.connected("551100000000@s.whatsapp.net", "ACME", None, T1)
    notices = state.connection_updated(ConnectionUpdated("shop-123", "connecting", 200), T2)
    assert state.phase is Phase.CONNECTING and state.reason == "Reconnecting"
    assert [n.reason for n in notices] == ["Disconnected"]
    assert condition(state.render_status(1, T2), "Ready")["status"] == "False"


def test_close_401_is_logged_out():
    state = awaiting_scan()
    state.connected("551100000000@s.whatsapp.net", "ACME", None, T1)
    notices = state.connection_updated(ConnectionUpdated("shop-123", "close", 401), T2)
    assert state.phase is Phase.LOGGED_OUT
    assert [n.reason for n in notices] == ["LoggedOut"]
    assert state.render_status(1, T2)["connection"]["statusReason"] == 401


def test_logout_event_then_close_event_notifies_once():
    state = awaiting_scan()
    first = state.logged_out(T1)
    second = state.connection_updated(ConnectionUpdated("shop-123", "close", 401), T1)
    assert len(first) == 1 and second == []


def test_close_403_is_forbidden():
    state = awaiting_scan()
    state.connection_updated(ConnectionUpdated("shop-123", "close", 403), T1)
    assert (state.phase, state.reason) == (Phase.LOGGED_OUT, "Forbidden")


def test_qr_limit_then_refused_is_one_disconnection():
    state = awaiting_scan()
    first = state.qr_limit_reached("QR code limit reached, please login again", T1)
    second = state.connection_updated(ConnectionUpdated("shop-123", "refused", 428), T1)
    status = state.render_status(1, T1)
    assert (state.phase, state.reason) == (Phase.DISCONNECTED, "QRCodeLimitReached")
    assert len(first) == 1 and second == []
    assert status["qr"] is None
    assert "whatsapp-operator.io/reconnect" in status["message"]


def test_stale_cached_qr_after_logout_is_ignored():
    state = awaiting_scan()
    state.logged_out(T1)
    assert state.qr_received("2@abc", "data:image/png;base64,AAA", None, T2) == []
    assert state.phase is Phase.LOGGED_OUT


def test_sync_error_is_never_hidden_behind_ready():
    state = awaiting_scan()
    state.connected("551100000000@s.whatsapp.net", "ACME", None, T1)
    notices = state.sync_failed("EvolutionServerError", "read connection state: Evolution API answered HTTP 500: boom")
    status = state.render_status(1, T1)
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Synced")["status"] == "False"
    assert condition(status, "Synced")["reason"] == "EvolutionServerError"
    assert "HTTP 500" in condition(status, "Synced")["message"]
    assert len(notices) == 1
    assert state.sync_failed("EvolutionServerError", "again") == []  # no repeat while it persists
    assert [n.reason for n in state.sync_succeeded()] == ["Synced"]
    assert condition(state.render_status(1, T2), "Synced")["status"] == "True"


def test_unreachable_evolution_makes_ready_unknown():
    state = awaiting_scan()
    state.connected("551100000000@s.whatsapp.net", "ACME", None, T1)
    state.sync_failed("EvolutionUnreachable", "cannot reach Evolution API")
    status = state.render_status(1, T1)
    assert condition(status, "Ready")["status"] == "Unknown"
    assert status["phase"] == "Connected"
    assert "cannot reach Evolution API" in status["message"]


def test_failed_is_stalled():
    state = InstanceState("x")
    state.failed("InvalidSpec", "The spec cannot be used: bad name.")
    status = state.render_status(3, T0)
    assert condition(status, "Stalled")["status"] == "True"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["observedGeneration"] == 3


def test_render_is_stable_and_transition_times_move_only_on_change():
    state = awaiting_scan()
    first = state.render_status(1, T0)
    assert state.render_status(1, T1) == first
    state.connected("551100000000@s.whatsapp.net", None, None, T2)
    ready = condition(state.render_status(1, T2), "Ready")
    synced = condition(state.render_status(1, T2), "Synced")
    assert ready["lastTransitionTime"] == T2
    assert synced["lastTransitionTime"] == T0


def test_state_survives_a_round_trip_through_status():
    state = awaiting_scan()
    status = state.render_status(1, T0)
    restored = InstanceState.from_status("shop-123", status)
    assert restored.phase is Phase.AWAITING_SCAN
    assert restored.last_qr_code == "2@abc"
    assert restored.render_status(1, T1) == status


def test_number_from_jid():
    assert number_from_jid("5511987654321@s.whatsapp.net") == "5511987654321"
    assert number_from_jid("5511987654321:12@s.whatsapp.net") == "5511987654321"
    assert number_from_jid("123-456@g.us") is None


def test_stream_outage_is_independent_of_rest_success():
    state = awaiting_scan()
    assert [n.reason for n in state.stream_lost("Evolution API event stream is down")] == ["EvolutionUnreachable"]
    assert state.sync_succeeded() == []  # a REST success does not end a stream outage
    status = state.render_status(1, T1)
    assert condition(status, "Synced")["reason"] == "EvolutionUnreachable"
    assert condition(status, "Ready")["status"] == "Unknown"
    assert state.stream_lost("still down") == []
    assert [n.reason for n in state.stream_restored()] == ["EventStreamRestored"]
    assert condition(state.render_status(1, T2), "Synced")["status"] == "True"


def test_overdue_qr_is_reported_once_through_a_reconnect_loop():
    state = InstanceState("shop")
    state.created("id-1")
    state.connecting(T0)
    assert state.reason == "WaitingForQRCode"
    assert [n.reason for n in state.qr_overdue(90)] == ["QRCodeOverdue"]
    assert state.connection_updated(ConnectionUpdated("shop", "connecting", 200), T1) == []
    assert state.reason == "QRCodeOverdue" and state.qr_overdue(90) == []
    state.qr_received("2@x", "data:x", None, T2)
    assert state.phase is Phase.AWAITING_SCAN


def outage_status_of(state: InstanceState) -> dict:
    state.stream_lost("Evolution API event stream is down (connection lost); reconnecting")
    return state.render_status(1, T1)


def connected() -> InstanceState:
    state = awaiting_scan()
    state.connected("5511987654321@s.whatsapp.net", "ACME", None, T1)
    return state


def test_restart_after_an_outage_derives_the_message_again():
    for before in (awaiting_scan(), connected()):
        persisted = outage_status_of(before)
        assert "stream is down" in persisted["message"]
        assert condition(persisted, "Ready")["reason"] == "EvolutionUnreachable"
        restored = InstanceState.from_status("shop-123", persisted)  # the operator restarted; all is well
        status = restored.render_status(1, T2)
        assert "down" not in status["message"] and "last known phase" not in status["message"]
        assert condition(status, "Ready")["reason"] != "EvolutionUnreachable"
        assert condition(status, "Synced")["status"] == "True"
        assert status["phase"] == persisted["phase"]


def test_restart_keeps_the_phase_description_when_it_was_persisted():
    state = awaiting_scan()
    state.qr_limit_reached("QR code limit reached, please login again", T1)
    persisted = state.render_status(1, T1)
    restored = InstanceState.from_status("shop-123", persisted)
    assert (restored.reason, restored.message) == (state.reason, state.message)
    failed = InstanceState("shop-123")
    failed.failed("InvalidSpec", "The spec cannot be used: bad.")
    failed.sync_failed("EvolutionServerError", "boom")
    restored = InstanceState.from_status("shop-123", failed.render_status(1, T1))
    assert (restored.reason, restored.message) == ("InvalidSpec", "The spec cannot be used: bad.")


def test_restored_state_ignores_hostile_persisted_values():
    hostile = {
        "phase": "Connected",
        "message": 7,
        "qr": {"code": 5, "count": 2**70},
        "connection": {"statusReason": True, "number": ["x"]},
        "conditions": [None, {"type": 3}, {"type": "Ready", "status": "True", "reason": {}, "message": []}],
    }
    status = InstanceState.from_status("shop-123", hostile).render_status(1, T2)
    assert status["phase"] == "Connected" and status["message"] == "Connected to WhatsApp."
    assert "statusReason" not in status["connection"] and status["qr"] is None


def test_integers_beyond_int64_never_reach_the_status():
    state = awaiting_scan()
    state.qr_received("2@def", None, None, T1, count=2**64)
    state.connection_updated(ConnectionUpdated("shop-123", "connecting", 2**63), T1)
    status = state.render_status(2**63, T1)
    assert "statusReason" not in status["connection"]
    assert status["qr"]["count"] == 2  # the one before was 1: the out-of-range count is not believed
    assert "observedGeneration" not in status


def test_lone_surrogates_are_replaced_in_the_rendered_status():
    state = awaiting_scan()
    state.connected("5511987654321@s.whatsapp.net", "bad \ud800 name", None, T1)
    status = state.render_status(1, T1)
    status_json = __import__("json").dumps(status, ensure_ascii=False)
    status_json.encode("utf-8")  # raises on a lone surrogate
    assert status["connection"]["profileName"] == "bad \ufffd name"


def test_number_from_jid_takes_ascii_digits_only():
    assert number_from_jid("٥٥١١@s.whatsapp.net") is None


def test_the_readme_lists_exactly_the_condition_reasons():
    import re
    from pathlib import Path

    from whatsapp_operator.engine.state import Reason

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Condition reasons", 1)[1].split("\n##", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Za-z]+)`", section)) - {"Ready", "Reconciling", "Stalled", "Reason"}
    assert listed == {reason.value for reason in Reason}


def test_a_persisted_reason_outside_the_vocabulary_is_not_carried_on():
    persisted = connected().render_status(1, T1)
    ready = condition(persisted, "Ready")
    ready["reason"], ready["message"] = "SomethingOld", "Written by another version."
    status = InstanceState.from_status("shop-123", persisted).render_status(1, T2)
    assert condition(status, "Ready")["reason"] == "Connected"
    assert status["message"] == "Connected to WhatsApp as +5511987654321."


# -- Evolution servers that do not exist -----------------------------------------------------------


def test_missing_server_or_key_secret_is_synced_false_and_announced_once():
    for reason, text in (
        ("ServerNotFound", "EvolutionServer evo-a does not exist in namespace shop."),
        ("ServerKeyMissing", "Secret evo-a-key (key apikey) of EvolutionServer evo-a does not exist."),
    ):
        state = connected()
        notices = state.sync_failed(reason, text)
        assert [(n.type, n.reason, n.message) for n in notices] == [("Warning", reason, text)]
        assert state.sync_failed(reason, text) == []  # the same problem again: no second Event
        status = state.render_status(1, T2)
        assert condition(status, "Synced") | {"lastTransitionTime": None} == {
            "type": "Synced",
            "status": "False",
            "reason": reason,
            "message": text,
            "observedGeneration": 1,
            "lastTransitionTime": None,
        }
        assert condition(status, "Ready")["status"] == "True"  # the phase as last known, not Unknown
        assert status["message"] == f"{text} (last known phase: Connected)"
        restored = InstanceState.from_status("shop-123", status)
        assert restored.render_status(1, T2)["message"] == "Connected to WhatsApp as +5511987654321."
        assert [n.reason for n in state.sync_succeeded()] == ["Synced"]
        assert condition(state.render_status(1, T2), "Synced")["reason"] == "Synced"


# -- pause -----------------------------------------------------------------------------------------


def test_pause_reports_synced_false_paused_and_keeps_the_phase():
    state = connected()
    before = state.render_status(1, T1)
    assert "paused" not in before or before["paused"] is None
    notices = state.pause(T2)
    assert [(n.type, n.reason) for n in notices] == [("Normal", "Paused")]
    assert "whatsapp-operator.io/paused" in notices[0].message
    assert state.pause(T2) == []  # pausing twice: no second Event
    status = state.render_status(1, T2)
    assert status["paused"] is True and status["phase"] == "Connected"
    synced = condition(status, "Synced")
    assert (synced["status"], synced["reason"], synced["message"]) == (
        "False",
        "Paused",
        "Paused by the annotation whatsapp-operator.io/paused; no calls to Evolution API until it is removed.",
    )
    assert synced["lastTransitionTime"] == T2
    assert condition(status, "Ready")["status"] == "True"
    assert status["message"].startswith("Paused by the annotation whatsapp-operator.io/paused")
    resumed = state.resume(T2)
    assert [(n.type, n.reason) for n in resumed] == [("Normal", "Resumed")]
    assert state.resume(T2) == []
    status = state.render_status(1, T2)
    assert status["paused"] is None  # a merge patch removes it
    assert condition(status, "Synced")["reason"] == "Synced"
    assert status["message"] == "Connected to WhatsApp as +5511987654321."


def test_sync_results_while_paused_do_not_replace_the_paused_reason():
    state = connected()
    state.pause(T1)
    state.sync_failed("EvolutionServerError", "Evolution API answered 500.")
    assert condition(state.render_status(1, T1), "Synced")["reason"] == "Paused"
    state.sync_succeeded()
    assert condition(state.render_status(1, T1), "Synced")["reason"] == "Paused"
    state.sync_failed("ServerNotFound", "EvolutionServer evo-a does not exist.")
    state.resume(T2)
    assert condition(state.render_status(1, T2), "Synced")["reason"] == "ServerNotFound"  # still true after


def test_events_still_move_the_phase_while_paused():
    state = connected()
    state.pause(T1)
    notices = state.closed(428, T2)
    assert [n.reason for n in notices] == ["Disconnected"]
    status = state.render_status(1, T2)
    assert status["phase"] == "Disconnected" and status["paused"] is True
    assert condition(status, "Ready")["reason"] == "ConnectionClosed"
    assert condition(status, "Synced")["reason"] == "Paused"


def test_a_restart_stays_paused_and_the_outage_still_makes_ready_unknown():
    state = connected()
    state.pause(T1)
    state.stream_lost("The Evolution API event stream is down.")
    status = state.render_status(1, T2)
    assert condition(status, "Ready")["status"] == "Unknown"  # events may not be arriving
    assert condition(status, "Synced")["reason"] == "Paused"
    state.stream_restored()
    persisted = {key: value for key, value in state.render_status(1, T2).items() if value is not None}
    restored = InstanceState.from_status("shop-123", persisted)
    assert restored.paused and restored.pause(T2) == []  # no second Paused Event after a restart
    assert restored.render_status(1, T2) == state.render_status(1, T2)
    assert InstanceState.from_status("shop-123", {"phase": "Connected", "paused": "true"}).paused is False


# -- flapping --------------------------------------------------------------------------------------


def at(seconds: float) -> str:
    return f"2026-01-01T{int(seconds) // 3600:02d}:{int(seconds) % 3600 // 60:02d}:{int(seconds) % 60:02d}Z"


def flap(state: InstanceState, times: list[float]) -> list:
    """Alternate connected and closed (a connection change each) at the given seconds."""
    notices = []
    for second in times:
        if state.phase is Phase.CONNECTED:
            notices += state.connection_updated(ConnectionUpdated("shop-123", "connecting", 408), at(second))
        else:
            notices += state.connected("5511987654321@s.whatsapp.net", None, None, at(second))
    return notices


def test_more_than_six_changes_in_ten_minutes_is_flapping_reported_once():
    state = awaiting_scan()  # not yet Connected: the first connect is the first change
    notices = flap(state, [10 * i for i in range(6)])
    assert [n.reason for n in notices] == ["Connected", "Disconnected"] * 3  # 6 changes: not yet
    notices = flap(state, [60])
    assert [(n.type, n.reason, n.message) for n in notices] == [
        ("Warning", "Flapping", "Instance shop-123 changed connection 7 times in the last 10 minutes.")
    ]
    status = state.render_status(1, at(60))
    assert status["phase"] == "Connected"  # the phase stays accurate
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Flapping")
    assert ready["message"] == "Instance shop-123 changed connection 7 times in the last 10 minutes."
    assert flap(state, [70, 80, 90]) == []  # per-change Events are held back
    assert condition(state.render_status(1, at(90)), "Ready")["message"].endswith("10 times in the last 10 minutes.")
    assert state.render_status(1, at(90))["phase"] == "Connecting"
    # Changes at 0, 10, ..., 90 s. Quiet until only 6 are less than 10 minutes old: one Stable, then Events again.
    assert state.tick(at(600 + 20)) == []  # 7 changes in (20 s, 620 s]: still flapping
    stable = state.tick(at(600 + 30))
    assert [(n.type, n.reason) for n in stable] == [("Normal", "Stable")]
    assert "at most 6 times in the last 10 minutes" in stable[0].message
    assert state.tick(at(600 + 31)) == []
    ready = condition(state.render_status(1, at(631)), "Ready")
    assert ready["reason"] == "Reconnecting"
    assert [n.reason for n in flap(state, [700])] == ["Connected"]


def test_a_change_after_a_quiet_window_ends_the_episode_and_is_announced():
    state = awaiting_scan()
    assert [n.reason for n in flap(state, range(7))][-1] == "Flapping"
    notices = flap(state, [3600])
    assert [n.reason for n in notices] == ["Stable", "Disconnected"]


def test_a_renewal_that_ends_a_flapping_episode_is_not_silent():
    # Renewals in the QR cycle change nothing and may be skipped, except when an episode is on:
    # any observation may end it, and this one must.
    state = awaiting_scan()
    assert [n.reason for n in flap(state, range(8))][-1] == "Flapping"
    state.connection_updated(ConnectionUpdated("shop-123", "connecting", 428), at(9))
    state.qr_received("2@new", "data:image/png;base64,BBB", None, at(10))
    assert state.phase is Phase.AWAITING_SCAN and state.flapping is not None
    renewal = ConnectionUpdated("shop-123", ConnectionState.CONNECTING, 428)
    assert not state.is_silent_renewal(renewal)
    assert [n.reason for n in state.apply_event(renewal, at(3600))] == ["Stable"]
    assert state.is_silent_renewal(renewal)  # the episode is over: the next one is silent


def test_flapping_limits_are_configurable_for_all_states_or_one():
    original = (InstanceState.default_flapping_changes, InstanceState.default_flapping_window)
    try:
        InstanceState.configure_flapping(2, 60)
        state = awaiting_scan()
        assert [n.reason for n in flap(state, [0, 1, 2])] == ["Connected", "Disconnected", "Flapping"]
        assert "3 times in the last 1 minute." in state.flapping
        assert [n.reason for n in flap(state, [70])] == ["Stable", "Disconnected"]
        own = InstanceState("shop-123", flapping_changes=3, flapping_window=90)
        own.created("id-1")
        assert [n.reason for n in flap(own, [0, 1, 2, 3])][-1] == "Flapping"
        assert "4 times in the last 90 seconds." in own.flapping
        for bad in ((0, 60), (True, 60), (2.5, 60), (2, 0), (2, float("nan")), (2, float("inf"))):
            try:
                InstanceState.configure_flapping(*bad)
            except ValueError:
                continue
            raise AssertionError(f"{bad} accepted")
    finally:
        InstanceState.configure_flapping(*original)
    assert (InstanceState.default_flapping_changes, InstanceState.default_flapping_window) == (6, 600.0)


def test_logged_out_keeps_its_reason_on_ready_while_flapping():
    state = awaiting_scan()
    flap(state, range(7))
    notices = state.closed(401, at(8))
    assert [n.reason for n in notices] == ["LoggedOut"]  # a person must act: not held back
    status = state.render_status(1, at(8))
    assert condition(status, "Ready")["reason"] == "LoggedOut"
    assert status["message"].startswith("The WhatsApp session was logged out")


def test_flapping_is_not_restored_from_a_persisted_ready_reason():
    state = awaiting_scan()
    flap(state, range(7))
    persisted = state.render_status(1, at(7))
    assert condition(persisted, "Ready")["reason"] == "Flapping"
    restored = InstanceState.from_status("shop-123", persisted)
    status = restored.render_status(1, at(8))
    assert condition(status, "Ready")["reason"] == "Connected"
    assert status["message"] == "Connected to WhatsApp as +5511987654321."


def test_an_unreadable_time_counts_no_change():
    state = awaiting_scan()
    for _ in range(10):
        state.connected(None, None, None, "not a time")
        state.closed(408, "")
    assert state.flapping is None and state.connection_changes == []


def test_a_silent_socket_renewal_while_waiting_for_a_scan_changes_nothing_in_the_status():
    state = InstanceState("shop")
    state.created("id-1")
    state.qr_received("2@abc", "data:image/png;base64,AA==", None, T1)
    before = state.render_status(1, T1)
    renewal = ConnectionUpdated(instance="shop", state=ConnectionState.CONNECTING, status_reason=515)
    assert state.connection_updated(renewal, T2) == []
    assert state.render_status(1, T1) == before
