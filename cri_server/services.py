"""The daemon's parts, built once at start-up and handed to every servicer."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cri_server.config import Config
from cri_server.paths import Paths


@dataclass
class Services:
    config: Config
    paths: Paths
    started_at: float = field(default_factory=time.time)
    # Set by UpdateRuntimeConfig; reported back and handed to CNI.
    pod_cidr: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Domain managers; None until the part is wired in.
    images: Any = None
    cni: Any = None
    sandboxes: Any = None
    containers: Any = None
    streaming: Any = None
    events: Any = None
    metrics: Any = None
    store: Any = None      # the sqlite store shared by sandboxes and containers
    zygote: Any = None     # the link to the zygote that forks shims
    stats: Any = None
    list_budget: Any = None  # what List responses may carry (cri_server.list_budget)
