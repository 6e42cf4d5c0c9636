import io
import tarfile

import pytest

from astraforge.sandbox.snapshots import UnsafeSnapshot, check_snapshot


def tar_of(*entries: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return info


def test_a_normal_workspace_passes() -> None:
    data = tar_of(entry("./"), entry("./src/app.py"), entry("./link", tarfile.SYMTYPE, "src/app.py"))
    assert check_snapshot(data) == 3


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (entry("../escape.txt"), "leaves the workspace"),
        (entry("./a/../../escape.txt"), "leaves the workspace"),
        (entry("/etc/cron.d/evil"), "leaves the workspace"),
        (entry("./out", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
        (entry("./dir/out", tarfile.SYMTYPE, "../../etc"), "points outside"),
        (entry("./hard", tarfile.LNKTYPE, "../../etc/shadow"), "points outside"),
        (entry("./disk", tarfile.BLKTYPE), "device"),
        (entry("./pipe", tarfile.FIFOTYPE), "device or fifo"),
    ],
)
def test_hostile_entries_are_refused(bad: tarfile.TarInfo, reason: str) -> None:
    with pytest.raises(UnsafeSnapshot, match=reason):
        check_snapshot(tar_of(entry("./ok.txt"), bad))


def test_garbage_is_refused() -> None:
    with pytest.raises(UnsafeSnapshot, match="not a readable tar"):
        check_snapshot(b"definitely not a tarball")


@pytest.mark.parametrize(
    "chain",
    [
        # x/y -> .. is x's parent (the root): harmless alone; x/y/z is then the root's z, and z -> .. escapes
        [entry("./x", tarfile.DIRTYPE), entry("./x/y", tarfile.SYMTYPE, ".."), entry("./x/y/z", tarfile.SYMTYPE, "..")],
        # a file written through a link that resolves above the root
        [entry("./a", tarfile.SYMTYPE, "."), entry("./a/b", tarfile.SYMTYPE, "a/.."), entry("./a/b/../../evil")],
        # a later link redirects an earlier one: l -> d/x is inside until d becomes a link to ..
        [entry("./l", tarfile.SYMTYPE, "d/x"), entry("./d", tarfile.SYMTYPE, "..")],
        # loops never resolve
        [entry("./p", tarfile.SYMTYPE, "q"), entry("./q", tarfile.SYMTYPE, "p"), entry("./p/file")],
        # a hard link through a link chain
        [
            entry("./x", tarfile.DIRTYPE),
            entry("./x/up", tarfile.SYMTYPE, ".."),
            entry("./h", tarfile.LNKTYPE, "x/up/../etc"),
        ],
    ],
)
def test_link_chains_are_resolved_against_the_links_already_seen(chain: list[tarfile.TarInfo]) -> None:
    with pytest.raises(UnsafeSnapshot):
        check_snapshot(tar_of(entry("./ok.txt"), *chain))


def test_links_that_stay_inside_pass() -> None:
    data = tar_of(
        entry("./src", tarfile.DIRTYPE),
        entry("./src/app.py"),
        entry("./cur", tarfile.SYMTYPE, "src"),
        entry("./src/up", tarfile.SYMTYPE, ".."),
        entry("./cur/up/cur/app2.py"),
    )
    assert check_snapshot(data) == 5


def test_entries_past_the_limit_are_refused_while_streaming() -> None:
    data = tar_of(*(entry(f"./f{i}") for i in range(50)))
    assert check_snapshot(data, max_entries=50) == 50
    with pytest.raises(UnsafeSnapshot, match="more than 49 entries"):
        check_snapshot(data, max_entries=49)


def test_a_relative_link_to_a_sibling_directory_passes() -> None:
    """``a/b -> ../c`` stays inside: only hard links resolve their target from the root."""
    data = tar_of(entry("./a", tarfile.DIRTYPE), entry("./c", tarfile.DIRTYPE), entry("./a/b", tarfile.SYMTYPE, "../c"))
    assert check_snapshot(data) == 3


def test_entries_that_unpack_past_the_workspace_are_refused_at_their_header() -> None:
    data = tar_of(entry("./a", size=600), entry("./b", size=400))
    assert check_snapshot(data, max_bytes=1000) == 2
    with pytest.raises(UnsafeSnapshot, match=r"more than the workspace's 999 bytes \(at './b'\)"):
        check_snapshot(data, max_bytes=999)
