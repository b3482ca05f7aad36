"""The services the daemon serves, built once by the composition root (``daemon.main``).

Route modules (``daemon/routes/``) receive a :class:`Services` and use nothing else of the daemon
but ``daemon.http``; nothing in it is patched in after construction.
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

from ds01.services.charts import ChartService
from ds01.services.config_admin import ConfigAdmin
from ds01.services.containers import ContainerService
from ds01.services.disk import DiskService
from ds01.services.context import Context
from ds01.services.gpus import GpuService
from ds01.services.images import ImageService
from ds01.services.jobs import JobService
from ds01.services.lifecycle import LifecycleService
from ds01.services.ssh import SshService
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
    jobs: JobService
    # reload and limits edits (issue 16); None where no config file backs the daemon (unit tests)
    config_admin: ConfigAdmin | None = None
    # container-ssh (issue 13); None in unit tests that build Services by hand
    ssh: SshService | None = None
    # workspace/image bytes and max_workspace_bytes (issue 16); None in unit tests
    disk: DiskService | None = None
    # the status page's and dashboard's charts (issue 16); None in unit tests that build Services by hand
    charts: ChartService | None = None
    # cluster mode (issue 18): ClusterService over the Slurm placement (inactive on one server)
    cluster: Any = None
