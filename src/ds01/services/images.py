"""Image service: project images (build, list, delete), the catalog view, and the offline base.

Every project image is ``ds01/<user>/<project>:latest``; whose it is, which images a user may
use, list and delete: ``services.project_images`` (the base class of :class:`ImageService`).

Builds (``prepare_build`` then ``run_build``):

* the context is read by a child process running as the user (``ds01.images.context``);
* the Dockerfile is checked and rewritten (``ds01.images.dockerfile_check``); every image it names (``FROM``, ``COPY --from=``) must be allowed by
  ``images.allowed`` and, for per-user images ``ds01/<user>/<project>``, belong to the caller;
* the build goes to an untagged image; only success moves ``:latest``, so a failed build leaves
  the previous image in place; the superseded image is removed when no container uses it;
* build args carry the admin's CA bundle / pip index / proxy (``ds01.images.buildargs``); there
  is no way to ask for a network mode, privileges or mounts (the runtime API has none);
* ``build.timeout`` bounds each build, ``build.max_concurrent_per_user`` the builds in flight;
* when the content hash (Dockerfile, context digest, base image ids, build args) equals the
  current image's label, nothing is rebuilt unless ``no_cache``;
* before that, a *build stamp* (state table ``build_stamps``): when the context's stat
  fingerprint (``images.fingerprint``, metadata only, taken by root without reading any
  file), the build args and the base image ids are what the last build of the current image saw,
  the rebuild is a no-op without even reading the context (like BuildKit's stat-based transfer);
* the engine's output is streamed as step and line events (``ds01.images.buildlog``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ds01 import labels as label_keys
from ds01.errors import BuildFailed, Conflict, DS01Error, InvalidInput, NotFound, PermissionDenied, PolicyDenied
from ds01.images.buildargs import BuildArgs
from ds01.images.buildlog import BuildEvents, BuildLog
from ds01.images.catalog import user_image_owner
from ds01.images.dockerfile_check import CheckedDockerfile, check_dockerfile
from ds01.runtime.base import ImageInfo
from ds01.services.context import Context
from ds01.services.identity import Caller
from ds01.services.project_images import TAG, ProjectImages, image_view

log = logging.getLogger("ds01d")


@dataclass
class BuildPlan:
    actor: Caller
    who: Caller
    project: str
    repo: str
    context: Any  # images.build_context.BuildContext
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
    limits: Any = None  # policy.isolation.BuildLimits of the user (pids, CPUs; memory above)


_CODE_ID: bytes | None = None


def _code_id() -> bytes:
    """Identifies the code that checks, rewrites and reads a build (this module, the image use
    checks, the Dockerfile parser and checker, the build args, the context reader and
    fingerprint, the reference normaliser): a build stamp from other code vouches for nothing."""
    global _CODE_ID
    if _CODE_ID is None:
        from ds01 import __version__
        from ds01.images import build_context, buildargs, catalog, context, dockerfile_check, dockerfile_text
        from ds01.images import fingerprint
        from ds01.services import project_images

        h = hashlib.sha256(__version__.encode())
        mods = (project_images, dockerfile_text, dockerfile_check, buildargs, context, build_context, fingerprint,
                catalog)
        for mod_file in [__file__] + [m.__file__ or "" for m in mods]:
            try:
                with open(mod_file, "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(os.urandom(16))  # unknown code: stamps never match
        _CODE_ID = h.digest()
    return _CODE_ID


class ImageService(ProjectImages):
    """One instance per daemon (it holds the per-user build counters)."""

    def __init__(self, ctx: Context, remove_container: Any = None):
        super().__init__(ctx, remove_container)
        self._lock = threading.Lock()
        self._building: dict[int, int] = {}
        self._bootstrap = threading.Lock()
        self._buildargs = BuildArgs()
        self._pulls: Any = None

    @property
    def pulls(self):
        """The single-flight puller (``services.pulls``), made on first use."""
        if self._pulls is None:
            from ds01.services.pulls import PullService

            with self._lock:
                if self._pulls is None:
                    self._pulls = PullService(self.ctx)
        return self._pulls

    def _image_quota(self, who: Caller, swap: tuple[str | None, str] | None = None) -> None:
        """``max_image_bytes``: refuse a build while over it; ``swap`` (old, new id): after the
        engine built ``new``, refuse (and remove it) when it would take the user over."""
        from ds01.policy.limits import effective_limits
        from ds01.services import image_quota

        limit = int(effective_limits(self.cfg, who.name, set(who.groups)).max_image_bytes or 0)
        if limit <= 0:
            return
        try:
            image_quota.check(self.ctx, who, limit, image_quota.user_image_bytes(self.ctx, who.uid, swap or (None, None)),
                              after=swap is not None)
        except PolicyDenied as e:
            if swap is not None and swap[1] != swap[0]:
                self.rt.image_remove(swap[1], force=True)
            self.ctx.emit("image.build", who, "images", "denied", e.code, {"message": e.message})
            raise

    def use_or_pull(self, who: Caller, ref: str, actor: Caller | None = None) -> ImageInfo | None:
        """``check_use``, and an allowed image that is not here (not a DS01 name, not built on
        the host) pulled first (single-flight, no progress: ``/v1/images-pull`` shows it)."""
        from ds01.images.catalog import normalize_ref

        info = self.check_use(who, ref)
        if (info is None and normalize_ref(ref).ds01_parts() is None and hasattr(self.rt, "api")
                and not self._is_local(ref)):
            self.pulls.pull(who, ref, actor)
            info = self.check_use(who, ref)
        return info

    @property
    def housekeeping(self):
        """``ds01 admin images pull/list/prune`` (``services.image_admin``)."""
        from ds01.services.image_admin import ImageAdmin

        return ImageAdmin(self.ctx, self)

    # -- host facts / catalog --------------------------------------------------------------
    def driver_version(self) -> str | None:
        """The host's NVIDIA driver as the GPU inventory reports it (NVML's, or the simulated
        one), so the catalog and ``ds01 gpus`` never disagree; None: no driver (CPU only)."""
        return self.ctx.inventory.driver_version

    def catalog(self, framework: str | None = None) -> dict[str, Any]:
        from ds01.images.catalog import FRAMEWORKS, default_for, fit, image_allowed, load_catalog
        from ds01.images.catalog import parse_framework_spec

        cat = load_catalog()
        drv = self.driver_version()
        fws = [parse_framework_spec(framework)[0]] if framework else list(FRAMEWORKS)
        defaults = {}
        for f in fws:
            try:
                defaults[f] = default_for(cat, f, drv).ident
            except InvalidInput:
                pass
        present: dict[str, bool] = {}
        rows = []
        for e in cat.entries:
            if e.framework not in fws:
                continue
            if e.local and e.image not in present:
                present[e.image] = self.rt.image_inspect(e.image) is not None
            how = fit(e, drv)
            rows.append({**e.model_dump(mode="json"), "runnable": how is not None, "fit": how,
                         "is_default": defaults.get(e.framework) == e.ident,
                         "allowed": image_allowed(e.image, self.cfg.images.allowed),
                         "present": bool(e.local and present.get(e.image))})
        return {"driver_version": drv, "entries": rows, "tools": list(self.cfg.images.tools)}

    def select_base(self, framework: str | None) -> dict[str, Any]:
        """The base image ``image-create`` should write for ``framework`` (None = CPU default):
        the image, what is installed on top of it (``pip`` from ``pip_index``), how it runs
        here (``fit``: gpu | cpu | cpu-only-here) and the tools every DS01-made image carries."""
        from ds01.images.catalog import check_image_allowed, fit, load_catalog, select

        drv = self.driver_version()
        entry = select(load_catalog(), framework or "python", drv)
        check_image_allowed(entry.image, self.cfg.images.allowed)
        present = self.rt.image_inspect(entry.image) is not None
        return {"image": entry.image, "label": entry.label, "framework": entry.framework,
                "framework_version": entry.framework_version, "variant": entry.variant, "local": entry.local,
                "present": present, "driver_version": drv, "pip": list(entry.pip), "pip_index": entry.pip_index,
                "fit": fit(entry, drv), "tools": list(self.cfg.images.tools)}

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

    def _check_refs(self, who: Caller, external: list[str]) -> tuple[dict[str, str], dict[str, ImageInfo]]:
        """Policy for every image a Dockerfile uses (``ImageRefs.external``, or the bases a build
        stamp recorded); returns (ref -> local id, or the ref when the engine will have to pull
        it, for the content hash; ref -> local image)."""
        from ds01.images.catalog import check_image_allowed
        from ds01.policy.isolation import refuse_gpu_handoff_volumes

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
                refuse_gpu_handoff_volumes(info.volumes, f"the image {ref}")  # build steps would get it
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
        from ds01.images.build_context import read_context
        from ds01.images.dockerfile_text import content_hash
        from ds01.images.fingerprint import stat_fingerprint
        from ds01.policy.isolation import build_limits
        from ds01.policy.limits import effective_limits
        from ds01.services.workspace import _gids, base_for

        repo = self._repo(who, project)
        release = self._acquire(who)
        try:
            base, root = base_for(self.cfg.containers.workspace_base, who)
            args = self._buildargs(self.cfg.build)
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
            self._image_quota(who)
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
            labels = {**label_keys.managed(self.ctx.instance), label_keys.USER: who.name, label_keys.UID: str(who.uid),
                      label_keys.PROJECT: project, label_keys.CONTENT_HASH: digest,
                      label_keys.BASE: refs.final_base or "scratch"}
            current = self.rt.image_inspect(f"{repo}:{TAG}")
            same = (not no_cache and self._owned(current, who)
                    and current is not None and current.labels.get(label_keys.CONTENT_HASH) == digest)
            lim = build_limits(effective_limits(self.cfg, who.name, set(who.groups)), os.cpu_count())
            return BuildPlan(actor, who, project, repo, ctx, labels, args, no_cache,
                             current if same else None, release, lim.memory, fp, ids, args_hash, lim)
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
            if info is not None and info.labels.get(label_keys.MANAGED) is not None:
                out[idx] = [f'LABEL {label_keys.MANAGED}="build"']
        return out

    def run_build(self, plan: BuildPlan, cancel: threading.Event | None = None) -> Iterator[dict]:
        """Yield the build's output as events (``ds01.images.buildlog``: ``{"step", "of", "text"}``
        and ``{"line"}``) and finally ``{"result": {...}}``; raise BuildFailed (details: step,
        tail) when the build fails. Always frees the slot."""
        t0 = time.monotonic()
        try:
            if plan.up_to_date is not None:
                self._stamp(plan, plan.up_to_date.id)
                yield {"line": "Nothing changed since the last build; the image is up to date."}
                yield {"result": self._result(plan, plan.up_to_date, t0, cached=True)}
                return
            yield {"line": f"Building {plan.repo}:{TAG} ({plan.context.files} files, "
                           f"{plan.context.bytes} bytes of context)"}
            for ref, ident in (plan.bases or {}).items():
                if ident == ref and not self._is_local(ref):  # not on the host: one shared pull (issue 17)
                    yield from self.pulls.ensure(plan.who, ref, plan.actor)
            new_id = yield from self._engine_build(plan, cancel)
            old = self.rt.image_inspect(f"{plan.repo}:{TAG}")
            self._image_quota(plan.who, (old.id if old else None, new_id))
            if old is not None and old.id != new_id and not self._owned(old, plan.who):
                # never move a tag off an image that is not the caller's (defence in depth: the
                # namespaces are one-to-one, see names.image_namespace)
                try:
                    self.rt.image_remove(new_id)
                except DS01Error:
                    pass
                raise PolicyDenied(f"{plan.repo}:{TAG} names an image that is not yours; it was not replaced",
                                   "ask an admin to check the image namespace ('ds01 admin images')")
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
        bl = BuildLog()  # everything the engine prints, for the failure message
        events = BuildEvents()  # what the user is shown (bounded)
        new_id = None
        stop = cancel or threading.Event()
        lim = getattr(plan, "limits", None)  # policy.isolation.BuildLimits: pids, CPUs as containers
        gen = self.rt.build_image(plan.context.tar, labels=plan.labels, buildargs=plan.buildargs,
                                  nocache=plan.nocache, timeout=self.cfg.build.timeout,
                                  memory=plan.memory, cancel=stop, pids=lim and lim.pids, cpus=lim and lim.cpus)
        try:
            for msg in gen:
                if "stream" in msg:
                    text = msg["stream"]
                    bl.feed(text)
                    if bl.triggers:  # a pulled base image with ONBUILD (local ones are refused before)
                        stop.set()
                        raise BuildFailed("the base image has ONBUILD triggers, which DS01 does not run; "
                                          "the build was stopped", "use another base image")
                    yield from events.feed(text)
                elif "error" in msg:
                    raise bl.failure(msg["error"])
                elif "id" in msg:
                    new_id = msg["id"]
        except BuildFailed as e:
            if "step" not in e.details:  # a time limit or cancel from the backend: add the context
                e.details.update(step=bl.step, tail=bl.tail)
            self.ctx.emit("image.build", plan.who, plan.project, "failed", "build_failed",
                          {"step": bl.step, "message": e.message[:300]}, plan.actor)
            yield from events.flush()  # the unfinished last line, before the failure
            raise
        except Exception:
            yield from events.flush()
            raise
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()  # cuts the engine's connection when we stopped early
        yield from events.flush()
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
                "seconds": secs, "outdated": self.outdated(plan.who, info)}

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
