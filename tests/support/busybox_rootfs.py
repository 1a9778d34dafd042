"""A minimal rootfs from Debian's dynamically linked /bin/busybox plus the libraries it needs.

Used as the (read-only) lower layer by the container-init tests. Dynamically linked on purpose:
applets run as real processes (exec), so masked paths, seccomp and caps are really exercised.
"""
from __future__ import annotations

import os
import shutil
import subprocess

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
alice:x:1000:1000:alice:/home/alice:/bin/sh
bob:x:1001:1001:bob:/home/bob:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
www-data:x:33:
alice:x:1000:
bob:x:1001:
staff:x:50:alice,bob
audio:x:29:alice
"""


def _libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def build_busybox_rootfs(dest: str) -> str:
    """Fill `dest` with busybox, its applet symlinks, libs and /etc files. Returns dest."""
    os.makedirs(dest, exist_ok=True)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/alice", "mnt", "var"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(dest, "bin/busybox"))
    for lib in _libs("/bin/busybox"):
        real = os.path.realpath(lib)
        target = os.path.join(dest, lib.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(real, target)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(dest, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc/passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(dest, "etc/group"), "w") as f:
        f.write(GROUP)
    return dest
