"""Host-side git for runs: clone the source, pack its tree for the sandbox, diff what the sandbox
left against it, commit and push an approved patch.

The sandbox never sees a repository: it gets the base tree (``git archive``, no ``.git``, no remote,
no token) and everything it gives back — a workspace snapshot — is untrusted: it is checked
(``check_snapshot``) and unpacked with tarfile's ``data`` filter into a scratch directory, and git
reads it as a work tree with hooks, external diff drivers and textconv off, and with every ``.git``
the sandbox left in it removed first (``drop_git_dirs``). Every git call runs
without the user's or system's git config and never prompts.

A redone step gives the same result: the diff of the same snapshot is the same diff, and the merge
commit's author, committer and dates come from the approval record, so a redone commit is the same
commit (same sha) and a redone push changes nothing.
"""

import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from astraforge.errors import AstraForgeError
from astraforge.sandbox.snapshots import check_snapshot

GIT_TIMEOUT_S = 300
IDENTITY = ("AstraForge", "astraforge@localhost")
# the clone's own hooks never run; a push runs the *target* repository's hooks (as its server would)
PUSH = ["-c", "protocol.file.allow=always", "-c", "core.autocrlf=false", "-c", "core.symlinks=true"]
SAFE = ["-c", "core.hooksPath=/dev/null", *PUSH]
# left out of every captured diff (tests and tools write them; nobody merges them)
CACHES = ("__pycache__/", "*.py[cod]", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".hypothesis/")


class GitFailed(AstraForgeError, RuntimeError):
    """A git command failed (its stderr, shortened, is the message)."""


@dataclass(frozen=True)
class CapturedDiff:
    patch: bytes
    files: list[str]
    binary_files: list[str]
    additions: int
    deletions: int


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "HOME": "/nonexistent",
        "LC_ALL": "C",
    }
    return {**env, **(extra or {})}


