"""The daemon's parts, built once at start-up (cri_server.wiring) and handed to every servicer."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cri_server.config import Config
from cri_server.paths import Paths

if TYPE_CHECKING:  # types only: importing this module (servicers, `pycri version`) stays cheap
    from cni import CniManager
    from cri_server.cdi.registry import Registry
    from cri_server.containers.manager import ContainerManager
    from cri_server.events import EventBus
    from cri_server.metrics import Metrics
    from cri_server.nri.service import NriService
    from cri_server.sandboxes.manager import SandboxManager
    from cri_server.sandboxes.zygote_link import ZygoteLink
    from cri_server.stats.service import StatsService
    from cri_server.store import Store
    from cri_server.streaming.server import StreamingServer
    from imageservice.manager import ImageManager


@dataclass
class Services:
    config: Config
    paths: Paths
    store: Store              # the sqlite store shared by sandboxes and containers
    images: ImageManager
    cni: CniManager
    zygote: ZygoteLink        # the link to the zygote that forks shims
    events: EventBus
    sandboxes: SandboxManager
    containers: ContainerManager
    streaming: StreamingServer
    stats: StatsService
    metrics: Metrics | None   # None when config.metrics.address is empty
    cdi: Registry | None = None  # CDI spec registry (also held by the container manager)
    nri: NriService | None = None  # None when nri.enable is false
    started_at: float = field(default_factory=time.time)
    # Set by UpdateRuntimeConfig; reported back and handed to CNI.
    pod_cidr: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
