"""Project files a requirements file names, so the build can include them.

A ``requirements.txt`` may name files of the project: a wheel (``./wheels/x.whl``), a source
tree (``./pkg``, ``-e .``), other requirement or constraint files (``-r other.txt``, ``-c
constraints.txt``) or a local find-links directory (``-f ./wheels``). A build only sees what the
Dockerfile copies, so the generated Dockerfile copies these paths too
(:func:`ds01.images.dockerfile.render_requirements_block`), to the same place under
``/workspace``, and pip runs there: every relative path means what it means in the project.

Pure: the caller passes ``read(path) -> text | None`` and ``kind(path) -> "file" | "dir" |
None`` (the CLI's run as the user). Paths are relative to the project root; ``"."`` stands for
the whole project. A path outside the project or one that does not exist is an InvalidInput
naming it and the line that names it (before any build).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from ds01.errors import InvalidInput

# options whose value is a project path: requirement / constraint files (relative to the file
# that names them, as pip reads them), editable sources and find-links directories (relative to
# the directory pip runs in: the project root)
_FILE_OPTS = {"-r": "req", "--requirement": "req", "-c": "req", "--constraint": "req"}
_PATH_OPTS = {"-e": "path", "--editable": "path", "-f": "links", "--find-links": "links"}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[A-Za-z][A-Za-z0-9+.-]*\+")
_ARCHIVE = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")
MAX_FILES = 100  # -r chains deeper or wider than this are refused (a loop, or a mistake)


def _lines(text: str) -> list[str]:
    """Logical lines: ``\\`` continuations joined, comments (``#`` at the start or after
    whitespace) dropped, blank lines skipped."""
    out, cur = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            cur += raw[:-1]
            continue
        line = re.sub(r"(^|\s)#.*$", "", cur + raw).strip()
        cur = ""
        if line:
            out.append(line)
    if cur.strip():
        out.append(re.sub(r"(^|\s)#.*$", "", cur).strip())
    return out


_LONG_OPT_RE = re.compile(r"^(--requirement|--constraint|--editable|--find-links)(?:\s*=\s*|\s+)(\S.*)$")
_SHORT_OPT_RE = re.compile(r"^(-[rcef])\s*(\S.*)$")


def _split_opt(line: str) -> tuple[str, str] | None:
    """``-r x``, ``-rx``, ``--requirement=x``, ``--requirement x`` → (option, value)."""
    m = _LONG_OPT_RE.match(line) or _SHORT_OPT_RE.match(line)
    return (m.group(1), m.group(2).strip()) if m else None


def _is_path(spec: str) -> bool:
    """A requirement line that is a local path rather than a name (pip's own rule, roughly):
    it starts with ``.`` or ``/``, contains a ``/``, or is an archive file name."""
    if _URL_RE.match(spec) or " @ " in spec or "@" in spec.split("/")[0]:
        return False
    base = spec.split(";", 1)[0].strip()
    return base.startswith((".", "/", "~")) or "/" in base or base.lower().endswith(_ARCHIVE)


def _strip_extras(spec: str) -> str:
    base = spec.split(";", 1)[0].strip()
    base = re.sub(r"\[[^\]]*\]$", "", base)  # ./pkg[extra]
    return base


def _inside(path: str, where: str, line: str, src: str) -> str:
    """``path`` (as written, relative to ``where``) normalised relative to the project root."""
    if path.startswith(("/", "~")):
        raise InvalidInput(f"{src}: {line!r} names {path}, which is outside the project",
                           "put the file into the project folder and name it by a relative path "
                           "(e.g. ./wheels/x.whl)")
    norm = posixpath.normpath(posixpath.join(where, path))
    if norm == ".." or norm.startswith("../"):
        raise InvalidInput(f"{src}: {line!r} names {path}, which is outside the project",
                           "the build only sees the project folder: move the file into it")
    return norm


def requirement_inputs(req_file: str, read: Callable[[str], str | None],
                       kind: Callable[[str], str | None]) -> list[str]:
    """The project paths ``req_file`` (relative to the project root) makes pip read, itself
    included, sorted; ``"."`` when it installs the project itself. Raises InvalidInput for a
    missing file or one outside the project."""
    found: dict[str, None] = {}
    todo = [(req_file, req_file)]
    seen: set[str] = set()
    while todo:
        path, src = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if len(seen) > MAX_FILES:
            raise InvalidInput(f"{req_file} includes more than {MAX_FILES} requirement files (-r/-c)",
                               "check the -r and -c lines for a loop")
        text = read(path)
        if text is None:
            raise InvalidInput(f"{src} names {path}, which does not exist in the project",
                               f"create {path}, or remove the line that names it")
        found[path] = None
        where = posixpath.dirname(path)
        for line in _lines(text):
            opt = _split_opt(line)
            if opt is not None:
                name, value = opt
                if not value or _URL_RE.match(value):
                    continue  # a URL (git+https://…, https://…): nothing of the project
                if _FILE_OPTS.get(name) == "req":
                    todo.append((_inside(value, where, line, path), path))
                    continue
                target = _inside(_strip_extras(value), "", line, path)
            elif line.startswith("-"):
                continue  # --index-url, --pre, --hash … name no project file
            elif _is_path(line):
                target = _inside(_strip_extras(line), "", line, path)
            else:
                continue  # a requirement by name (numpy==2.0)
            if kind(target) is None:
                raise InvalidInput(f"{path}: {line!r} names {target}, which does not exist in the project",
                                   f"add {target} to the project (the build copies it), or remove the line")
            found[target] = None
    if "." in found:
        return ["."] + sorted(p for p in found if p != ".")
    return sorted(found)


def is_local_requirement(spec: str) -> bool:
    """``image-update --add ./wheels/x.whl``: a project path, which goes into requirements.txt
    (whose files the build copies) instead of the Dockerfile's package list."""
    s = spec.strip()
    return bool(s) and not s.startswith("-") and _is_path(s)
