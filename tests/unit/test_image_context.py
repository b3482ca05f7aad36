"""Reading a build context (the walk, the patterns, the tar): pure parts, run in-process."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ds01.images.context import (
    DEFAULT_EXCLUDES,
    ContextRefused,
    is_excluded,
    largest,
    may_reinclude_below,
    parse_patterns,
    scan,
    write_tar,
)
from ds01.errors import NotFound, PermissionDenied, PolicyDenied
from ds01.images.build_context import refusal_error


def pats(*lines: str):
    return parse_patterns(list(DEFAULT_EXCLUDES) + list(lines))


@pytest.mark.parametrize("rel,excluded", [
    ("Dockerfile", False),
    ("src/train.py", False),
    (".git", True),
    ("sub/.git/config", True),
    ("data", True),
    ("data/raw/x.csv", True),
    ("src/data/x.csv", False),  # only the top-level data/ is the scaffold's
    ("pkg/__pycache__/m.pyc", True),
    (".cache/huggingface/x", True),
])
def test_default_excludes(rel, excluded):
    assert is_excluded(rel, pats()) is excluded


def test_dockerignore_globs_and_negation():
    p = pats("*.log", "notebooks/**/*.ipynb", "!keep.log", "!data/small.csv")
    assert is_excluded("train.log", p)
    assert not is_excluded("keep.log", p)
    assert not is_excluded("sub/train.log", p)  # '*' does not cross '/'
    assert is_excluded("notebooks/a/b/x.ipynb", p)
    assert is_excluded("notebooks/x.ipynb", p)
    assert not is_excluded("data/small.csv", p)
    assert may_reinclude_below("data", p)
    assert not may_reinclude_below("models", p)


def test_comments_blank_and_leading_slash():
    p = parse_patterns(["# c", "", "/build", "  "])
    assert len(p) == 1 and is_excluded("build/x", p)


def _tree(tmp_path):
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM ds01/base:latest\n")
    (root / "src" / "a.py").write_text("print(1)\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 1000)
    return root


def test_scan_sorted_and_excluding(tmp_path):
    root = _tree(tmp_path)
    entries = scan(str(root.resolve()), pats())
    assert [e.rel for e in entries] == ["Dockerfile", "src", "src/a.py"]


def test_symlink_out_of_the_project_is_refused(tmp_path):
    root = _tree(tmp_path)
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "src" / "leak.txt")
    with pytest.raises(ContextRefused) as e:
        scan(str(root.resolve()), pats())
    assert e.value.code == "symlink" and e.value.info["path"] == "src/leak.txt"


def test_symlink_inside_kept_and_excluded_outside_ignored(tmp_path):
    root = _tree(tmp_path)
    os.symlink("a.py", root / "src" / "alias.py")
    os.symlink("/etc", root / "data" / "raw")  # shared dataset link: excluded with data/
    entries = {e.rel: e for e in scan(str(root.resolve()), pats())}
    assert entries["src/alias.py"].kind == "symlink" and entries["src/alias.py"].link == "a.py"
    assert "data/raw" not in entries


def test_unreadable_file_is_refused():
    """Scans run as the user; as root (CI) the scan runs in a child that dropped to 'nobody',
    since root can read everything."""
    import shutil
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="ds01-ctx-"))
    try:
        os.chmod(base, 0o755)
        root = _tree(base)
        for d in (root, root / "src", root / "data"):
            os.chmod(d, 0o755)
        secret = root / "src" / "secret.txt"
        secret.write_text("x")
        secret.chmod(0)
        if os.geteuid() != 0:
            with pytest.raises(ContextRefused) as e:
                scan(str(root.resolve()), pats())
            assert e.value.code == "unreadable"
            return
        pid = os.fork()
        if pid == 0:  # child: become nobody, scan, report through the exit status
            code = 3
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                scan(str(root.resolve()), pats())
                code = 1
            except ContextRefused as e:
                code = 0 if e.code == "unreadable" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "scan as an unprivileged user did not refuse the file"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_tar_content_and_digest_ignores_mtime(tmp_path):
    root = _tree(tmp_path)
    real = str(root.resolve())
    entries = scan(real, pats())
    buf1, buf2 = io.BytesIO(), io.BytesIO()
    d1 = write_tar(real, entries, buf1)
    os.utime(root / "src" / "a.py", (1, 1))
    d2 = write_tar(real, entries, buf2)
    assert d1 == d2 and d1.startswith("sha256:")
    with tarfile.open(fileobj=io.BytesIO(buf1.getvalue())) as t:
        assert t.getnames() == ["Dockerfile", "src", "src/a.py"]
        assert t.extractfile("src/a.py").read() == b"print(1)\n"
    (root / "src" / "a.py").write_text("print(2)\n")
    assert write_tar(real, scan(real, pats()), io.BytesIO()) != d1


def test_largest_groups_by_top_level():
    from ds01.images.context import Entry

    es = [Entry("a/x", "file", 10), Entry("a/y", "file", 5), Entry("b", "file", 12)]
    assert largest(es) == [("a", 15), ("b", 12)]


def test_refusals_map_to_errors():
    assert isinstance(refusal_error({"error": "symlink", "path": "x", "target": "/etc"}, "p"), PermissionDenied)
    assert isinstance(refusal_error({"error": "unreadable", "path": "x"}, "p"), PermissionDenied)
    assert isinstance(refusal_error({"error": "no_dockerfile", "path": "x"}, "p"), NotFound)
    e = refusal_error({"error": "too_big", "bytes": 10**9, "limit": 10**6, "largest": [["data2", 10**9]]}, "p")
    assert isinstance(e, PolicyDenied) and "data2" in (e.hint or "")


# --------------------------------------------------------------------------- stat fingerprint


def _fp(tmp_path, racy_s: float = 0.0, uid: int | None = None):
    from ds01.images.fingerprint import stat_fingerprint

    return stat_fingerprint(str(tmp_path), str(tmp_path), "proj", os.getuid() if uid is None else uid, racy_s)


@pytest.fixture
def proj(tmp_path):
    p = tmp_path / "proj"
    (p / "src").mkdir(parents=True)
    (p / "Dockerfile").write_text("FROM x\nCOPY . /app\n")
    (p / "src" / "a.py").write_text("print(1)\n")
    (p / "data").mkdir()
    (p / "data" / "big.csv").write_text("1,2\n")
    (p / "notes.md").write_text("ignored\n")
    (p / ".dockerignore").write_text("notes.md\n")
    return p


def test_fingerprint_is_stable_for_an_unchanged_context(tmp_path, proj):
    a = _fp(tmp_path)
    assert a is not None and a.startswith("sha256:") and _fp(tmp_path) == a


@pytest.mark.parametrize("change", [
    lambda p: (p / "src" / "a.py").write_text("print(2)\n"),           # content (size, mtime, ctime)
    lambda p: os.chmod(p / "src" / "a.py", 0o600),                     # permissions
    lambda p: (p / "src" / "b.py").write_text(""),                     # a new file
    lambda p: (p / "src" / "a.py").unlink(),                           # a removed file
    lambda p: os.rename(p / "src" / "a.py", p / "src" / "c.py"),       # a rename
    lambda p: os.symlink("a.py", p / "src" / "link"),                  # a new link
    lambda p: (p / ".dockerignore").write_text(""),                    # notes.md is now in the context
    lambda p: (p / "notes.md").write_text("ignored, changed\n"),       # superset: safe, if spurious
    lambda p: os.utime(p / "Dockerfile", ns=(0, 0)),                   # an mtime set back (ctime moves)
])
def test_any_change_to_what_is_sent_changes_the_fingerprint(tmp_path, proj, change):
    before = _fp(tmp_path)
    change(proj)
    assert _fp(tmp_path) != before


@pytest.mark.parametrize("change", [
    lambda p: (p / "data" / "big.csv").write_text("3,4,5\n"),          # excluded by default
    lambda p: os.mkfifo(p / "fifo"),                                   # never sent
])
def test_changes_outside_the_context_do_not_matter(tmp_path, proj, change):
    before = _fp(tmp_path)
    change(proj)
    assert _fp(tmp_path) == before


def test_fingerprint_refuses_to_vouch(tmp_path, proj):
    assert _fp(tmp_path, racy_s=3600) is None  # files changed "recently": timestamps too coarse to trust
    assert _fp(tmp_path, uid=os.getuid() + 4242) is None  # not the owner's project
    os.symlink(proj, tmp_path / "alias")
    from ds01.images.fingerprint import stat_fingerprint

    assert stat_fingerprint(str(proj / "src"), str(tmp_path), "alias", os.getuid(), 0.0) is None  # outside root
    assert stat_fingerprint(str(tmp_path), str(tmp_path), "missing", os.getuid(), 0.0) is None


def test_fingerprint_never_compiles_user_patterns_and_refuses_reinclusion(tmp_path, proj, monkeypatch):
    import ds01.images.fingerprint as c

    seen = []
    monkeypatch.setattr(c, "parse_patterns", lambda lines: seen.append(lines) or [])
    assert _fp(tmp_path) is not None and seen == []  # only the precompiled defaults are used
    (proj / ".dockerignore").write_text("*\n!data/keep.csv\n")  # re-includes from a default-excluded dir
    assert _fp(tmp_path) is None
    for text in ("foo\x0c!data/x\n", "\u3000!models/y\n", "a\xa0!logs/z"):  # however the reader splits lines
        (proj / ".dockerignore").write_text(text)
        assert _fp(tmp_path) is None, repr(text)


@pytest.mark.parametrize("make", [
    lambda p: os.symlink("notes.md", p / ".dockerignore"),
    lambda p: os.link(p / "notes.md", p / ".dockerignore"),  # a hard link: could be anything's
    lambda p: os.mkfifo(p / ".dockerignore"),
])
def test_fingerprint_opens_only_a_plain_own_dockerignore(tmp_path, proj, make):
    (proj / ".dockerignore").unlink()
    make(proj)
    assert _fp(tmp_path) is None


def test_fingerprint_is_bounded(tmp_path, proj, monkeypatch):
    import ds01.images.fingerprint as c

    monkeypatch.setattr(c, "FP_MAX_ENTRIES", 3)
    assert _fp(tmp_path) is None
    monkeypatch.setattr(c, "FP_MAX_ENTRIES", 1000)
    deep = proj / "src"
    for i in range(c.FP_MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    assert _fp(tmp_path) is None


def test_fingerprint_never_follows_links_out(tmp_path, proj):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, proj / "src" / "ext")
    before = _fp(tmp_path)
    (outside / "secret").write_text("changed")
    assert _fp(tmp_path) == before  # the link itself is recorded, not what it points to
