"""``max_image_bytes`` (issue 17): a user's project images, shared layers counted once (as
``services.disk`` counts them), checked before a build and again with the new image."""

from __future__ import annotations

from ds01 import labels
from ds01.errors import DS01Error, PolicyDenied
from ds01.policy import disk as policy
from ds01.units import format_size


def user_image_bytes(ctx, uid: int, swap: tuple[str | None, str | None] = (None, None)) -> int:
    """Bytes of ``uid``'s images; ``swap`` = (old id, new id): count ``new`` instead of ``old``
    (the image a rebuild replaces)."""
    rt = ctx.runtime
    ids = {i.id: int(i.size) for i in rt.image_list(labels.managed(ctx.instance, uid))}
    old, new = swap
    ids.pop(old or "", None)
    if new and new not in ids:
        info = rt.image_inspect(new)
        if info is not None:
            ids[new] = int(info.size)
    per: dict[str, list[tuple[str, int]] | int] = {}
    for image_id, size in ids.items():
        try:
            hist = rt.image_history(image_id) if hasattr(rt, "image_history") else None
        except DS01Error:
            hist = None
        per[image_id] = policy.history_layers(hist) if hist else size
    return policy.image_bytes(per)


def check(ctx, who, limit: int, used: int, after: bool = False) -> None:
    """PolicyDenied when ``used`` is over ``limit`` (0 = none); ``after``: with the new image."""
    if limit <= 0 or used <= limit:
        return
    what = "with this build your images would use" if after else "your images use"
    raise PolicyDenied(f"{what} {format_size(used)}, over your limit of {format_size(limit)} (max_image_bytes)",
                       "delete images you no longer need ('image-list', 'image-delete <project>')",
                       {"used_bytes": used, "max_image_bytes": limit})
