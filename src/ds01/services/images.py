"""Image service: project images (build, list, delete), the catalog view, and the offline base.

Every project image is ``ds01/<user>/<project>:latest`` with daemon-written labels
(``ds01.managed``, ``ds01.user``, ``ds01.uid``, ``ds01.project``, ``ds01.instance``,
``ds01.content_hash``, ``ds01.base``). Ownership is the ``ds01.uid`` label, checked here: another
user's image is reported exactly like a missing one.

Builds (``prepare_build`` then ``run_build``):

* the context is read by a child process running as the user (``ds01.images.context``);
* every image the Dockerfile names (``FROM``, ``COPY --from=``) must be allowed by
  ``images.allowed`` and, for per-user images ``ds01/<user>/<project>``, belong to the caller;
* the build goes to an untagged image; only success moves ``:latest``, so a failed build leaves
  the previous image in place; the superseded image is removed when no container uses it;
* build args carry the admin's CA bundle / pip index / proxy (``build`` config); there is no way
  to ask for a network mode, privileges or mounts (the runtime API has none);
* ``build.timeout`` bounds each build, ``build.max_concurrent_per_user`` the builds in flight;
* when the content hash (Dockerfile, context digest, base image ids, build args) equals the
  current image's label, nothing is rebuilt unless ``no_cache``;
* before that, a *build stamp* (state table ``build_stamps``): when the context's stat
  fingerprint (``context.stat_fingerprint``, metadata only, taken by root without reading any
  file), the build args and the base image ids are what the last build of the current image saw,
  the rebuild is a no-op without even reading the context (like BuildKit's stat-based transfer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ds01.errors import BuildFailed, Conflict, DS01Error, InvalidInput, NotFound, PermissionDenied, PolicyDenied
from ds01.names import image_name, validate_project
from ds01.runtime.base import ImageInfo, RuntimeImages
from ds01.services.context import Context
from ds01.services.identity import Caller

log = logging.getLogger("ds01d")
L = "ds01"
TAG = "latest"
TAIL_LINES = 20


# --------------------------------------------------------------------------- pure helpers


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
_FLAG_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+,=${}-]*$")
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
# What DS01's Dockerfile generator wrote before ds01.* labels were reserved (now org.ds01.*);
# such a line is left out of the build instead of refusing the user's existing file.
LEGACY_LABEL = re.compile(r'^LABEL ds01\.project="[A-Za-z0-9_.+= -]*"(?: ds01\.framework="[A-Za-z0-9_.+= -]*")?$')
_HEREDOC = re.compile(r"^\d*<<-?[^<]*$")
# A bare image id or id prefix ("FROM 3f2a", "FROM sha256:3f2a…"): the engine resolves it by id,
# which would name any image on the host, built by anyone, by guessing a few hex digits.
ID_LIKE = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")
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


def _go_words(rest: str) -> list[str]:
    """The engine's parseWords (LABEL/ENV key=value splitting): whitespace outside quotes ends a
    word; quotes and escapes stay in the word."""
    words: list[str] = []
    word, quote, phase, blank_ok = "", "", 0, False  # phase 0 spaces, 1 word, 2 quote
    i, n = 0, len(rest)
    while i <= n:
        ch = rest[i] if i < n else ""
        if phase == 0:
            if i == n:
                break
            if ch in " \t":
                i += 1
                continue
            phase = 1
        if phase in (1, 2) and i == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == 1:
            if ch in " \t":
                phase = 0
                if blank_ok or word:
                    words.append(word)
                word, blank_ok = "", False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok, phase = ch, True, 2
            if ch == "\\":
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch == quote:
            phase = 1
        if ch == "\\" and quote != "'":
            if i + 1 == n:
                phase = 1
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    return words


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
    from ds01.images.catalog import valid_image_ref
    from ds01.images.dockerfile_text import MAX_LINE, _continues, parse_instructions

    instructions = parse_instructions(text)
    refs = ImageRefs()
    stages: dict[str, str | None] = {}
    bases: list[str | None] = []
    from_bases: list[tuple[int, str | None]] = []
    dropped: set[int] = set()

    for idx, ins in enumerate(instructions):
        where = f"line {ins.lineno} ({_shorten(ins.line, 60)})"
        kw = ins.keyword
        odd = _odd_char(ins.line)
        if odd is not None:
            raise InvalidInput(f"the Dockerfile has a control or unusual whitespace character (U+{ord(odd):04X}) "
                               f"at {where}", "use plain spaces and tabs")
        if len(ins.line.encode("utf-8")) > MAX_LINE:
            raise InvalidInput(f"the instruction at line {ins.lineno} is longer than {MAX_LINE} bytes once its "
                               "continuation lines are joined", "split it into several instructions")
        if _continues(ins.line, "\\")[1]:
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
    words = _go_words(rest)
    if not words:
        return
    keys = [_WS.split(rest, maxsplit=1)[0]] if "=" not in words[0] else [w.split("=", 1)[0] for w in words]
    for key in keys:
        if "$" in key:
            raise InvalidInput(f"variables in LABEL keys cannot be checked ({where})", "write the label key out")
        k = _unquote(key).lower()
        if k == L or k.startswith(f"{L}."):
            raise PolicyDenied(f"labels named {L}.* are written by DS01 only ({where})",
                               "use another label name, e.g. org.example.*")


def _check_add(rest: str, where: str) -> None:
    args: list[str] | None = None
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
            if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
                args = parsed
        except ValueError:
            args = None
    if args is None:
        args = [a for a in _WS.split(rest) if a]
    for src in args[:-1]:
        plain = _unquote(src)
        if "$" in plain:
            raise InvalidInput(f"variables in ADD sources cannot be checked ({where})",
                               "write the path out, or use COPY")
        if "://" in plain or plain.lower().startswith(("http:", "https:", "git@", "git:")):
            raise PolicyDenied(f"ADD from a URL is not allowed: the engine would fetch it from the host's network "
                               f"({where})", "download it in a RUN step instead (RUN curl … / RUN pip install …)")


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


def user_image_owner(ref: str) -> str | None:
    """For a per-user image reference ``ds01/<user>/<project>[:tag]`` (any spelling the engine
    accepts: ``docker.io/``, ``index.docker.io/``, digests …) the ``<user>`` part, else None
    (``ds01/base:latest`` is a lab image, not a per-user one). Deeper ``ds01/a/b/c`` paths
    also answer ``a``: they are in the per-user namespace and never a lab image."""
    from ds01.images.catalog import normalize_ref

    try:
        parts = normalize_ref(ref).ds01_parts()
    except InvalidInput:
        return None
    return parts[0] if parts is not None and len(parts) >= 2 else None


_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The CA prologue/epilogue every generated RUN carries (see ds01.images.dockerfile): noise in a
# failure message, so it is cut from the step shown to the user.
_CA_NOISE = re.compile(r'set -eu;\s*|if \[ -n "\$\{DS01_CA_PEM:-\}" \]; then .*?; fi;\s*|;?\s*rm -f /tmp/ds01-ca\.pem')


def clean_step(step: str) -> str:
    """``Step 8/17 : RUN set -eu; if [ -n "${DS01_CA_PEM…; fi; pip install …; rm -f …`` →
    ``Step 8/17 : RUN pip install …``."""
    return " ".join(_CA_NOISE.sub("", step).split())


MAX_PARTIAL = 4096  # the unfinished line kept while output has no newline
MAX_STREAM = 50 * 1024 * 1024  # build output forwarded to the user per build; the rest is dropped
_TRIGGER_RE = re.compile(r"^# Executing \d+ build triggers?")


class BuildLog:
    """Follows the engine's output: the current step and the last lines of output (for the
    failure message). Linear in the output: an unfinished line is kept to its last
    ``MAX_PARTIAL`` characters (``[…]`` marks the cut), so output without newlines cannot make
    the daemon re-scan an ever-growing string."""

    def __init__(self) -> None:
        self.step: str | None = None
        self.tail: list[str] = []
        self.triggers = False  # the engine ran a base image's ONBUILD triggers
        self._partial = ""
        self._cut = False

    def feed(self, text: str) -> None:
        text = _ANSI_RE.sub("", text)
        if "\n" not in text:
            self._keep(self._partial + text[-(MAX_PARTIAL + 1):] if len(text) > MAX_PARTIAL else self._partial + text)
            return
        head, _, rest = text.partition("\n")
        lines = [self._partial + head] + rest.split("\n")
        cut = self._cut
        self._partial, self._cut = "", False
        self._keep(lines.pop())
        for n, line in enumerate(lines):
            line = line.rstrip("\r")
            if (n == 0 and cut) or len(line) > MAX_PARTIAL:
                line = "[…] " + line[-MAX_PARTIAL:]
            m = _STEP_RE.match(line)
            if m:
                self.step, self.tail = clean_step(line), []
            elif _TRIGGER_RE.match(line):
                self.triggers = True
            elif line.strip() and not line.startswith((" ---> ", "Removing intermediate container")):
                self.tail = (self.tail + [line])[-TAIL_LINES:]

    def _keep(self, partial: str) -> None:
        if len(partial) > MAX_PARTIAL:
            partial, self._cut = partial[-MAX_PARTIAL:], True
        self._partial = partial

    def failure(self, message: str) -> BuildFailed:
        step = self.step or "(before the first step)"
        m = _STEP_RE.match(step)
        short = f"step {m.group(1)}/{m.group(2)} ({_shorten(m.group(3), 60)})" if m else step
        code = re.search(r"returned a non-zero code: (\d+)\s*$", message)
        why = f"the command exited with code {code.group(1)}" if code else _shorten(message, 300)
        return BuildFailed(
            f"the build failed at {short}: {why}",
            "the lines above are the step's last output; fix the Dockerfile or requirements and build again "
            "(your previous image, if any, is unchanged)",
            {"step": step, "tail": self.tail, "engine": message},
        )


def _shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def image_view(info: ImageInfo, used_by: list[str]) -> dict[str, Any]:
    lb = info.labels
    return {
        "project": lb.get(f"{L}.project"),
        "user": lb.get(f"{L}.user"),
        "uid": int(lb.get(f"{L}.uid", "-1")),
        "image": next((t for t in info.tags if t.endswith(f":{TAG}")), info.tags[0] if info.tags else info.id),
        "id": info.id.split(":", 1)[-1][:12],
        "size": info.size,
        "created": info.created,
        "base": lb.get(f"{L}.base"),
        "content_hash": lb.get(f"{L}.content_hash"),
        "used_by": used_by,
    }


# Linux caps one environment string at MAX_ARG_STRLEN (128 KiB); build args become environment
# variables of each RUN, so a bigger DS01_CA_PEM makes every RUN fail with "argument list too long".
CA_ARG_LIMIT = 120_000
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def pem_certs(text: str) -> list[str]:
    """The certificates of a PEM bundle, whitespace-normalised (so equal certs compare equal)."""
    out = []
    for m in _PEM_RE.finditer(text):
        body = "".join(m.group(0).split()[2:-2])
        out.append("-----BEGIN CERTIFICATE-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
                   + "\n-----END CERTIFICATE-----")
    return out


def ca_for_build(bundle: str, known: set[str], limit: int = CA_ARG_LIMIT) -> str:
    """What to pass as DS01_CA_PEM. A bundle that fits is passed whole. A bigger one (the host's
    full /etc/ssl/certs bundle, ~220 KB) is cut to the certificates that are *not* in ``known``
    (Debian's Mozilla set): the lab's own CAs, e.g. a TLS-inspecting proxy or a private index,
    which is what builds need beyond the image's own trust store. Raises ConfigError when even
    that does not fit."""
    from ds01.errors import ConfigError

    if len(bundle) <= limit:
        return bundle
    extra = [c for c in dict.fromkeys(pem_certs(bundle)) if c not in known]
    text = "\n".join(extra) + ("\n" if extra else "")
    if len(text) > limit:
        raise ConfigError(f"build.ca_bundle has {len(extra)} non-standard CA certificates ({len(text)} bytes); "
                          f"at most {limit} bytes can be passed to a build",
                          "point build.ca_bundle at a file with just the lab's own CA certificates")
    return text


def debian_known_cas(root: str = "/usr/share/ca-certificates/mozilla") -> set[str]:
    """The host's Mozilla CA set (Debian's ca-certificates package), normalised."""
    import glob

    known: set[str] = set()
    for path in glob.glob(os.path.join(root, "*.crt")):
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                known.update(pem_certs(f.read()))
        except OSError:
            pass
    return known


# --------------------------------------------------------------------------- the service


@dataclass
class BuildPlan:
    actor: Caller
    who: Caller
    project: str
    repo: str
    context: Any  # images.context.BuildContext
    labels: dict[str, str]
    buildargs: dict[str, str]
    nocache: bool
    up_to_date: ImageInfo | None
    release: Any  # callable freeing the concurrency slot
    memory: int | None = None  # the user's memory limit also bounds the build's steps
    # for the build stamp recorded when the plan succeeds (see ImageService._unchanged)
    fingerprint: str | None = None
    bases: dict[str, str] | None = None
    args_hash: str = ""


_CODE_ID: bytes | None = None


def _code_id() -> bytes:
    """Identifies the code that checks, rewrites and reads a build (this module, the context
    reader, the reference normaliser): a build stamp from other code vouches for nothing."""
    global _CODE_ID
    if _CODE_ID is None:
        from ds01 import __version__
        from ds01.images import catalog, context

        h = hashlib.sha256(__version__.encode())
        for mod_file in (__file__, context.__file__, catalog.__file__):
            try:
                with open(mod_file, "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(os.urandom(16))  # unknown code: stamps never match
        _CODE_ID = h.digest()
    return _CODE_ID


class ImageService:
    """One instance per daemon (it holds the per-user build counters)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        # the daemon's ContainerService (set by the Api): removing a container through it keeps
        # its side effects, e.g. waking the queue when GPUs are released
        self.containers: Any = None
        self._lock = threading.Lock()
        self._building: dict[int, int] = {}
        self._bootstrap = threading.Lock()
        self._driver: tuple[str | None] | None = None
        self._known_cas: set[str] | None = None
        self._ca_cache: tuple[tuple, str] | None = None

    @property
    def cfg(self):
        return self.ctx.config

    @property
    def rt(self) -> RuntimeImages:
        rt = self.ctx.runtime
        if not isinstance(rt, RuntimeImages):
            raise DS01Error("this daemon's runtime backend cannot build images")
        return rt

    # -- host facts / catalog --------------------------------------------------------------
    def driver_version(self) -> str | None:
        """The host's NVIDIA driver: the simulated one from config, NVML's, or None (no GPU)."""
        if self._driver is None:
            self._driver = (self._read_driver(),)
        return self._driver[0]

    def _read_driver(self) -> str | None:
        gpu = self.cfg.gpu
        if gpu.inventory == "simulated":
            return gpu.simulated.driver_version
        if gpu.inventory == "none":
            return None
        try:
            from ds01.gpu.nvml import NvmlSource, nvml_available

            if not nvml_available():
                return None
            src = NvmlSource()
            try:
                return src.read().driver_version
            finally:
                src.close()
        except Exception:  # no driver: the catalog then offers CPU images only
            log.info("no NVIDIA driver found; the image catalog offers CPU images only")
            return None

    def catalog(self, framework: str | None = None) -> dict[str, Any]:
        from ds01.images.catalog import FRAMEWORKS, default_for, image_allowed, load_catalog, parse_framework_spec
        from ds01.images.catalog import runnable

        cat = load_catalog()
        drv = self.driver_version()
        fws = [parse_framework_spec(framework)[0]] if framework else list(FRAMEWORKS)
        defaults = {}
        for f in fws:
            try:
                defaults[f] = default_for(cat, f, drv).image
            except InvalidInput:
                pass
        rows = []
        for e in cat.entries:
            if e.framework not in fws:
                continue
            rows.append({**e.model_dump(mode="json"), "runnable": runnable(e, drv),
                         "is_default": defaults.get(e.framework) == e.image,
                         "allowed": image_allowed(e.image, self.cfg.images.allowed),
                         "present": e.local and self.rt.image_inspect(e.image) is not None})
        return {"driver_version": drv, "entries": rows}

    def select_base(self, framework: str | None) -> dict[str, Any]:
        """The base image ``image-create`` should write for ``framework`` (None = CPU default)."""
        from ds01.images.catalog import check_image_allowed, load_catalog, select

        entry = select(load_catalog(), framework or "python", self.driver_version())
        check_image_allowed(entry.image, self.cfg.images.allowed)
        present = self.rt.image_inspect(entry.image) is not None
        return {"image": entry.image, "label": entry.label, "framework": entry.framework,
                "framework_version": entry.framework_version, "local": entry.local, "present": present,
                "driver_version": self.driver_version()}

    # -- ownership -------------------------------------------------------------------------
    def _repo(self, who: Caller, project: str) -> str:
        return image_name(who.name, validate_project(project))

    def _owned(self, info: ImageInfo | None, who: Caller) -> bool:
        return info is not None and info.labels.get(f"{L}.managed") == "true" and \
            info.labels.get(f"{L}.uid") == str(who.uid)

    def own_image(self, who: Caller, project: str) -> ImageInfo:
        """``who``'s image of ``project``; NotFound (also for another user's image)."""
        ref = f"{self._repo(who, project)}:{TAG}"
        info = self.rt.image_inspect(ref)
        if not self._owned(info, who):
            raise NotFound(f"you have no image for project {project!r}",
                           f"build one with 'image-create {project}'; 'image-list' shows yours")
        assert info is not None
        return info

    def check_use(self, who: Caller, ref: str) -> ImageInfo | None:
        """Refuse an image ``who`` may not use, as if it did not exist; returns the local image
        (None when the engine would have to pull it). For ContainerService.create and for every
        image a Dockerfile names. With ONE normaliser (``catalog.normalize_ref``) for every
        spelling the engine accepts:

        * in DS01's namespace (``ds01/…`` on Docker Hub, any spelling), only the caller's own
          ``ds01/<caller>/<project>`` (labels checked) and lab images ``ds01/<name>``;
        * no image ids or id prefixes (the engine would resolve them to anyone's image), and a
          local image must carry the name it was asked for (so it was not found by id);
        * an image with another user's ``ds01.uid`` label, whatever its name."""
        from ds01.images.catalog import normalize_ref

        if ID_LIKE.match(ref.strip()):
            raise InvalidInput(f"{ref!r} names an image by its id", "name images by repository:tag ('image-list')")
        r = normalize_ref(ref)
        parts = r.ds01_parts()
        missing = NotFound(f"image {ref!r} does not exist", "'image-list' shows your images")
        if parts is not None and len(parts) >= 2 and (len(parts) != 2 or parts[0] != who.name):
            raise missing
        info = self.rt.image_inspect(ref)
        if info is None:
            if parts is not None and len(parts) == 2:
                raise missing
            return None
        names = set()
        for n in list(info.tags) + list(getattr(info, "digests", []) or []):
            try:
                names.add(normalize_ref(n))
            except InvalidInput:
                pass
        if r not in names:
            raise missing  # resolved by id (or a name the engine reads differently): refuse
        lb = info.labels
        if lb.get(f"{L}.managed") == "true" and lb.get(f"{L}.uid") != str(who.uid):
            raise missing
        if parts is not None and len(parts) == 2 and not self._owned(info, who):
            raise missing
        return info

    def project_image(self, who: Caller, project: str) -> tuple[str | None, ImageInfo | None]:
        """(``ds01/<user>/<project>:latest``, its info) when ``who`` has built it, else (None, None)
        (the container default: the project's own image, else the lab's base)."""
        try:
            info = self.own_image(who, project)
        except NotFound:
            return None, None
        return f"{self._repo(who, project)}:{TAG}", info

    # -- builds ----------------------------------------------------------------------------
    def _acquire(self, who: Caller):
        limit = self.cfg.build.max_concurrent_per_user
        with self._lock:
            n = self._building.get(who.uid, 0)
            if n >= limit:
                raise PolicyDenied(f"you already have {n} image build(s) running; the limit is {limit}",
                                   "wait for it to finish, then build again")
            self._building[who.uid] = n + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._building[who.uid] = max(0, self._building.get(who.uid, 1) - 1)

        return release

    def _buildargs(self) -> dict[str, str]:
        b = self.cfg.build
        args: dict[str, str] = {}
        if b.ca_bundle:
            pem = self._ca_pem(b.ca_bundle)
            if pem:
                args["DS01_CA_PEM"] = pem
        if b.pip_index_url:
            args["PIP_INDEX_URL"] = b.pip_index_url
        if b.pip_extra_index_url:
            args["PIP_EXTRA_INDEX_URL"] = b.pip_extra_index_url
        if b.http_proxy:
            for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                args[k] = b.http_proxy
        return args

    def _ca_pem(self, path: str) -> str:
        """``ca_for_build`` of the configured bundle, recomputed only when the file changes."""
        try:
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size)
            if self._ca_cache is None or self._ca_cache[0] != key:
                with open(path, encoding="utf-8", errors="replace") as f:
                    pem = f.read()
                if self._known_cas is None:
                    self._known_cas = debian_known_cas()
                self._ca_cache = (key, ca_for_build(pem, self._known_cas))
        except OSError as e:  # fail closed: a configured CA that cannot be read is an admin error
            raise DS01Error(f"the configured build CA bundle {path} cannot be read ({e.strerror})",
                            "ask an admin to fix build.ca_bundle in the config")
        return self._ca_cache[1]

    def _check_refs(self, who: Caller, external: list[str]) -> tuple[dict[str, str], dict[str, ImageInfo]]:
        """Policy for every image a Dockerfile uses (``ImageRefs.external``, or the bases a build
        stamp recorded); returns (ref -> local id, or the ref when the engine will have to pull
        it, for the content hash; ref -> local image)."""
        from ds01.images.catalog import check_image_allowed

        ids, infos = {}, {}
        for ref in external:
            check_image_allowed(ref, self.cfg.images.allowed)
            info = self.check_use(who, ref)
            if info is None and self._is_local(ref):
                raise NotFound(f"the base image {ref} is not on this host",
                               "an admin creates it with 'ds01 admin base-image bootstrap'")
            if info is not None and getattr(info, "onbuild", None):
                raise PolicyDenied(f"the image {ref} has ONBUILD triggers, which DS01 does not run",
                                   "use another base image, or one rebuilt without ONBUILD",
                                   {"image": ref, "onbuild": list(info.onbuild)[:10]})
            ids[ref] = info.id if info else ref
            if info is not None:
                infos[ref] = info
        return ids, infos

    @staticmethod
    def _is_local(ref: str) -> bool:
        """A catalog image that is built on the host and can never be pulled."""
        from ds01.images.catalog import load_catalog

        entry = load_catalog().by_image(ref)
        return bool(entry and entry.local)

    def prepare_build(self, actor: Caller, who: Caller, project: str, no_cache: bool = False) -> BuildPlan:
        """Everything that can refuse a build, before any output is streamed: the slot, the
        context (read as the user), the image policy. The caller must run or ``release`` it."""
        from ds01.images.context import read_context, stat_fingerprint
        from ds01.images.dockerfile import content_hash
        from ds01.policy.limits import effective_limits
        from ds01.services.workspace import _gids, base_for

        repo = self._repo(who, project)
        release = self._acquire(who)
        try:
            base, root = base_for(self.cfg.containers.workspace_base, who)
            args = self._buildargs()
            args_hash = hashlib.sha256(json.dumps(args, sort_keys=True).encode() + _code_id()).hexdigest()
            # Taken *before* the context is read: a change after this point changes the metadata
            # the next rebuild compares with, so a recorded stamp never vouches for newer files.
            window = self.cfg.build.stamp_racy_window
            fp = stat_fingerprint(root, base, project, who.uid, window) if window > 0 else None
            if fp is not None and not no_cache:
                try:
                    same = self._unchanged(who, repo, project, fp, args_hash)
                except DS01Error as e:
                    self.ctx.emit("image.build", who, project, "denied", e.code, {"message": e.message}, actor)
                    raise
                if same is not None:
                    return BuildPlan(actor, who, project, repo, None, {}, args, False, same, release)
            ctx = read_context(who.uid, who.gid, _gids(who), root, base, project, self.cfg.build.max_context)
            try:
                checked = check_dockerfile(ctx.dockerfile)
                refs = checked.refs
                ids, infos = self._check_refs(who, list(refs.external))
                # What the engine builds is the checked text, rewritten (see CheckedDockerfile),
                # never the user's bytes; it replaces the context's Dockerfile.
                dockerfile = checked.render(self._label_resets(checked, infos))
                ctx.seal(dockerfile)
            except DS01Error as e:
                ctx.tar.close()
                self.ctx.emit("image.build", who, project, "denied", e.code, {"message": e.message}, actor)
                raise
            except BaseException:
                ctx.tar.close()
                raise
            digest = content_hash(dockerfile, None, {
                "context": ctx.digest.encode(), "bases": json.dumps(ids, sort_keys=True).encode(),
                "buildargs": json.dumps(args, sort_keys=True).encode()})
            labels = {f"{L}.managed": "true", f"{L}.user": who.name, f"{L}.uid": str(who.uid),
                      f"{L}.project": project, f"{L}.instance": self.ctx.instance,
                      f"{L}.content_hash": digest, f"{L}.base": refs.final_base or "scratch"}
            current = self.rt.image_inspect(f"{repo}:{TAG}")
            same = (not no_cache and self._owned(current, who)
                    and current is not None and current.labels.get(f"{L}.content_hash") == digest)
            memory = effective_limits(self.cfg, who.name, set(who.groups)).memory
            return BuildPlan(actor, who, project, repo, ctx, labels, args, no_cache,
                             current if same else None, release, memory, fp, ids, args_hash)
        except BaseException:
            release()
            raise

    def _unchanged(self, who: Caller, repo: str, project: str, fp: str, args_hash: str) -> ImageInfo | None:
        """The current image when the last build of it saw exactly this context metadata, these
        build arguments and the same base images (re-checked against policy now); else None."""
        row = self.ctx.store.build_stamp(who.uid, project)
        if row is None or row["fingerprint"] != fp or row["buildargs"] != args_hash:
            return None
        current = self.rt.image_inspect(f"{repo}:{TAG}")
        if current is None or not self._owned(current, who) or current.id != row["image_id"]:
            return None
        ids, _ = self._check_refs(who, list(row["bases"]))
        return current if ids == row["bases"] else None

    def _stamp(self, plan: BuildPlan, image_id: str) -> None:
        if plan.fingerprint is not None and plan.bases is not None:
            self.ctx.store.set_build_stamp(plan.who.uid, plan.project, image_id, plan.fingerprint, plan.bases,
                                           plan.args_hash)

    @staticmethod
    def _label_resets(checked: CheckedDockerfile, infos: dict[str, ImageInfo]) -> dict[int, list[str]]:
        """After a FROM of a DS01-managed image (the caller's own project image), a LABEL that
        marks the stage as not managed: the engine's intermediate containers carry the labels of
        the image so far, and must never look like a managed container. The final image gets
        the real labels from the build request, after everything else."""
        out: dict[int, list[str]] = {}
        for idx, base in checked.from_bases:
            info = infos.get(base) if base else None
            if info is not None and info.labels.get(f"{L}.managed") is not None:
                out[idx] = [f'LABEL {L}.managed="build"']
        return out

    def run_build(self, plan: BuildPlan, cancel: threading.Event | None = None) -> Iterator[dict]:
        """Yield ``{"stream": text}`` progress and finally ``{"result": {...}}``; raise
        BuildFailed (details: step, tail) when the build fails. Always frees the slot."""
        t0 = time.monotonic()
        try:
            if plan.up_to_date is not None:
                self._stamp(plan, plan.up_to_date.id)
                yield {"stream": "Nothing changed since the last build; the image is up to date.\n"}
                yield {"result": self._result(plan, plan.up_to_date, t0, cached=True)}
                return
            yield {"stream": f"Building {plan.repo}:{TAG} ({plan.context.files} files, "
                             f"{plan.context.bytes} bytes of context)\n"}
            new_id = yield from self._engine_build(plan, cancel)
            old = self.rt.image_inspect(f"{plan.repo}:{TAG}")
            self.rt.image_tag(new_id, plan.repo, TAG)
            if old is not None and old.id != new_id and self._owned(old, plan.who):
                try:  # the superseded image; kept while a container still uses it
                    self.rt.image_remove(old.id)
                except DS01Error:  # removed with the last container using it (prune_superseded)
                    self.ctx.store.add_superseded(plan.who.uid, old.id)
            info = self.rt.image_inspect(f"{plan.repo}:{TAG}")
            assert info is not None
            if info.id == new_id:  # not if a concurrent build of the project took the tag meanwhile
                self._stamp(plan, info.id)
            yield {"result": self._result(plan, info, t0, cached=False)}
        finally:
            if plan.context is not None:
                plan.context.tar.close()
            plan.release()

    def _engine_build(self, plan: BuildPlan, cancel: threading.Event | None):
        bl = BuildLog()
        new_id = None
        stop = cancel or threading.Event()
        sent = 0
        gen = self.rt.build_image(plan.context.tar, labels=plan.labels, buildargs=plan.buildargs,
                                  nocache=plan.nocache, timeout=self.cfg.build.timeout,
                                  memory=plan.memory, cancel=stop)
        try:
            for msg in gen:
                if "stream" in msg:
                    text = msg["stream"]
                    bl.feed(text)
                    if bl.triggers:  # a pulled base image with ONBUILD (local ones are refused before)
                        stop.set()
                        raise BuildFailed("the base image has ONBUILD triggers, which DS01 does not run; "
                                          "the build was stopped", "use another base image")
                    if sent < MAX_STREAM:
                        sent += len(text)
                        yield {"stream": text}
                        if sent >= MAX_STREAM:
                            yield {"stream": f"\n[ds01: the build printed more than {MAX_STREAM // 2**20} MiB; "
                                             "the rest of its output is not shown, the build goes on]\n"}
                elif "error" in msg:
                    raise bl.failure(msg["error"])
                elif "id" in msg:
                    new_id = msg["id"]
        except BuildFailed as e:
            if "step" not in e.details:  # a time limit or cancel from the backend: add the context
                e.details.update(step=bl.step, tail=bl.tail)
            self.ctx.emit("image.build", plan.who, plan.project, "failed", "build_failed",
                       {"step": bl.step, "message": e.message[:300]}, plan.actor)
            raise
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()  # cuts the engine's connection when we stopped early
        if not new_id:
            raise bl.failure("the engine reported no image id")
        return new_id

    def _result(self, plan: BuildPlan, info: ImageInfo, t0: float, cached: bool) -> dict[str, Any]:
        secs = round(time.monotonic() - t0, 2)
        # how "nothing changed" was established: the stamp (metadata) or the context's content
        checked = None if not cached else "stamp" if plan.context is None else "content"
        self.ctx.emit("image.build", plan.who, plan.project, data={"id": info.id[:19], "seconds": secs,
                                                                "up_to_date": cached, "checked": checked},
                      actor=plan.actor)
        return {**image_view(info, self._used_by(plan.who, info)), "up_to_date": cached, "checked": checked,
                "seconds": secs}

    # -- list / delete ---------------------------------------------------------------------
    def prune_superseded(self, uid: int) -> int:
        """Remove the user's project images that lost their tag to a rebuild while a container
        still used them (``run_build`` records those) and that no container uses any more.
        Without this, every rebuild under a running container would leave a whole image behind
        on the shared disk. Only recorded ids are touched, never an image a build in flight just
        made; one that is tagged again (an identical rebuild) is forgotten, not removed."""
        removed = 0
        for image_id in self.ctx.store.superseded_images(uid):
            info = self.rt.image_inspect(image_id)
            if info is None or info.tags:
                self.ctx.store.forget_superseded(image_id)
                continue
            try:
                removed += bool(self.rt.image_remove(image_id))
                self.ctx.store.forget_superseded(image_id)
            except DS01Error:  # still in use (Conflict), or the engine refused: try next time
                pass
        return removed

    def _used_by(self, who: Caller, info: ImageInfo) -> list[str]:
        names = set(info.tags) | {t.rsplit(":", 1)[0] for t in info.tags if t.endswith(f":{TAG}")} | {info.id}
        try:
            uid = int(info.labels.get(f"{L}.uid", who.uid))
        except ValueError:
            uid = who.uid
        return [r.project for r in self.ctx.store.live_containers(uid) if r.image in names]

    def list(self, who: Caller | None) -> list[dict[str, Any]]:
        """``who``'s images, or every user's (None: admins)."""
        lbl = {f"{L}.managed": "true", f"{L}.instance": self.ctx.instance}
        if who is not None:
            lbl[f"{L}.uid"] = str(who.uid)
        out = [image_view(i, self._used_by(who, i) if who else self._used_by_any(i))
               for i in self.rt.image_list(lbl) if i.tags]
        return sorted(out, key=lambda r: (r["user"] or "", r["project"] or ""))

    def _used_by_any(self, info: ImageInfo) -> list[str]:
        names = set(info.tags) | {t.rsplit(":", 1)[0] for t in info.tags} | {info.id}
        try:
            uid = int(info.labels.get(f"{L}.uid", "-1"))
        except ValueError:
            return []
        return [r.project for r in self.ctx.store.live_containers(uid) if r.image in names]

    def get(self, who: Caller, project: str) -> dict[str, Any]:
        info = self.own_image(who, project)
        return image_view(info, self._used_by(who, info))

    def delete(self, actor: Caller, who: Caller, project: str, force: bool = False) -> dict[str, Any]:
        """Remove ``who``'s image of ``project``. Refused while a container of ``who`` uses it,
        unless ``force``, which removes those containers first (never their workspaces)."""
        info = self.own_image(who, project)
        users = self._used_by(who, info)
        if users and not force:
            raise Conflict(f"the image of {project!r} is used by the container of: {', '.join(users)}",
                           f"remove it first ('container-remove {users[0]}') or use 'image-delete {project} --force'")
        removed = []
        for p in users:
            self.containers.remove(actor, who, p, force=True)
            removed.append(p)
        ref = f"{self._repo(who, project)}:{TAG}"
        self.rt.image_remove(ref)
        self.ctx.store.clear_build_stamp(who.uid, project)
        self.ctx.emit("image.delete", who, project, data={"id": info.id[:19], "containers_removed": removed},
                   actor=actor)
        return {**image_view(info, []), "deleted": True, "containers_removed": removed}

    # -- offline base image ----------------------------------------------------------------
    def bootstrap(self, actor: Caller, suite: str = "bookworm", tag: str = "ds01/base:latest",
                  force: bool = False) -> Iterator[dict]:
        """``ds01 admin base-image bootstrap``: see ds01.images.bootstrap. Admins only."""
        from ds01.images import bootstrap as bs
        from ds01.images.catalog import valid_image_ref

        if not actor.is_admin:
            raise PermissionDenied("bootstrapping the base image is for admins only",
                                   f"admins are root and members of '{self.cfg.admin_group}'")
        bs.validate_suite(suite)
        if not valid_image_ref(tag) or ":" not in tag.rsplit("/", 1)[-1] or "@" in tag:
            raise InvalidInput(f"not an image name:tag: {tag!r}", "e.g. ds01/base:latest")
        if user_image_owner(tag) is not None:
            raise InvalidInput(f"{tag} is in the per-user image namespace", "use e.g. ds01/base:latest")
        repo, t = tag.rsplit(":", 1)
        existing = self.rt.image_inspect(tag)
        if existing is not None and not force:
            yield {"stream": f"{tag} already exists ({existing.id[:19]}); use --force to rebuild it\n"}
            yield {"result": {"image": tag, "id": existing.id, "created": False}}
            return
        if not self._bootstrap.acquire(blocking=False):
            raise Conflict("a base image bootstrap is already running", "wait for it to finish")
        try:
            yield from self._bootstrap_steps(actor, bs, suite, repo, t)
        finally:
            self._bootstrap.release()

    def _bootstrap_steps(self, actor: Caller, bs, suite: str, repo: str, tag: str) -> Iterator[dict]:
        if not bs.have_debootstrap():
            raise DS01Error("debootstrap is not installed on this host", "apt-get install debootstrap")
        t0 = time.monotonic()
        cache = self.ctx.store.path.parent / "cache"
        work = bs.make_workdir(cache / "work")
        try:
            for line in bs.build_rootfs(suite, work, cache / f"debootstrap-{suite}"):
                yield {"stream": line + "\n"}
            yield {"stream": f"[4/4] importing as {repo}:{tag}\n"}
            tar = bs.tar_rootfs(work)
            image_id = self.rt.image_import(str(tar), repo, tag, bs.import_changes(suite=suite))
        except BuildFailed as e:
            self.ctx.emit("image.bootstrap", actor, f"{repo}:{tag}", "failed", e.code, {"message": e.message}, actor)
            raise
        finally:
            bs.cleanup(work)
        secs = round(time.monotonic() - t0, 1)
        self.ctx.emit("image.bootstrap", actor, f"{repo}:{tag}", data={"id": image_id[:19], "seconds": secs}, actor=actor)
        yield {"stream": f"Done: {repo}:{tag} ({image_id[:19]}) in {secs} s\n"}
        yield {"result": {"image": f"{repo}:{tag}", "id": image_id, "created": True, "seconds": secs}}
