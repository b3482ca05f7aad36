"""Run-time package settings (``build.in_containers``): the CA bundle text a container gets.
What it means for a container is decided in ``policy/environment.py``; this reads the file."""

from __future__ import annotations

import os

from ds01.errors import DS01Error

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_cache: dict[tuple, str] = {}


def ca_text(build, system_bundle: str = SYSTEM_BUNDLE) -> str | None:
    """The CA bundle for running containers: ``build.ca_bundle`` and, when that is a file of the
    lab's own CAs only, the host's standard set after it (the extra CAs are added to the usual
    trust, not substituted for it, as in builds). None unless ``build.in_containers``."""
    path = build.ca_bundle if getattr(build, "in_containers", False) else None
    if not path:
        return None
    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size, system_bundle)
        if key not in _cache:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if os.path.realpath(path) != os.path.realpath(system_bundle) and os.path.isfile(system_bundle):
                with open(system_bundle, encoding="utf-8", errors="replace") as f:
                    text = text.rstrip("\n") + "\n" + f.read()
            _cache.clear()
            _cache[key] = text
        return _cache[key]
    except OSError as e:  # fail closed: a configured CA that cannot be read is an admin error
        raise DS01Error(f"the configured CA bundle {path} cannot be read ({e.strerror})",
                        "ask an admin to fix build.ca_bundle in the config") from None
