from astraforge.projections.fold import fold
from astraforge.schemas import Envelope
from astraforge.schemas.sandbox_spec import RequestedSandbox


def ev(type_: str, payload: dict, stream: str = "run-1", sandbox: str | None = None, at: int = 1_000) -> Envelope:
    return Envelope(type=type_, stream_id=stream, tenant_id="acme", actor="p", payload=payload, sandbox_id=sandbox,
                    occurred_at=at)  # fmt: skip


def test_run_lifecycle_upserts_the_run_keeping_title_once_set() -> None:
    requested = fold(ev("run.requested", {"state": "requested", "attempt": 1, "title": "Fix bug", "agent": "codex"}), 0)
    assert [u.table for u in requested] == ["runs"]
    assert requested[0].row["title"] == "Fix bug" and requested[0].row["state"] == "requested"
    running = fold(ev("run.running", {"state": "running", "attempt": 1, "title": None}, at=2_000), 5)[0]
    assert "title" not in running.update  # a later state change does not erase the title
    assert running.row["last_offset"] == 5 and "state" in running.update


def test_sandbox_lifecycle_needs_a_sandbox_id_and_skips_heartbeats() -> None:
    ready = fold(ev("sandbox.ready", {"state": "ready", "provider": "docker"}, sandbox="sb-1"), 3)
    assert ready[0].table == "sandboxes" and ready[0].row["sandbox_id"] == "sb-1"
    assert fold(ev("sandbox.ready", {"state": "ready"}), 3) == []
    assert fold(ev("sandbox.heartbeat.recorded", {"state": "ready"}, sandbox="sb-1"), 4) == []


def test_artifacts_from_artifact_and_snapshot_records() -> None:
    ref = {"artifact_id": "a1", "key": "k", "sha256": "x", "size": 3, "content_type": "text/plain", "name": None}
    (stored,) = fold(ev("artifact.stored", {"artifact": ref, "command_id": None}), 9)
    assert stored.row["artifact_id"] == "a1" and stored.row["offset"] == 9 and stored.update == ()
    (snap,) = fold(ev("snapshot.created", {"snapshot_id": "s", "artifact": ref | {"artifact_id": "a2"}}), 10)
    assert snap.row["artifact_id"] == "a2"


def test_other_records_change_no_read_model() -> None:
    assert fold(ev("chat.message", {"message_id": "m", "role": "user", "text": "hi"}), 1) == []


def test_execs_run_from_started_to_finished_and_sandboxes_keep_their_memory() -> None:
    (started,) = fold(ev("exec.started", {"command_id": "c1", "argv": ["true"]}, sandbox="sb-1"), 1)
    assert (started.table, started.row["state"], started.update) == ("execs", "running", ())
    (finished,) = fold(ev("exec.finished", {"command_id": "c1", "exit_code": 3}, sandbox="sb-1", at=2_000), 2)
    assert finished.row["state"] == "finished" and finished.row["exit_code"] == 3 and "state" in finished.update
    # what the sandbox may hold: its processes' memory plus its tmpfs caps (a tmpfs is memory)
    spec = RequestedSandbox("img", {"memory_mb": 300, "workspace_mb": 100}).record()
    asked = {"state": "requested", "details": {}, "spec": spec}
    assert fold(ev("sandbox.requested", asked, sandbox="sb-1"), 0)[0].row["memory_mb"] == 300 + 100 + 256 + 256
    v6 = {"state": "requested", "details": {"profile.memory_mb": "300", "profile.workspace_mb": "100"}}
    assert fold(ev("sandbox.requested", v6, sandbox="sb-1"), 0)[0].row["memory_mb"] == 300 + 100 + 256 + 256
    assert fold(ev("sandbox.requested", {"state": "requested"}, sandbox="sb-2"), 0)[0].row["memory_mb"] == 2048
    ready = fold(ev("sandbox.ready", {"state": "ready"}, sandbox="sb-1"), 3)[0]
    assert "memory_mb" not in ready.update  # later lifecycle records keep what the request said


def test_a_deleted_artifact_only_updates_an_existing_row_of_its_tenant() -> None:
    (deleted,) = fold(ev("artifact.deleted", {"artifact_id": "a1", "reason": "deleted"}, at=5_000), 11)
    assert (deleted.table, deleted.insert, deleted.update) == ("artifacts", False, ("deleted_at",))
    assert deleted.row == {"artifact_id": "a1", "tenant_id": "acme", "deleted_at": 5_000}


def test_only_the_types_folds_names_change_a_read_model() -> None:
    from fastavro import parse_schema
    from fastavro.utils import gen_data

    from astraforge.projections.fold import folds
    from astraforge.schemas import default_codec

    codec = default_codec()
    named: dict = {}
    parse_schema(codec.registry.current, named, _force=True)
    for record_type, info in codec.registry.types.items():
        payload = gen_data(named[info.payload], named) | {"state": "ready", "attempt": 1}
        if not folds(record_type):  # the projector writes these without decoding an Envelope
            assert fold(ev(record_type, payload, sandbox="sb-1"), 1) == []
    assert folds("sandbox.ready") and folds("run.running") and folds("exec.finished") and not folds("exec.output")
