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
  current image's label, nothing is rebuilt unless ``no_cache``.
"""

from __future__ import annotations

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
from ds01.images.dockerfile_text import logical_lines
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


def image_refs(dockerfile: str) -> ImageRefs:
    """Every image a Dockerfile uses, with build stages (``FROM x AS y``, numeric ``--from``)
    resolved. Raises InvalidInput for variables in image names (``FROM $BASE``), which DS01
    could not check before the build, and for a Dockerfile without FROM."""
    refs = ImageRefs()
    stages: dict[str, str | None] = {}  # stage name -> its external base (None for scratch chains)
    bases: list[str | None] = []
    for line in logical_lines(dockerfile):
        words = line.split()
        instr = words[0].upper()
        if instr == "FROM":
            args = [w for w in words[1:] if not w.startswith("--")]
            if not args:
                raise InvalidInput(f"a FROM line names no image: {line!r}")
            ref = args[0]
            base = _resolve(ref, stages, refs)
            bases.append(base)
            if len(args) >= 3 and args[1].lower() == "as":
                stages[args[2].lower()] = base
        elif instr in ("COPY", "ADD"):
            for w in words[1:]:
                if w.lower().startswith("--from="):
                    src = w.split("=", 1)[1]
                    if not src.isdigit():
                        _resolve(src, stages, refs)
    if not bases:
        raise InvalidInput("the Dockerfile has no FROM line", "start it with e.g. 'FROM ds01/base:latest'")
    refs.final_base = bases[-1]
    return refs


def _resolve(ref: str, stages: dict[str, str | None], refs: ImageRefs) -> str | None:
    if ref.lower() in stages:
        return stages[ref.lower()]
    if "$" in ref:
        raise InvalidInput(f"image names with variables cannot be checked: {ref!r}",
                           "write the image name out in the Dockerfile")
    if ref.lower() == "scratch":
        return None
    if ref not in refs.external:
        refs.external.append(ref)
    return ref


def user_image_owner(ref: str) -> str | None:
    """For a per-user image reference ``ds01/<user>/<project>[:tag]`` the ``<user>`` part,
    else None (``ds01/base:latest`` is not a per-user image)."""
    name = ref.split("@", 1)[0]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    for p in ("docker.io/",):
        repo = repo[len(p):] if repo.startswith(p) else repo
    parts = repo.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "ds01" else None


_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The CA prologue/epilogue every generated RUN carries (see ds01.images.dockerfile): noise in a
# failure message, so it is cut from the step shown to the user.
_CA_NOISE = re.compile(r'set -eu;\s*|if \[ -n "\$\{DS01_CA_PEM:-\}" \]; then .*?; fi;\s*|;?\s*rm -f /tmp/ds01-ca\.pem')


def clean_step(step: str) -> str:
    """``Step 8/17 : RUN set -eu; if [ -n "${DS01_CA_PEM…; fi; pip install …; rm -f …`` →
    ``Step 8/17 : RUN pip install …``."""
    return " ".join(_CA_NOISE.sub("", step).split())


class BuildLog:
    """Follows the engine's output: the current step and the last lines of output (for the
    failure message)."""

    def __init__(self) -> None:
        self.step: str | None = None
        self.tail: list[str] = []
        self._partial = ""

    def feed(self, text: str) -> None:
        text = self._partial + _ANSI_RE.sub("", text)
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            line = line.rstrip("\r")
            m = _STEP_RE.match(line)
            if m:
                self.step, self.tail = clean_step(line), []
            elif line.strip() and not line.startswith((" ---> ", "Removing intermediate container")):
                self.tail = (self.tail + [line])[-TAIL_LINES:]

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


class ImageService:
    """One instance per daemon (it holds the per-user build counters)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
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

    def check_use(self, who: Caller, ref: str) -> None:
        """Refuse a per-user image (``ds01/<user>/<project>``) that does not belong to ``who``,
        as if it did not exist. For ContainerService.create and for FROM lines."""
        if user_image_owner(ref) is None:
            return
        info = self.rt.image_inspect(ref)
        if not self._owned(info, who):
            raise NotFound(f"image {ref!r} does not exist", "'image-list' shows your images")

    def project_image(self, who: Caller, project: str) -> str | None:
        """``ds01/<user>/<project>:latest`` when ``who`` has built it, else None (the container
        default: the project's own image, else the lab's base)."""
        try:
            self.own_image(who, project)
        except NotFound:
            return None
        return f"{self._repo(who, project)}:{TAG}"

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

    def _check_refs(self, who: Caller, refs: ImageRefs) -> dict[str, str]:
        """Policy for every image the Dockerfile uses; returns ref -> local id (or the ref when
        the engine will have to pull it) for the content hash."""
        from ds01.images.catalog import check_image_allowed

        ids = {}
        for ref in refs.external:
            check_image_allowed(ref, self.cfg.images.allowed)
            self.check_use(who, ref)
            info = self.rt.image_inspect(ref)
            if info is None and self._is_local(ref):
                raise NotFound(f"the base image {ref} is not on this host",
                               "an admin creates it with 'ds01 admin base-image bootstrap'")
            ids[ref] = info.id if info else ref
        return ids

    @staticmethod
    def _is_local(ref: str) -> bool:
        """A catalog image that is built on the host and can never be pulled."""
        from ds01.images.catalog import load_catalog

        entry = load_catalog().by_image(ref)
        return bool(entry and entry.local)

    def prepare_build(self, actor: Caller, who: Caller, project: str, no_cache: bool = False) -> BuildPlan:
        """Everything that can refuse a build, before any output is streamed: the slot, the
        context (read as the user), the image policy. The caller must run or ``release`` it."""
        from ds01.images.context import read_context
        from ds01.images.dockerfile import content_hash
        from ds01.policy.limits import effective_limits
        from ds01.services.workspace import _gids, base_for

        repo = self._repo(who, project)
        release = self._acquire(who)
        try:
            base, root = base_for(self.cfg.containers.workspace_base, who)
            ctx = read_context(who.uid, who.gid, _gids(who), root, base, project, self.cfg.build.max_context)
            try:
                refs = image_refs(ctx.dockerfile)
                ids = self._check_refs(who, refs)
            except DS01Error as e:
                ctx.tar.close()
                self.ctx.emit("image.build", who, project, "denied", e.code, {"message": e.message}, actor)
                raise
            args = self._buildargs()
            digest = content_hash(ctx.dockerfile, None, {
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
                             current if same else None, release, memory)
        except BaseException:
            release()
            raise

    def run_build(self, plan: BuildPlan, cancel: threading.Event | None = None) -> Iterator[dict]:
        """Yield ``{"stream": text}`` progress and finally ``{"result": {...}}``; raise
        BuildFailed (details: step, tail) when the build fails. Always frees the slot."""
        t0 = time.monotonic()
        try:
            if plan.up_to_date is not None:
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
                except DS01Error:
                    pass
            info = self.rt.image_inspect(f"{plan.repo}:{TAG}")
            assert info is not None
            yield {"result": self._result(plan, info, t0, cached=False)}
        finally:
            plan.context.tar.close()
            plan.release()

    def _engine_build(self, plan: BuildPlan, cancel: threading.Event | None):
        bl = BuildLog()
        new_id = None
        try:
            for msg in self.rt.build_image(plan.context.tar, labels=plan.labels, buildargs=plan.buildargs,
                                           nocache=plan.nocache, timeout=self.cfg.build.timeout,
                                           memory=plan.memory, cancel=cancel):
                if "stream" in msg:
                    bl.feed(msg["stream"])
                    yield {"stream": msg["stream"]}
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
        if not new_id:
            raise bl.failure("the engine reported no image id")
        return new_id

    def _result(self, plan: BuildPlan, info: ImageInfo, t0: float, cached: bool) -> dict[str, Any]:
        secs = round(time.monotonic() - t0, 2)
        self.ctx.emit("image.build", plan.who, plan.project, data={"id": info.id[:19], "seconds": secs,
                                                                "up_to_date": cached}, actor=plan.actor)
        return {**image_view(info, self._used_by(plan.who, info)), "up_to_date": cached, "seconds": secs}

    # -- list / delete ---------------------------------------------------------------------
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
        from ds01.services.containers import ContainerService

        info = self.own_image(who, project)
        users = self._used_by(who, info)
        if users and not force:
            raise Conflict(f"the image of {project!r} is used by the container of: {', '.join(users)}",
                           f"remove it first ('container-remove {users[0]}') or use 'image-delete {project} --force'")
        removed = []
        for p in users:
            ContainerService(self.ctx).remove(actor, who, p, force=True)
            removed.append(p)
        ref = f"{self._repo(who, project)}:{TAG}"
        self.rt.image_remove(ref)
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