def git(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    config: list[str] = SAFE,
) -> bytes:
    """Run git; its stdout, or ``GitFailed``."""
    try:
        done = subprocess.run(
            ["git", *config, *args],
            cwd=cwd,
            env=_env(env),
            input=stdin,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise GitFailed(f"git {args[0]} timed out") from e
    if done.returncode:
        raise GitFailed(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return done.stdout


def source_url(repository: str) -> str:
    """A local path as a file:// URL (so a shallow clone works); URLs as they are."""
    return f"file://{Path(repository).resolve()}" if repository.startswith("/") else repository


def clone(repository: str, branch: str, dest: Path, auth_env: dict[str, str] | None = None) -> str:
    """A fresh shallow clone of ``branch`` at ``dest`` (replacing whatever was there); its head sha.
    ``auth_env``: the provider's credentials for git, as environment (``vcs.git_header_env``)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(
        "clone",
        "--quiet",
        "--depth",
        "1",
        "--single-branch",
        "--branch",
        branch,
        "--",
        source_url(repository),
        str(dest),
        env=auth_env,
    )
    return git("rev-parse", "HEAD", cwd=dest).decode().strip()


def archive(repo: Path, into: BinaryIO) -> None:
    """The head's tree as a tar (no ``.git``): what the sandbox's /workspace starts from."""
    into.write(git("archive", "--format=tar", "HEAD", cwd=repo))
    into.flush()


def unpack(snapshot: BinaryIO, dest: Path, max_entries: int, max_bytes: int) -> None:
    """Unpack an untrusted workspace snapshot (a .tgz) into an empty ``dest``."""
    check_snapshot(snapshot, max_entries, max_bytes)
    snapshot.seek(0)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=snapshot, mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def _synced_mark(tree: Path) -> Path:
    """Beside the tree (never in it: the tree is diffed): present only while ``tree`` holds a whole
    snapshot and the index beside it describes the current clone."""
    return tree.with_name(f"{tree.name}.synced")


def forget_tree(tree: Path, index: Path) -> None:
    """The kept tree and index are no longer trusted (a new clone, a crash mid-sync): the next
    ``refresh`` unpacks the whole snapshot and the next ``diff`` rebuilds the index."""
    _synced_mark(tree).unlink(missing_ok=True)
    index.unlink(missing_ok=True)


def refresh(snapshot: BinaryIO, tree: Path, index: Path, max_entries: int, max_bytes: int) -> int:
    """Make ``tree`` hold exactly the (untrusted) workspace snapshot; the number of entries written.

    A tree left by the previous step of the same attempt is brought up to date in place: an entry
    whose type, content, exec bit or link target is unchanged is not touched, so its stat data stays
    what git's index recorded and ``diff`` hashes only what changed (each step used to unpack every
    file and hash it again). Without a whole earlier tree (first step, a crash mid-sync, a new
    clone) it is unpacked from scratch and the index dropped. Checked like ``unpack``."""
    mark = _synced_mark(tree)
    if not mark.exists() or not tree.is_dir():
        forget_tree(tree, index)
        unpack(snapshot, tree, max_entries, max_bytes)
        snapshot.seek(0)
        with tarfile.open(fileobj=snapshot, mode="r:gz") as tar:
            written = sum(1 for _ in tar)
        mark.touch()
        return written
    check_snapshot(snapshot, max_entries, max_bytes)
    snapshot.seek(0)
    mark.unlink()  # half-synced until the end: a crash in between makes the next step start over
    written, wanted = 0, {"."}
    with tarfile.open(fileobj=snapshot, mode="r:gz") as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            wanted.update(_with_parents(name))  # a tar need not list a file's directories
            if name == ".":
                continue
            if not _unchanged(tar, member, tree / name):
                _remove(tree / name, keep_dir=member.isdir())
                tar.extract(member, tree, filter="data")
                if member.isfile():  # a rewritten file's times must differ from what the index holds
                    os.utime(tree / name)
                written += 1
    for root, dirs, files in os.walk(tree, topdown=False):
        for entry in (*files, *dirs):
            path = Path(root) / entry
            if os.path.normpath(path.relative_to(tree)) not in wanted:
                _remove(path, keep_dir=False)
    mark.touch()
    return written


def _with_parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _unchanged(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bool:
    """Whether ``path`` already is what ``member`` would extract (as far as git can tell)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if member.isdir():
        return stat.S_ISDIR(st.st_mode)
    if member.issym():
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == member.linkname
    if not member.isfile() or not stat.S_ISREG(st.st_mode) or st.st_size != member.size:
        return False
    if bool(st.st_mode & 0o100) != bool(member.mode & 0o100):
        return False
    source = tar.extractfile(member)
    with source, open(path, "rb") as kept:
        while True:
            a, b = source.read(1 << 20), kept.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True


def _remove(path: Path, keep_dir: bool) -> None:
    """Whatever is at ``path`` (a link itself, never what it points to); a directory stays if ``keep_dir``."""
    if path.is_dir() and not path.is_symlink():
        if not keep_dir:
            shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def drop_git_dirs(tree: Path) -> list[str]:
    """Remove every entry named ``.git`` (directory, file or link) from an unpacked workspace; their
    paths, tree-relative, sorted.

    Why: ``git add`` takes a directory holding a ``.git`` for a nested repository and records a
    gitlink (``Subproject commit <sha>``) instead of its files. A sandbox could thus put a commit the
    reviewer never sees into the merge request, or, with a ``.git`` file saying ``gitdir: <host
    path>``, make the host's git open a host repository and copy its HEAD sha into the diff. No
    ``.git`` is ever part of a commit, so dropping them changes nothing a reviewer should see."""
    dropped, todo = [], [tree]
    while todo:  # a stack, not recursion: a workspace can nest deeper than Python recurses
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.name == ".git":
                    dropped.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    todo.append(Path(entry.path))
    for path in dropped:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return sorted(str(p.relative_to(tree)) for p in dropped)


def diff(repo: Path, tree: Path, index: Path) -> CapturedDiff:
    """``tree`` (an unpacked workspace) against the clone's head: new, changed, deleted and binary files.
    ``index`` is git's index for it, kept between steps (``refresh`` drops it when the tree is new):
    git hashes again only the files whose stat data changed.

    Like ``git add --all`` in a checkout, a new file the repository ignores (``.gitignore``) is left out,
    and so are the caches an agent's test runs leave behind (``CACHES``): what the diff shows is what
    would merge. Tracked files always count, ignored or not; writes outside the run's writable paths,
    ignored ones included, were already refused inside the sandbox (Landlock)."""
    drop_git_dirs(tree)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("".join(f"{pattern}\n" for pattern in CACHES))
    env = {"GIT_INDEX_FILE": str(index), "GIT_DIR": str(repo / ".git"), "GIT_WORK_TREE": str(tree)}
    if not index.exists():  # start from the head's entries: a tracked file the repository ignores stays tracked
        git("read-tree", "HEAD", cwd=tree, env=env)
    git("add", "--all", "--", ".", cwd=tree, env=env)
    base = ["diff", "--cached", "--no-ext-diff", "--no-textconv", "--no-color", "--no-renames", "HEAD"]
    patch = git(*base[:-1], "--binary", "HEAD", cwd=tree, env=env)
    files, binary, additions, deletions = [], [], 0, 0
    for line in git(*base[:-1], "--numstat", "-z", "HEAD", cwd=tree, env=env).split(b"\0"):
        if not line:
            continue
        added, removed, name = line.decode(errors="replace").split("\t", 2)
        files.append(name)
        if added == "-":
            binary.append(name)
        else:
            additions, deletions = additions + int(added), deletions + int(removed)
    return CapturedDiff(patch, files, binary, additions, deletions)


def commit_and_push(
    repository: str,
    branch: str,
    target: str,
    patch: bytes,
    message: str,
    when_s: int,
    dest: Path,
    auth_env: dict[str, str] | None = None,
) -> str:
    """Apply ``patch`` on a fresh clone of ``branch``, commit it deterministically, push it as
    ``target`` to the repository; the commit's sha."""
    clone(repository, branch, dest, auth_env)
    if patch:
        git("apply", "--index", "--binary", "--whitespace=nowarn", "-", cwd=dest, stdin=patch)
    name, email = IDENTITY
    date = f"@{when_s} +0000"
    env = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": date,
    }
    git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", message, cwd=dest, env=env)
    sha = git("rev-parse", "HEAD", cwd=dest).decode().strip()
    refspec = f"{sha}:refs/heads/{target}"
    git("push", "--quiet", "--force", "--", source_url(repository), refspec, cwd=dest, env=auth_env, config=PUSH)
    return sha
