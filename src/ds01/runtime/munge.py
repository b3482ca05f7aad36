"""MUNGE credentials for head↔agent requests (cluster mode, issue 18).

Every Slurm node already runs ``munged`` with the cluster's shared key, so no new secret is
needed: the head encodes a credential whose payload binds one request (see
``policy.placement.request_digest``); an agent decodes it with ``unmunge``, which yields the
encoding uid/gid, and refuses a replayed or expired credential (munged's own checks).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ds01.errors import PermissionDenied, RuntimeFailure

_TIMEOUT = 5.0


@dataclass(frozen=True)
class Decoded:
    uid: int
    gid: int
    payload: str


def _argv(tool: str, socket: str) -> list[str]:
    return [tool, *(["--socket", socket] if socket else [])]


def encode(payload: str, socket: str = "", ttl: int = 60) -> str:
    """A credential carrying ``payload``, valid for ``ttl`` seconds, from this process's uid."""
    try:
        out = subprocess.run([*_argv("munge", socket), "--ttl", str(ttl)], input=payload.encode(),
                             capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeFailure(f"could not make a MUNGE credential: {e}", "is munged running on this host?") from None
    if out.returncode != 0:
        raise RuntimeFailure(f"could not make a MUNGE credential: {out.stderr.decode(errors='replace').strip()}",
                             "is munged running on this host (systemctl status munge)?")
    return out.stdout.decode().strip()


def decode(cred: str, socket: str = "") -> Decoded:
    """The uid, gid and payload of ``cred``; PermissionDenied when munged refuses it (invalid,
    expired, replayed, another key)."""
    if not cred or len(cred) > 16384 or not cred.isascii():
        raise PermissionDenied("no valid MUNGE credential in the request")
    try:
        out = subprocess.run([*_argv("unmunge", socket)], input=cred.encode(), capture_output=True,
                             timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeFailure(f"could not check a MUNGE credential: {e}", "is munged running on this host?") from None
    if out.returncode != 0:
        raise PermissionDenied(f"MUNGE refused the credential: {out.stderr.decode(errors='replace').strip()}")
    return parse_unmunge(out.stdout.decode(errors="replace"))


def parse_unmunge(text: str) -> Decoded:
    """``unmunge`` prints ``KEY: value`` metadata lines, a blank line, then the payload."""
    head, _, payload = text.partition("\n\n")
    meta = {}
    for line in head.splitlines():
        k, _, v = line.partition(":")
        meta[k.strip()] = v.strip()
    try:
        # "UID: root (0)"
        uid = int(meta["UID"].rsplit("(", 1)[1].rstrip(")"))
        gid = int(meta["GID"].rsplit("(", 1)[1].rstrip(")"))
    except (KeyError, IndexError, ValueError):
        raise PermissionDenied("MUNGE credential without a readable uid/gid") from None
    if meta.get("STATUS", "Success (0)").split(" ")[0] != "Success":
        raise PermissionDenied(f"MUNGE refused the credential: {meta.get('STATUS')}")
    return Decoded(uid, gid, payload)
