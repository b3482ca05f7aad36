"""Per-user Docker networks (``ContainerSpec.network``, decided by ``policy.isolation``): mixed
into :class:`ds01.runtime.docker.DockerBackend`.

A network is created on a container create that names it, labelled with the ``ds01.labels``
selector of its instance and user, and removed by :meth:`prune_networks` once no container (in
any state: a created container is attached only when it starts) is on it. Both happen under one
lock per network, so a prune never removes a network between a create's check and its use.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ds01 import labels
from ds01.errors import RuntimeFailure

log = logging.getLogger("ds01d")

# the engine's own networks: never created, used or removed as a user's network
ENGINE_NETWORKS = frozenset({"bridge", "host", "none", "default"})


class DockerNetworks:
    api: Any
    _err: Any

    def _net_lock(self, name: str) -> threading.Lock:
        locks = self.__dict__.setdefault("_net_locks", {})
        guard = self.__dict__.setdefault("_net_locks_guard", threading.Lock())
        with guard:
            return locks.setdefault(name, threading.Lock())

    def _find_network(self, name: str) -> dict | None:
        # the engine's name filter matches substrings: compare exactly
        for n in self.api.networks(names=[name]):
            if n.get("Name") == name:
                return n
        return None

    def ensure_network(self, name: str, selector: dict[str, str]) -> None:
        """The bridge network ``name`` exists, carrying ``selector`` (instance + uid labels).
        Refuses a same-named network that is not this instance's user's (fail closed: it was not
        made by this daemon, so its other members are unknown). Call under :meth:`_net_lock`."""
        if name in ENGINE_NETWORKS:
            raise RuntimeFailure(f"refusing to put a user container on the engine's {name!r} network")
        try:
            found = self._find_network(name)
            if found is None:
                self.api.create_network(name, driver="bridge", labels=dict(selector), check_duplicate=True)
                return
        except self._err.APIError as e:
            text = str(getattr(e, "explanation", None) or e)
            if "address pool" in text or "non-overlapping" in text:
                raise RuntimeFailure(f"creating the user network {name} failed: {text}",
                                     "the engine ran out of subnets; an admin sets 'default-address-pools' "
                                     "in /etc/docker/daemon.json (e.g. base 10.200.0.0/16, size 24)") from None
            if e.status_code == 409:  # made meanwhile by another daemon thread: check it below
                found = self._find_network(name)
            else:
                raise RuntimeFailure(f"creating the user network {name} failed: {text}",
                                     "if this persists, ask an admin to check the Docker engine") from None
        have = (found or {}).get("Labels") or {}
        if found is None or any(have.get(k) != v for k, v in selector.items()):
            raise RuntimeFailure(f"a network named {name} exists that DS01 did not make for this user",
                                 "an admin removes it ('docker network rm') or renames it")

    def prune_networks(self, selector: dict[str, str]) -> int:
        """Remove every network carrying all of ``selector`` (``labels.managed(instance[, uid])``)
        that no container is on; how many were removed. Housekeeping: logs, never raises."""
        removed = 0
        try:
            nets = self.api.networks(filters={"label": [f"{k}={v}" for k, v in selector.items()]})
        except Exception:
            log.exception("listing user networks failed")
            return 0
        for n in nets:
            name = n.get("Name", "")
            have = n.get("Labels") or {}
            if name in ENGINE_NETWORKS or have.get(labels.MANAGED) != "true" or \
                    any(have.get(k) != v for k, v in selector.items()):
                continue
            with self._net_lock(name):
                try:
                    # by name: a created container's network has no id until it starts
                    if self.api.containers(all=True, filters={"network": [name]}):
                        continue  # someone's container (running, stopped or just created) is on it
                    self.api.remove_network(n["Id"])
                    removed += 1
                except self._err.NotFound:
                    pass
                except Exception as e:  # e.g. an endpoint left over: kept, tried again later
                    log.warning("could not remove user network %s: %s", name, e)
        return removed
