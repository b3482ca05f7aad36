"""The Dockerfile security checker: a user's Dockerfile, parsed exactly as the engine parses it
(``ds01.images.dockerfile_text``), and refused where DS01 cannot vouch for it; what passes is
rewritten (:meth:`CheckedDockerfile.render`) and only that text is ever sent to the engine.

The images it names are collected (:class:`ImageRefs`) for the image policy, which the image
service applies (``images.allowed``, per-user ownership)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ds01 import labels as label_keys
from ds01.errors import InvalidInput, PolicyDenied
from ds01.images.catalog import valid_image_ref
from ds01.images.dockerfile_text import MAX_LINE, parse_instructions, parse_words, shorten, strip_continuation


@dataclass
class ImageRefs:
    external: list[str] = field(default_factory=list)  # images pulled in (FROM / COPY --from)
    final_base: str | None = None  # the external image the last stage starts from


# The classic builder's instructions, and the builder flags each may carry (anything else is
# refused: a flag DS01 does not know is a flag it did not check).
INSTRUCTIONS = frozenset({"from", "run", "cmd", "label", "maintainer", "expose", "env", "add", "copy",
                          "entrypoint", "volume", "user", "workdir", "arg", "onbuild", "stopsignal",
                          "healthcheck", "shell"})
FLAGS = {"from": {"platform"}, "copy": {"from", "chown", "chmod"}, "add": {"chown", "chmod"},
         "healthcheck": {"interval", "timeout", "start-period", "retries", "start-interval"}}
_FLAG_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+,=${}-]*\Z")
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_.-]*\Z")
# What DS01's Dockerfile generator wrote before ds01.* labels were reserved (now org.ds01.*);
# such a line is left out of the build instead of refusing the user's existing file.
LEGACY_LABEL = re.compile(r'^LABEL ds01\.project="[A-Za-z0-9_.+= -]*"(?: ds01\.framework="[A-Za-z0-9_.+= -]*")?\Z')
_HEREDOC = re.compile(r"^\d*<<-?[^<]*\Z")
# A bare image id or id prefix ("FROM 3f2a", "FROM sha256:3f2a…"): the engine resolves it by id,
# which would name any image on the host, built by anyone, by guessing a few hex digits.
ID_LIKE = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}\Z")
# Docker's tokenWhitespace, and characters no Dockerfile needs that parsers disagree about.
_WS = re.compile(r"[ \t]+")


def _odd_char(line: str) -> str | None:
    for c in line:
        if c == "\t" or c == " ":
            continue
        if ord(c) < 0x20 or c == "\x7f" or c.isspace() or c in "\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" \
                or "\u2000" <= c <= "\u200b" or c == "\ufeff":
            return c
    return None


def _unquote(word: str) -> str:
    return word.replace('"', "").replace("'", "").replace("\\", "")


@dataclass
class CheckedDockerfile:
    """A user Dockerfile that passed :func:`check_dockerfile`: its instructions, the images it
    uses, and :meth:`render`, the text DS01 sends to the engine."""

    instructions: list[Any]
    refs: ImageRefs
    from_bases: list[tuple[int, str | None]] = field(default_factory=list)  # (instruction index, external base)
    dropped: set[int] = field(default_factory=set)  # instructions left out of the build

    def render(self, after: dict[int, list[str]] | None = None) -> str:
        """One instruction per line, continuations joined, comments dropped, builder flags
        written out as ``--name=value`` (so the engine's reading of them cannot differ from the
        one checked); ``after[i]``: daemon lines to insert after instruction ``i``."""
        out = []
        for i, ins in enumerate(self.instructions):
            if i in self.dropped:
                continue
            head = [ins.keyword.upper()] + [f"--{n.lower()}={v}" for n, v in ins.flags]
            out.append(" ".join(head + ([ins.rest] if ins.rest else [])))
            out.extend((after or {}).get(i, []))
        return "\n".join(out) + "\n"


def check_dockerfile(text: str) -> CheckedDockerfile:
    """Parse a user Dockerfile exactly as the engine does and refuse what DS01 cannot vouch for:
    unknown instructions or builder flags, ``ONBUILD``, ``LABEL ds01.*``, heredocs, ``ADD`` from a
    URL, variables in image names, image ids, odd whitespace/control characters. Raises
    InvalidInput/PolicyDenied naming the line."""
    instructions = parse_instructions(text)
    refs = ImageRefs()
    stages: dict[str, str | None] = {}
    bases: list[str | None] = []
    from_bases: list[tuple[int, str | None]] = []
    dropped: set[int] = set()

    for idx, ins in enumerate(instructions):
        where = f"line {ins.lineno} ({shorten(ins.line, 60)})"
        kw = ins.keyword
        odd = _odd_char(ins.line)
        if odd is not None:
            raise InvalidInput(f"the Dockerfile has a control or unusual whitespace character (U+{ord(odd):04X}) "
                               f"at {where}", "use plain spaces and tabs")
        if len(ins.line.encode("utf-8")) > MAX_LINE:
            raise InvalidInput(f"the instruction at line {ins.lineno} is longer than {MAX_LINE} bytes once its "
                               "continuation lines are joined", "split it into several instructions")
        if strip_continuation(ins.line, "\\")[1]:
            raise InvalidInput(f"the Dockerfile ends inside a line continuation at {where}")
        if kw not in INSTRUCTIONS:
            raise InvalidInput(f"unknown instruction {kw.upper()!r} at {where}")
        if kw == "onbuild":
            raise PolicyDenied(f"ONBUILD is not allowed in DS01 Dockerfiles ({where})",
                               "write the instructions out in the Dockerfile that needs them")
        seen: set[str] = set()
        for name, value in ins.flags:
            if name.lower() not in FLAGS.get(kw, ()):
                raise InvalidInput(f"the flag --{name} is not supported on {kw.upper()} ({where})")
            if name.lower() in seen:
                raise InvalidInput(f"the flag --{name} is given twice ({where})")
            seen.add(name.lower())
            if value is None or not _FLAG_VALUE.match(value):
                raise InvalidInput(f"--{name} needs a plain value (letters, digits, . : / @ + , = - $ {{ }}) "
                                   f"({where})")
        if ins.rest.startswith("--"):
            raise InvalidInput(f"an argument starting with '--' after the flags is not supported ({where})")
        if kw in ("run", "copy", "add") and any(_HEREDOC.match(w) for w in _WS.split(ins.rest)):
            raise InvalidInput(f"heredocs (<<EOF) are not supported by DS01's builder ({where})",
                               "put the script in a file in the project and COPY it, or use RUN with && and \\")
        if kw == "label":
            if LEGACY_LABEL.match(ins.line):
                dropped.add(idx)  # the generator's old informational line: left out of the build
                continue
            _check_label(ins.rest, where)
        if kw == "add":
            _check_add(ins.rest, where)
        if kw == "volume":
            _check_volume(ins.rest, where)
        if kw == "from":
            args = [a for a in _WS.split(ins.rest) if a]
            if len(args) == 3 and args[1].lower() == "as":
                if not _STAGE_RE.match(args[2].lower()):
                    raise InvalidInput(f"invalid build stage name {args[2]!r} ({where})", "e.g. 'AS build'")
            elif len(args) != 1:
                raise InvalidInput(f"FROM needs an image, optionally followed by 'AS name' ({where})")
            base = _resolve(args[0], stages, refs, where, valid_image_ref)
            bases.append(base)
            from_bases.append((idx, base))
            if len(args) == 3:
                stages[args[2].lower()] = base
        elif kw == "copy":
            src = ins.flag("from")
            if src is not None and not src.isdigit():
                _resolve(src, stages, refs, where, valid_image_ref)
    if not bases:
        raise InvalidInput("the Dockerfile has no FROM line", "start it with e.g. 'FROM ds01/base:latest'")
    refs.final_base = bases[-1]
    return CheckedDockerfile(instructions, refs, from_bases, dropped)


def _check_label(rest: str, where: str) -> None:
    words = parse_words(rest)
    if not words:
        return
    keys = [_WS.split(rest, maxsplit=1)[0]] if "=" not in words[0] else [w.split("=", 1)[0] for w in words]
    for key in keys:
        if "$" in key:
            raise InvalidInput(f"variables in LABEL keys cannot be checked ({where})", "write the label key out")
        k = _unquote(key).lower()
        if k == label_keys.PREFIX or k.startswith(f"{label_keys.PREFIX}."):
            raise PolicyDenied(f"labels named {label_keys.PREFIX}.* are written by DS01 only ({where})",
                               "use another label name, e.g. org.example.*")


def _instruction_args(rest: str) -> list[str]:
    """An instruction's arguments as the builder reads them: a JSON list of strings, else
    whitespace-separated words."""
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
            if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
                return parsed
        except ValueError:
            pass
    return [a for a in _WS.split(rest) if a]


def _check_add(rest: str, where: str) -> None:
    args = _instruction_args(rest)
    for src in args[:-1]:
        plain = _unquote(src)
        if "$" in plain:
            raise InvalidInput(f"variables in ADD sources cannot be checked ({where})",
                               "write the path out, or use COPY")
        if "://" in plain or plain.lower().startswith(("http:", "https:", "git@", "git:")):
            raise PolicyDenied(f"ADD from a URL is not allowed: the engine would fetch it from the host's network "
                               f"({where})", "download it in a RUN step instead (RUN curl … / RUN pip install …)")


def _check_volume(rest: str, where: str) -> None:
    """VOLUME paths, read as the builder reads them (a JSON list, else whitespace-separated words
    with quotes removed): none may be a GPU hand-off path (``policy.isolation``)."""
    from ds01.policy.isolation import refuse_gpu_handoff_volumes

    paths = [_unquote(a) for a in _instruction_args(rest)]
    if any("$" in p for p in paths):
        raise InvalidInput(f"variables in VOLUME paths cannot be checked ({where})", "write the path out")
    refuse_gpu_handoff_volumes(paths, f"the Dockerfile ({where})")


def image_refs(dockerfile: str) -> ImageRefs:
    """Every image a Dockerfile uses, with build stages (``FROM x AS y``, numeric ``--from``)
    resolved. Raises InvalidInput for variables in image names (``FROM $BASE``), which DS01
    could not check before the build, for a Dockerfile without FROM, and for everything else
    :func:`check_dockerfile` refuses."""
    return check_dockerfile(dockerfile).refs


def _resolve(ref: str, stages: dict[str, str | None], refs: ImageRefs, where: str = "",
             valid=None) -> str | None:
    if ref.lower() in stages:
        return stages[ref.lower()]
    if "$" in ref:
        raise InvalidInput(f"image names with variables cannot be checked: {ref!r}",
                           "write the image name out in the Dockerfile")
    if ref.lower() == "scratch":
        return None
    if ID_LIKE.match(ref):
        raise InvalidInput(f"{ref!r} names an image by its id ({where})",
                           "name images by repository:tag, e.g. ds01/base:latest")
    if valid is not None and not valid(ref):
        raise InvalidInput(f"not a valid image reference: {ref!r} ({where})",
                           "e.g. ds01/base:latest (lowercase, no quotes or escapes)")
    if ref not in refs.external:
        refs.external.append(ref)
    return ref
