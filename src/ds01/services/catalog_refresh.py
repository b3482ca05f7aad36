"""``ds01 admin catalog refresh`` in the daemon (root): list each family's tags through the
Registry HTTP API v2 (``images.registry``), turn them into overlay entries
(``images.catalog_refresh``) and, unless a dry run, write the overlay the catalog merges.

A family that cannot be listed (unreachable, not in that registry) keeps its previous part of the
overlay and is reported in ``errors``; the refresh fails only when no family could be listed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ds01.errors import ConfigError, InvalidInput, RuntimeFailure


def refresh(ctx: Any, who: Any, families: list[str], registry: str | None, dry_run: bool) -> dict[str, Any]:
    from ds01.images import catalog, catalog_refresh as cr
    from ds01.images.registry import Registry, RegistryError, api_base, split_repository

    try:
        fams = cr.families(families)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    path = cr.overlay_path()
    if path is None and not dry_run:
        raise ConfigError("this daemon has no catalog overlay path", "restart ds01d")
    clients: dict[str, Registry] = {}
    try:
        for f in fams:
            host, _ = split_repository(f.repository)
            base = registry or api_base(host)
            clients.setdefault(base, Registry(base))
    except RegistryError as e:
        raise InvalidInput(str(e)) from None

    def listing(f: Any) -> tuple[str, list[str] | None, str | None]:
        host, name = split_repository(f.repository)
        try:
            return f.name, clients[registry or api_base(host)].list_tags(name), None
        except RegistryError as e:
            return f.name, None, str(e)

    t0 = time.monotonic()
    with ThreadPoolExecutor(min(8, len(fams))) as ex:
        results = list(ex.map(listing, fams))
    found = {n: tags for n, tags, _ in results if tags is not None}
    errors = {n: err for n, _, err in results if err is not None}
    if not found:
        raise RuntimeFailure("no catalog family could be listed: " + "; ".join(f"{n}: {e}" for n, e in errors.items()),
                             "check --registry (http(s)://HOST[:PORT]) and that the host can reach it")
    try:
        previous = cr.read_overlay(path) if path else None
    except (OSError, ValueError):
        previous = None  # a bad overlay is replaced
    known = [e.model_dump() for e in catalog.shipped_entries()]
    new = cr.build_overlay(found, known, previous)
    changes = cr.diff(previous, new)
    out = {"dry_run": dry_run, "overlay": path, "registry": registry, "families": [f.name for f in fams],
           "tags": {n: len(t) for n, t in found.items()}, "errors": errors, "diff": changes,
           "entries": len(new["entries"]), "unknown": len(new["unknown"]), "duplicates": new["duplicates"],
           "seconds": round(time.monotonic() - t0, 3)}
    if not dry_run:
        meta = {"refreshed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "registry": registry}
        cr.write_overlay(path, new, meta)
        ctx.emit("catalog.refresh", who, "catalog", data={"added": len(changes["added"]),
                                                          "removed": len(changes["removed"]),
                                                          "registry": registry, "errors": sorted(errors)})
    return out
