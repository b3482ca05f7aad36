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
    refusal_error,
    scan,
    write_tar,
)
from ds01.errors import NotFound, PermissionDenied, PolicyDenied


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
