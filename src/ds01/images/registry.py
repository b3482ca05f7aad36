"""A minimal Registry HTTP API v2 client (the distribution spec), stdlib ``urllib`` only.

What it does: ``list_tags(base, repo)`` — ``GET /v2/<repo>/tags/list?n=…`` following the ``Link:
<…>; rel="next"`` header, and the anonymous bearer-token flow: a 401 with ``WWW-Authenticate:
Bearer realm=…,service=…,scope=…`` → ``GET realm?service=…&scope=…`` → ``{"token"|"access_token"}``
→ the same request again with ``Authorization: Bearer …`` (a token is reused for later pages).

Contracts: every failure is ``RegistryError`` with a message naming the registry and what went wrong
(unreachable, unauthorized, not found, bad answer); nothing is retried silently. Credentials are
never sent: only anonymous tokens (public repositories).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PAGE = 1000  # tags per request: the distribution registry caps n at 1000 by default
MAX_PAGES = 1000  # a registry that keeps linking to more pages is a bug, not a catalog
MAX_BODY = 16 * 1024 * 1024

# Where each registry's v2 API is (the name in an image reference → its API base).
KNOWN = {"docker.io": "https://registry-1.docker.io", "nvcr.io": "https://nvcr.io"}

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class RegistryError(Exception):
    """The registry could not be asked, or its answer was not a tag list."""


def split_repository(repo: str) -> tuple[str, str]:
    """``"pytorch/pytorch"`` → ``("docker.io", "pytorch/pytorch")``; ``"python"`` →
    ``("docker.io", "library/python")``; ``"nvcr.io/nvidia/jax"`` → ``("nvcr.io", "nvidia/jax")``."""
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "docker.io", repo if rest else f"library/{repo}"


def api_base(registry: str) -> str:
    """The v2 API base for a registry name (``docker.io`` → ``https://registry-1.docker.io``)."""
    return KNOWN.get(registry, f"https://{registry}")


def parse_challenge(header: str) -> dict[str, str] | None:
    """``Bearer realm="…",service="…",scope="…"`` → ``{"realm", "service", "scope"}``; None when the
    challenge is not a bearer one (e.g. ``Basic``: credentials we do not have)."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    out = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
           for m in _PARAM_RE.finditer(params)}
    return out if out.get("realm") else None


def next_link(header: str | None, current: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, resolved against the current URL."""
    m = _LINK_RE.search(header or "")
    return urllib.parse.urljoin(current, m.group(1)) if m else None


class Registry:
    """One registry's API at ``base`` (``https://registry-1.docker.io``, ``http://127.0.0.1:5000``)."""

    def __init__(self, base: str, timeout: float = 15.0):
        u = urllib.parse.urlsplit(base)
        if u.scheme not in ("http", "https") or not u.netloc or u.username or u.password:
            raise RegistryError(f"not a registry URL: {base!r} (use http(s)://HOST[:PORT], no credentials)")
        self.base = f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"
        self.timeout = timeout
        self._tokens: dict[str, str] = {}  # scope → bearer token
        # the daemon's proxy settings (http(s)_proxy, no_proxy) apply, except to a loopback registry
        loopback = (u.hostname or "") in ("localhost", "::1") or (u.hostname or "").startswith("127.")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))

    def _open(self, url: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        req = urllib.request.Request(url, headers={"User-Agent": "ds01-catalog-refresh", **headers})
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                return r.status, r.headers, r.read(MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            body = e.read(64 * 1024) if e.fp else b""
            return e.code, e.headers, body
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise RegistryError(f"registry {self.base} unreachable: {reason}") from None

    def _token(self, challenge: dict[str, str], scope: str) -> str:
        q = {k: challenge[k] for k in ("service",) if challenge.get(k)}
        q["scope"] = challenge.get("scope") or scope
        url = challenge["realm"] + ("&" if "?" in challenge["realm"] else "?") + urllib.parse.urlencode(q)
        status, _, body = self._open(url, {"Accept": "application/json"})
        if status != 200:
            raise RegistryError(f"registry {self.base}: the token service {challenge['realm']} answered {status}")
        try:
            data = json.loads(body)
            tok = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            tok = None
        if not isinstance(tok, str) or not tok:
            raise RegistryError(f"registry {self.base}: the token service gave no token")
        return tok

    def get_json(self, url: str, scope: str) -> tuple[Any, Any]:
        """GET ``url`` as JSON, doing the anonymous token dance once on a 401."""
        headers = {"Accept": "application/json"}
        if scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        status, hdrs, body = self._open(url, headers)
        if status == 401:
            challenge = parse_challenge((hdrs or {}).get("WWW-Authenticate", "") if hdrs else "")
            if challenge is None:
                raise RegistryError(f"registry {self.base}: unauthorized (it wants credentials, "
                                    "not an anonymous token)")
            self._tokens[scope] = self._token(challenge, scope)
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
            status, hdrs, body = self._open(url, headers)
        if status in (401, 403):
            raise RegistryError(f"registry {self.base}: unauthorized for {scope}")
        if status == 404:
            raise RegistryError(f"registry {self.base}: no such repository ({scope})")
        if status != 200:
            raise RegistryError(f"registry {self.base}: {url} answered {status}")
        if len(body) > MAX_BODY:
            raise RegistryError(f"registry {self.base}: answer over {MAX_BODY} bytes")
        try:
            return json.loads(body), hdrs
        except ValueError:
            raise RegistryError(f"registry {self.base}: {url} did not answer JSON") from None

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (registry-local name, e.g. ``library/python``), all pages."""
        scope = f"repository:{repo}:pull"
        url: str | None = f"{self.base}/v2/{repo}/tags/list?n={PAGE}"
        tags: list[str] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return tags
            data, hdrs = self.get_json(url, scope)
            page = data.get("tags") if isinstance(data, dict) else None
            if page is not None and not (isinstance(page, list) and all(isinstance(t, str) for t in page)):
                raise RegistryError(f"registry {self.base}: {repo}: not a tag list")
            tags += page or []
            url = next_link(hdrs.get("Link") if hdrs else None, url)
        raise RegistryError(f"registry {self.base}: {repo}: more than {MAX_PAGES} pages of tags")
