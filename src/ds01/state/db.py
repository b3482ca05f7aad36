"""SQLite state (WAL): the truth for ownership records, allocations, queue and history.

Docker is the truth for what exists; on start the daemon reconciles the two (services/reconcile).
``Store`` is the one facade callers use (``ctx.store.<method>``), composed of one part per noun;
the schema and migrations are in ``state.schema``, the connection, lock and ``transaction()``
(``BEGIN IMMEDIATE``, yielding an opaque ``Tx``) in ``state.base``. Every SQL statement DS01 runs
lives in this package.
"""

from __future__ import annotations

from ds01.state.allocations import AllocationsStore
from ds01.state.base import Tx
from ds01.state.containers import LIVE, ContainerRecord, ContainersStore
from ds01.state.events import EventsStore
from ds01.state.exemptions import ExemptionsStore
from ds01.state.jobs import JobsStore
from ds01.state.lifecycle import LifecycleStore
from ds01.state.queue import QueueStore
from ds01.state.schema import SCHEMA
from ds01.state.stamps import StampsStore
from ds01.state.usage import UsageStore

__all__ = ["LIVE", "SCHEMA", "ContainerRecord", "Store", "Tx"]


class Store(ContainersStore, AllocationsStore, QueueStore, EventsStore, LifecycleStore, ExemptionsStore,
            UsageStore, StampsStore, JobsStore):
    """The state DB. ``Store(path)`` opens (and creates or migrates) it."""
