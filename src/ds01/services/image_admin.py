"""Image housekeeping for admins (issue 17): pre-fetch the catalog defaults, list every image
with its use, prune what nobody used for a while.

Prune only ever considers images that came from a registry (every name outside DS01's own
``ds01/`` namespace and none of them a host-built catalog image); it never removes an image any
container of the engine uses (running or not, any instance), ``images.default``, or a catalog
default of this host.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

from ds01 import labels as label_keys
from ds01.errors import DS01Error, InvalidInput
from ds01.services.context import Context


def _ts(text: Any) -> float:
    """Unix time from the engine's RFC 3339 text or a number; 0 when unknown."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text or "")
    if not s or s.startswith("0001-"):
        return 0.0
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())[:6]
        rest = frac[len("".join(c for c in frac if c.isdigit())):]
        s = f"{head}.{digits}{rest}"
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        return 0.0
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


class ImageAdmin:
    def __init__(self, ctx: Context, images: Any):
        self.ctx = ctx
        self.images = images  # ImageService (its puller, catalog, ownership)

    def default_refs(self) -> list[str]:
        """The catalog default per framework that runs on this host (pullable ones only)."""
        from ds01.images.catalog import FRAMEWORKS, default_for, load_catalog

        cat, drv = load_catalog(), self.images.driver_version()
        out = []
        for f in FRAMEWORKS:
            try:
                e = default_for(cat, f, drv)
            except InvalidInput:
                continue
            if not e.local and e.image not in out:
                out.append(e.image)
        return out

    def pull(self, actor, refs: list[str], defaults: bool) -> Iterator[dict]:
        """Pull each reference in turn (``--defaults``: the catalog defaults), yielding the
        puller's events; a failed one is reported (``{"failed": …}``) and the rest go on."""
        wanted = list(dict.fromkeys([*(self.default_refs() if defaults else []), *refs]))
        if not wanted:
            raise InvalidInput("nothing to pull", "name images, or --defaults")
        failed = 0
        for ref in wanted:
            try:
                yield from self.images.pulls.ensure(actor, ref, actor)
            except DS01Error as e:
                failed += 1
                yield {"failed": {"image": ref, **e.to_dict()}}
        yield {"result": {"pulled": len(wanted) - failed, "failed": failed, "images": wanted}}

    # -- list / prune ---------------------------------------------------------------------------
    def usage(self) -> list[dict]:
        """Every image on the host: names, size, shared/unique bytes, the users and containers
        using it, last used (the newest of its pull/tag time and its containers' start)."""
        from ds01.runtime.docker_pull import image_usage

        images, containers = image_usage(self.ctx.runtime)
        by_image: dict[str, list[dict]] = {}
        for c in containers:
            by_image.setdefault(c.get("ImageID") or "", []).append(c)
        keep = self._protected()
        rows = []
        for im in images:
            users, names, last = set(), [], _ts(im.get("LastTagTime")) or _ts(im.get("Created"))
            for c in by_image.get(im["Id"], []):
                lb = c.get("Labels") or {}
                names.append((c.get("Names") or ["/?"])[0].lstrip("/"))
                if lb.get(label_keys.USER):
                    users.add(lb[label_keys.USER])
                last = max(last, _ts(c.get("Created")))
                if c.get("State") == "running":
                    last = max(last, self.ctx.clock())
            size, shared = int(im.get("Size") or 0), max(int(im.get("SharedSize") or 0), 0)
            tags = [t for t in im.get("RepoTags") or [] if t != "<none>:<none>"]
            rows.append({"id": im["Id"], "tags": tags, "size": size, "shared": shared, "unique": size - shared,
                         "users": sorted(users), "containers": sorted(names), "last_used": last,
                         "source": self.images.pulls.sources.get(im["Id"]),
                         "protected": bool(set(tags) & keep), "pulled": self._pulled(tags)})
        rows.sort(key=lambda r: -r["size"])
        return rows

    def prune(self, actor, unused_for: float, dry_run: bool, only: list[str] | None = None) -> dict:
        """Remove pulled images unused for ``unused_for`` seconds (see the module docstring);
        ``only``: name prefixes to restrict it to."""
        from ds01.images.catalog import image_allowed

        now = self.ctx.clock()
        removed, kept = [], []
        for row in self.usage():
            if not row["pulled"] or row["protected"] or row["containers"]:
                if row["pulled"] and (row["protected"] or row["containers"]):
                    kept.append({"image": row["tags"][0] if row["tags"] else row["id"],
                                 "why": "in use" if row["containers"] else "a default"})
                continue
            if only and not all(image_allowed(t, only) for t in row["tags"]):
                continue
            if now - row["last_used"] < unused_for:
                continue
            name = row["tags"][0] if row["tags"] else row["id"]
            if not dry_run:
                try:
                    for t in row["tags"] or [row["id"]]:
                        self.ctx.runtime.image_remove(t)
                except DS01Error as e:  # taken into use meanwhile: the engine refuses, keep it
                    kept.append({"image": name, "why": e.message})
                    continue
            removed.append({"image": name, "size": row["size"], "unique": row["unique"]})
        if removed and not dry_run:
            self.ctx.emit("image.prune", actor, "images", "ok", None,
                          {"removed": [r["image"] for r in removed]}, None)
        return {"dry_run": dry_run, "removed": removed, "kept": kept,
                "freed": sum(r["unique"] for r in removed)}

    def _protected(self) -> set[str]:
        from ds01.images.catalog import normalize_ref

        out = {self.ctx.config.images.default, *self.default_refs()}
        names = set(out)
        for ref in out:  # the engine lists Hub images without docker.io/ and library/
            try:
                r = normalize_ref(ref)
            except DS01Error:
                continue
            path = r.path.removeprefix("library/") if r.domain == "docker.io" else r.repository
            names.add(f"{path}:{r.tag or 'latest'}")
        return names

    def _pulled(self, tags: list[str]) -> bool:
        from ds01.images.catalog import normalize_ref

        if not tags:
            return False
        for t in tags:
            try:
                if normalize_ref(t).ds01_parts() is not None or self.images._is_local(t):
                    return False
            except DS01Error:
                return False
        return True
