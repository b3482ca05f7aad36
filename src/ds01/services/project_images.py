"""Project images as things a user owns: ``ds01/<user>/<project>:latest``, whose daemon-written
labels (``ds01.managed``, ``ds01.user``, ``ds01.uid``, ``ds01.project``, ``ds01.instance``,
``ds01.content_hash``, ``ds01.base``) say whose it is. Ownership is the ``ds01.uid`` label,
checked here: another user's image is reported exactly like a missing one. Also: which images a
user may use at all (:meth:`ProjectImages.check_use`), list / get / delete, and the removal of
images a rebuild superseded while a container still used them.

:class:`ProjectImages` is the base of ``services.images.ImageService`` (which adds builds)."""

from __future__ import annotations

from typing import Any

from ds01 import labels as label_keys
from ds01.errors import Conflict, DS01Error, InvalidInput, NotFound
from ds01.images.dockerfile_check import ID_LIKE
from ds01.names import image_name, image_namespace, validate_project
from ds01.runtime.base import ImageInfo, RuntimeImages
from ds01.services.context import Context
from ds01.services.identity import Caller

TAG = "latest"


def image_view(info: ImageInfo, used_by: list[str]) -> dict[str, Any]:
    lb = info.labels
    return {
        "project": lb.get(label_keys.PROJECT),
        "user": lb.get(label_keys.USER),
        "uid": int(lb.get(label_keys.UID, "-1")),
        "image": next((t for t in info.tags if t.endswith(f":{TAG}")), info.tags[0] if info.tags else info.id),
        "id": info.id.split(":", 1)[-1][:12],
        "size": info.size,
        "created": info.created,
        "base": lb.get(label_keys.BASE),
        "content_hash": lb.get(label_keys.CONTENT_HASH),
        "used_by": used_by,
    }


class ProjectImages:
    """Ownership, use, listing and removal of project images (one instance per daemon, as part
    of ``ImageService``)."""

    def __init__(self, ctx: Context, remove_container: Any = None):
        self.ctx = ctx
        # ``remove_container(actor, who, project)``: ContainerService's forced remove (given by the
        # daemon's composition root), so ``delete --force`` keeps its side effects, e.g. waking
        # the queue when GPUs are released
        self._remove_container = remove_container

    @property
    def cfg(self):
        return self.ctx.config

    @property
    def rt(self) -> RuntimeImages:
        rt = self.ctx.runtime
        if not isinstance(rt, RuntimeImages):
            raise DS01Error("this daemon's runtime backend cannot build images")
        return rt

    # -- ownership -------------------------------------------------------------------------
    def _repo(self, who: Caller, project: str) -> str:
        return image_name(who.name, validate_project(project), who.uid)

    def _owned(self, info: ImageInfo | None, who: Caller) -> bool:
        return info is not None and info.labels.get(label_keys.MANAGED) == "true" and \
            info.labels.get(label_keys.UID) == str(who.uid)

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
        if parts is not None and len(parts) >= 2 and (len(parts) != 2 or parts[0] != image_namespace(who.name, who.uid)):
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
        if lb.get(label_keys.MANAGED) == "true" and lb.get(label_keys.UID) != str(who.uid):
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
            uid = int(info.labels.get(label_keys.UID, who.uid))
        except ValueError:
            uid = who.uid
        return [r.project for r in self.ctx.store.live_containers(uid) if r.image in names]

    def outdated(self, who: Caller, info: ImageInfo) -> list[str]:
        """Projects of ``who`` whose container was made from an earlier build of this image (the
        tag moved on since): ``project-launch`` offers to replace them. One inspect per
        container that names the image."""
        names = set(info.tags) | {t.rsplit(":", 1)[0] for t in info.tags if t.endswith(f":{TAG}")} | {info.id}
        out = []
        for r in self.ctx.store.live_containers(who.uid):
            if r.image not in names or not r.docker_id:
                continue
            c = self.ctx.runtime.inspect(r.docker_id)
            if c is not None and getattr(c, "image_id", None) and c.image_id != info.id:
                out.append(r.project)
        return out

    def list(self, who: Caller | None) -> list[dict[str, Any]]:
        """``who``'s images, or every user's (None: admins)."""
        lbl = label_keys.managed(self.ctx.instance, who.uid if who is not None else None)
        out = [image_view(i, self._used_by(who, i) if who else self._used_by_any(i))
               for i in self.rt.image_list(lbl) if i.tags]
        return sorted(out, key=lambda r: (r["user"] or "", r["project"] or ""))

    def _used_by_any(self, info: ImageInfo) -> list[str]:
        names = set(info.tags) | {t.rsplit(":", 1)[0] for t in info.tags} | {info.id}
        try:
            uid = int(info.labels.get(label_keys.UID, "-1"))
        except ValueError:
            return []
        return [r.project for r in self.ctx.store.live_containers(uid) if r.image in names]

    def get(self, who: Caller, project: str) -> dict[str, Any]:
        info = self.own_image(who, project)
        return {**image_view(info, self._used_by(who, info)), "outdated": self.outdated(who, info)}

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
            self._remove_container(actor, who, p)
            removed.append(p)
        ref = f"{self._repo(who, project)}:{TAG}"
        self.rt.image_remove(ref)
        self.ctx.store.clear_build_stamp(who.uid, project)
        self.ctx.emit("image.delete", who, project, data={"id": info.id[:19], "containers_removed": removed},
                   actor=actor)
        return {**image_view(info, []), "deleted": True, "containers_removed": removed}
