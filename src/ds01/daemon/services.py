"""The services the daemon serves, built once by the composition root (``daemon.main``).

Route modules (``daemon/routes/``) receive a :class:`Services` and use nothing else of the daemon
but ``daemon.http``; nothing in it is patched in after construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from ds01.services.containers import ContainerService
from ds01.services.context import Context
from ds01.services.gpus import GpuService
from ds01.services.images import ImageService
from ds01.services.lifecycle import LifecycleService
from ds01.services.status import StatusService
from ds01.services.usage import UsageService


@dataclass(frozen=True)
class Services:
    ctx: Context
    images: ImageService
    containers: ContainerService
    gpu: GpuService
    lifecycle: LifecycleService
    status: StatusService
    usage: UsageService
