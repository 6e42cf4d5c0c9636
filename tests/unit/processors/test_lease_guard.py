"""The lease guard's judgement of what a command left at a leased path, with plain values."""

from astraforge.processors.sandboxes.lease_guard import Violation, _found, _same

FILE = {"kind": "file", "sha256": "a" * 64, "size": 3, "mode": 0o644}


def test_a_file_is_the_same_only_with_its_kind_bytes_and_mode() -> None:
    assert _same(FILE, dict(FILE))
    assert not _same(FILE, {**FILE, "sha256": "b" * 64})
    assert not _same(FILE, {**FILE, "mode": 0o755})  # chmod is a change: the holder's mode is put back
    assert not _same(FILE, {"kind": "symlink", "sha256": "a" * 64, "size": 3})  # a link to the same bytes


def test_what_was_found_names_the_change() -> None:
    missing = {"kind": "missing", "sha256": "", "size": 0}
    assert _found(FILE, missing) == "deleted"
    assert _found(missing, FILE) == "created"
    assert _found(FILE, {**FILE, "sha256": "b" * 64}) == "changed"
    assert _found(FILE, {"kind": "symlink", "sha256": "c" * 64, "size": 9}) == "symlink"
    assert _found(FILE, {"kind": "other", "sha256": "", "size": 0}) == "other"


def test_the_message_names_file_holder_and_outcome() -> None:
    undone = Violation("/workspace/a.py", "conversation:cv-1", "symlink", True).message()
    assert undone == (
        "/workspace/a.py is leased by conversation:cv-1; this command replaced it with a symlink and the change"
        " was undone"
    )
    kept = Violation("/workspace/a.py", "tenant:t/a", "other", False).message()
    assert kept.endswith("replaced it with something not a file and it could not be put back")
