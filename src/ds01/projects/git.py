"""``git-init``: make a project a git repository, idempotently, with the real ``git``.

Runs as the current user in the CLI process (the repository is the user's own). Every step first
looks at what is there and only changes what is missing, so a second run reports "nothing to do".
Inputs (remote URL, name, e-mail) are checked before anything is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ds01.errors import Conflict, DS01Error, InvalidInput, NotFound
from ds01.projects.scaffold import MODEL_PATTERNS, write_file_atomic
from ds01.projects.workspace import current_user

FIRST_COMMIT_MESSAGE = "Initial project skeleton (ds01)"
BRANCH = "main"
LFS_PATTERNS: tuple[str, ...] = MODEL_PATTERNS
LARGE_FILE_BYTES = 50 * 1024 * 1024  # never put a file this big in the first commit (GitHub refuses 100 MB)
TIMEOUT_S = 60

_SCHEMES = ("https", "http", "ssh", "git", "file")
_URL_RE = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.+)\Z")
# scp-like: [user@]host:path (git's own rule: no '/' before the first ':')
_SCP_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+:(?!:)[^\s]+\Z")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._~%-]+(?::[^@/]*)?@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?/")


@dataclass
class GitReport:
    """``created``: what this run changed; ``kept``: what was already right; ``notes``: advice."""

    path: str
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commit: str | None = None
    lfs: str = "off"  # "on" | "unavailable" | "off"

    @property
    def changed(self) -> bool:
        return bool(self.created)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["changed"] = self.changed
        return d


class GitFailed(DS01Error):
    """A git command failed; the message carries its output."""


def validate_remote(url: str) -> str:
    """Accept the URL shapes git clones from, refuse anything that could run a command.

    Allowed: ``https://``, ``http://``, ``ssh://``, ``git://``, ``file://`` URLs with a host (or a
    path for ``file``), scp-like ``[user@]host:path`` and absolute local paths. Refused: options in
    disguise (a leading ``-``), remote helpers (``ext::sh -c …``, ``fd::``), whitespace and
    control characters."""
    bad = InvalidInput(
        f"invalid remote URL {url!r}",
        "use e.g. https://github.com/you/project.git or git@github.com:you/project.git",
    )
    if not isinstance(url, str) or not url or url.startswith("-") or len(url) > 2048:
        raise bad
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise bad
    m = _URL_RE.match(url)
    if m:
        scheme, rest = m.group("scheme").lower(), m.group("rest")
        if scheme not in _SCHEMES:
            raise bad
        if scheme == "file":
            if not rest.startswith("/"):
                raise bad
        else:
            host = _HOST_RE.match(rest)
            if not host or not rest[host.end():].strip("/"):
                raise bad
        return url
    if "::" in url or "://" in url:
        raise bad
    if url.startswith("/"):
        return url
    if _SCP_RE.match(url):
        return url
    raise bad


def _check_identity_value(what: str, value: str | None) -> None:
    if value is None:
        return
    if not value.strip() or value.startswith("-") or any(ord(c) < 32 or c in "<>" for c in value):
        raise InvalidInput(f"invalid git {what} {value!r}", f"give a plain {what}, e.g. --name 'Ada Lovelace'")
    if what == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
        raise InvalidInput(f"invalid e-mail address {value!r}", "e.g. --email ada@example.org")


class _Git:
    def __init__(self, path: Path):
        exe = shutil.which("git")
        if not exe:
            raise NotFound("git is not installed on this server", "ask an admin to install it (apt install git)")
        self.exe = exe
        self.path = path
        self.env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            cp = subprocess.run(
                [self.exe, "-C", str(self.path), *args],
                capture_output=True,
                text=True,
                env=self.env,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as e:
            raise GitFailed(f"'git {' '.join(args)}' did not finish in {TIMEOUT_S}s",
                            "is a commit hook or GPG signing waiting for input?") from e
        if check and cp.returncode != 0:
            out = (cp.stderr or cp.stdout).strip().splitlines()[-5:]
            raise GitFailed(f"'git {' '.join(args)}' failed: {' / '.join(out) or 'exit ' + str(cp.returncode)}",
                            "fix what git says above, then run git-init again (it only does what is missing)")
        return cp

    def get(self, *args: str) -> str | None:
        cp = self(*args, check=False)
        return cp.stdout.strip() if cp.returncode == 0 else None


def _is_own_repo(git: _Git, path: Path) -> bool:
    top = git.get("rev-parse", "--show-toplevel")
    if top is None:
        return False
    try:
        return Path(top).resolve() == path.resolve()
    except OSError:
        return False


def git_init(
    path: str | os.PathLike[str],
    remote: str | None = None,
    name: str | None = None,
    email: str | None = None,
    lfs: str = "auto",
    force: bool = False,
) -> GitReport:
    """Make ``path`` a repository with an identity, LFS for model files, a first commit, a remote.

    ``lfs``: "auto" (use git-lfs if installed, else note it), "on" (required), "off".
    ``force``: replace an ``origin`` that points elsewhere; add missing LFS patterns to an existing
    ``.gitattributes``. Nothing else is ever overwritten."""
    root = Path(path)
    if lfs not in ("auto", "on", "off"):
        raise InvalidInput(f"invalid lfs mode {lfs!r}", "use auto, on or off")
    if remote is not None:
        validate_remote(remote)
    _check_identity_value("name", name)
    _check_identity_value("email", email)
    if not root.is_dir():
        raise NotFound(f"{root} does not exist", "create it first (dir-create <project>)")
    lfs_exe = shutil.which("git-lfs") if lfs != "off" else None
    if lfs == "on" and not lfs_exe:
        raise NotFound("git-lfs is not installed on this server", "ask an admin to install git-lfs, or use --no-lfs")
    git = _Git(root)
    rep = GitReport(path=str(root))

    # 1. the repository
    if _is_own_repo(git, root):
        rep.kept.append("git repository")
    else:
        git("init", "-q", "-b", BRANCH)
        rep.created.append(f"git repository (branch {BRANCH})")

    # 2. identity: local settings only, and only when asked or when none is configured
    user, _ = current_user()
    fallback = {"name": user, "email": f"{user}@{socket.gethostname()}"}
    for key, given in (("name", name), ("email", email)):
        current = git.get("config", f"user.{key}")
        if given is not None:
            if current == given:
                rep.kept.append(f"user.{key} = {given}")
            else:
                git("config", "--local", f"user.{key}", given)
                rep.created.append(f"user.{key} = {given} (this repository only)")
        elif current:
            rep.kept.append(f"user.{key} = {current}")
        else:
            git("config", "--local", f"user.{key}", fallback[key])
            rep.created.append(f"user.{key} = {fallback[key]} (this repository only)")
            rep.notes.append(
                f"no git {key} was configured, so this repository uses {fallback[key]!r}; set yours once with "
                f"git config --global user.{key} '...' (or git-init --{key} ...)"
            )

    # 3. LFS for model files
    if lfs_exe:
        rep.lfs = "on"
        if git.get("config", "--local", "--get", "filter.lfs.clean"):
            rep.kept.append("git LFS")
        else:
            git("lfs", "install", "--local")
            rep.created.append("git LFS (this repository)")
        _ensure_gitattributes(root, rep, force)
    elif lfs == "auto":
        rep.lfs = "unavailable"
        rep.notes.append("git-lfs is not installed, so LFS was skipped (model files stay out of git via .gitignore)")

    # 4. the first commit, only if there is none yet
    if git.get("rev-parse", "--verify", "-q", "HEAD") is not None:
        rep.kept.append("existing commits (nothing committed)")
    else:
        files = git("ls-files", "-z", "--others", "--cached", "--exclude-standard").stdout.split("\0")
        big = [f for f in files if f and _size(root / f) > LARGE_FILE_BYTES]
        add = [f for f in files if f and f not in big]
        if add:
            git("add", "--pathspec-from-file=-", "--pathspec-file-nul", input="\0".join(add))
        for f in big:
            git("rm", "-q", "--cached", "--ignore-unmatch", "--", f)
            rep.notes.append(f"{f} ({_size(root / f) // 2**20} MiB) was left out of the first commit: "
                             "keep big files out of git (.gitignore) or in LFS")
        git("commit", "-q", "--allow-empty", "-m", FIRST_COMMIT_MESSAGE)
        rep.commit = git.get("rev-parse", "HEAD")
        rep.created.append(f"first commit {rep.commit[:8] if rep.commit else ''} \"{FIRST_COMMIT_MESSAGE}\"")
    if rep.commit is None:
        rep.commit = git.get("rev-parse", "HEAD")
        if any(c.startswith(".gitattributes") for c in rep.created):
            rep.notes.append("commit the new LFS settings: git add .gitattributes && git commit -m 'Track model files with LFS'")

    # 5. the remote
    if remote is not None:
        current = git.get("remote", "get-url", "origin")
        if current is None:
            git("remote", "add", "origin", remote)
            rep.created.append(f"remote origin = {remote}")
            rep.notes.append(f"push it with: git push -u origin {_branch(git)}")
        elif current == remote:
            rep.kept.append(f"remote origin = {remote}")
        elif force:
            git("remote", "set-url", "origin", remote)
            rep.created.append(f"remote origin = {remote} (was {current})")
        else:
            raise Conflict(
                f"remote 'origin' already points to {current}",
                "pass --force to replace it, or change it yourself: git remote set-url origin URL",
            )
    return rep


def _branch(git: _Git) -> str:
    return git.get("symbolic-ref", "--short", "HEAD") or BRANCH


def _size(p: Path) -> int:
    try:
        return p.lstat().st_size
    except OSError:
        return 0


def _attr_line(pattern: str) -> str:
    return f"{pattern} filter=lfs diff=lfs merge=lfs -text"


def _ensure_gitattributes(root: Path, rep: GitReport, force: bool) -> None:
    target = root / ".gitattributes"
    if target.is_symlink() or target.is_dir():
        rep.kept.append(".gitattributes")
        rep.notes.append(".gitattributes is not a plain file, so LFS patterns were not added")
        return
    if not target.exists():
        text = "# Model files are stored with git LFS (written by ds01 git-init).\n"
        text += "".join(_attr_line(p) + "\n" for p in LFS_PATTERNS)
        write_file_atomic(target, text, replace=False)
        rep.created.append(".gitattributes (LFS for " + " ".join(LFS_PATTERNS) + ")")
        return
    old = target.read_text(encoding="utf-8", errors="replace")
    present = {ln.split()[0] for ln in old.splitlines() if ln.strip() and not ln.lstrip().startswith("#")}
    missing = [p for p in LFS_PATTERNS if p not in present]
    if not missing:
        rep.kept.append(".gitattributes")
    elif force:
        sep = "" if old.endswith("\n") or not old else "\n"
        write_file_atomic(target, old + sep + "".join(_attr_line(p) + "\n" for p in missing), replace=True)
        rep.created.append(".gitattributes: LFS for " + " ".join(missing))
    else:
        rep.kept.append(".gitattributes")
        rep.notes.append(
            f".gitattributes exists and does not track {' '.join(missing)} with LFS; --force adds them"
        )
