"""What every build gets from the admin's ``build`` config, as build args: the CA bundle
(``DS01_CA_PEM``, cut to fit, see :func:`ca_for_build`), the pip index URLs and the proxy.
Build args are never stored in an image layer (the generated RUN steps write the CA to a temp
file and remove it), and there is no way for a user to add others."""

from __future__ import annotations

import os
import re

from ds01.errors import DS01Error
from ds01.policy.environment import index_and_proxy_env

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


class BuildArgs:
    """The build args for the current ``build`` config; the CA bundle is read (and cut) again
    only when its file changes. One per daemon."""

    def __init__(self) -> None:
        self._known_cas: set[str] | None = None
        self._ca_cache: tuple[tuple, str] | None = None
        self._wheelhouse = None  # images.wheelhouse.Wheelhouse, started by the first build needing it

    def __call__(self, b) -> dict[str, str]:
        """``b``: the ``build`` section of the config (``models.config.BuildConfig``)."""
        args: dict[str, str] = {}
        if b.ca_bundle:
            pem = self._ca_pem(b.ca_bundle)
            if pem:
                args["DS01_CA_PEM"] = pem
        args.update(index_and_proxy_env(b))
        if getattr(b, "wheelhouse", None):
            url = self._wheelhouse_url(b)
            if url:
                args["PIP_FIND_LINKS"] = url
                host = url.split("//", 1)[1].split(":", 1)[0]
                args["PIP_TRUSTED_HOST"] = host  # plain HTTP on the host's own bridge address
                for k in ("NO_PROXY", "no_proxy"):  # the proxy must not be asked for it
                    if b.http_proxy:
                        args[k] = host
        return args

    def _wheelhouse_url(self, b) -> str | None:
        from ds01.images.wheelhouse import Wheelhouse

        if self._wheelhouse is None:
            self._wheelhouse = Wheelhouse()
        return self._wheelhouse.url(b.wheelhouse, b.wheelhouse_address, b.wheelhouse_port)

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
