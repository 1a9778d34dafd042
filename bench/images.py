"""The images both runtimes use in the bench, built here and pushed to a loopback registry."""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import oci_build as ob

PAUSE_SOURCE = Path(__file__).resolve().parents[1] / "critest" / "image_files" / "pause.c"
BIG_LAYERS = 5
BIG_LAYER_BYTES = 10 * 1024 * 1024


@dataclass
class BenchImages:
    host: str                 # 127.0.0.1:PORT
    pause: str
    busybox: str
    big: list[str]            # one distinct ~50 MB image per cold-pull round


def _static_pause() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pause"
        subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(PAUSE_SOURCE)], check=True)
        return out.read_bytes()


def build_and_push(registry_url: str, host: str, cold_pull_rounds: int) -> BenchImages:
    pause = ob.Image([ob.Layer.build([ob.File("pause", _static_pause(), mode=0o755)])],
                     ob.Config(entrypoint=["/pause"]))
    ob.push_image(registry_url, "pause", "bench", pause)
    busybox = ob.Image([ob.Layer.build(ob.busybox_rootfs_files())],
                       ob.Config(cmd=["sh"]))
    ob.push_image(registry_url, "busybox", "bench", busybox)
    big = []
    for n in range(cold_pull_rounds):
        layers = [ob.Layer.build([ob.File(f"data/{n}-{i}.bin", os.urandom(BIG_LAYER_BYTES))])
                  for i in range(BIG_LAYERS)]
        ob.push_image(registry_url, "big", f"r{n}", ob.Image(layers, ob.Config(cmd=["true"])))
        big.append(f"{host}/big:r{n}")
    return BenchImages(host=host, pause=f"{host}/pause:bench", busybox=f"{host}/busybox:bench",
                       big=big)
