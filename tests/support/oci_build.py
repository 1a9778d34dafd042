"""Build OCI / Docker images in memory and push them to a registry (tests, critest, bench).

Building blocks, from the bottom up::

    from tests.support import oci_build as ob

    entries = [ob.Dir("etc"), ob.File("etc/motd", b"hi\\n", mode=0o644),
               ob.Symlink("bin/sh", "busybox"), ob.Whiteout("etc/old"), ob.Opaque("var/cache")]
    entries += ob.tree_from_dir("/some/host/dir", prefix="opt/app")
    layer = ob.Layer.build(entries, compression="gzip")       # "gzip" | "zstd" | "none"
    image = ob.Image([layer], ob.Config(env=["PATH=/bin"], cmd=["sh"], user="1000:1000"),
                     fmt="oci")                                 # "oci" | "docker"
    ob.push_image(registry.url, "library/busybox", "latest", image)   # returns manifest digest
    ob.push_index(registry.url, "multi", "latest", [(image, "linux", "amd64"), ...])

``busybox_rootfs_files()`` returns the entries of a minimal, working busybox root
filesystem made from the host's dynamically linked ``/bin/busybox`` and the shared
libraries ``ldd`` lists, with /etc/passwd and /etc/group (root 0, nobody 65534,
www-data 33, user 1000) and applet symlinks (sh, ls, cat, id, sleep, …).
``write_oci_archive`` and ``write_docker_archive`` write tarballs as
``skopeo copy oci-archive:`` and ``docker save`` produce them.

Everything is deterministic (fixed mtimes) unless the caller passes other values,
so the same inputs give the same digests.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import ssl
import stat
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import zstandard

FIXED_MTIME = 1_700_000_000

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def host_arch() -> str:
    """The OCI architecture name of this machine (amd64, arm64, …)."""
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- tar entries -------------------------------------------------------------

@dataclass
class Entry:
    """One tar member. kind: file, dir, symlink, hardlink, char, block, fifo."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    mtime: int = FIXED_MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)
    uname: str = ""
    gname: str = ""

    def tarinfo(self) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.path)
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname, ti.gname = self.uname, self.gname
        ti.mtime = self.mtime
        ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                   "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE,
                   "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[self.kind]
        ti.linkname = self.linkname
        ti.devmajor, ti.devminor = self.devmajor, self.devminor
        ti.size = len(self.data) if self.kind == "file" else 0
        if self.xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                              for k, v in self.xattrs.items()}
        return ti


def File(path: str, data: bytes | str = b"", mode: int = 0o644, **kw: object) -> Entry:
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", data=data, mode=mode, **kw)  # type: ignore[arg-type]


def Dir(path: str, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(path, "dir", mode=mode, **kw)  # type: ignore[arg-type]


def Symlink(path: str, target: str, **kw: object) -> Entry:
    return Entry(path, "symlink", linkname=target, mode=0o777, **kw)  # type: ignore[arg-type]


def Hardlink(path: str, target: str, **kw: object) -> Entry:
    return Entry(path, "hardlink", linkname=target, **kw)  # type: ignore[arg-type]


def Device(path: str, kind: str = "char", major: int = 1, minor: int = 3,
           mode: int = 0o666, **kw: object) -> Entry:
    return Entry(path, kind, devmajor=major, devminor=minor, mode=mode, **kw)  # type: ignore[arg-type]


def Whiteout(path: str) -> Entry:
    """An OCI whiteout: deletes `path` of lower layers."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return File(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"", mode=0o600)


def Opaque(dir_path: str) -> Entry:
    """An OCI opaque whiteout: hides everything lower layers had in dir_path."""
    return File(f"{dir_path.rstrip('/')}/.wh..wh..opq", b"", mode=0o600)


def tree_from_dir(host_dir: str | os.PathLike[str], prefix: str = "",
                  uid: int | None = 0, gid: int | None = 0) -> list[Entry]:
    """Entries for every file under host_dir, placed under prefix in the layer.

    Ownership becomes uid/gid (None keeps the host's); modes and symlinks are kept.
    """
    root = Path(host_dir)
    out: list[Entry] = []
    prefix = prefix.strip("/")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirnames, *sorted(filenames)]:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            path = f"{prefix}/{rel}" if prefix else rel
            st = os.lstat(full)
            own = {"uid": st.st_uid if uid is None else uid,
                   "gid": st.st_gid if gid is None else gid}
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out.append(Symlink(path, os.readlink(full), **own))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Dir(path, mode=mode, **own))
            elif stat.S_ISREG(st.st_mode):
                out.append(File(path, Path(full).read_bytes(), mode=mode, **own))
    return out


def parent_dirs(entries: Iterable[Entry], mode: int = 0o755) -> list[Entry]:
    """Dir entries for every parent directory the entries need and do not list."""
    have = {e.path.strip("/") for e in entries if e.kind == "dir"}
    need: list[str] = []
    for e in entries:
        parts = e.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in have and p not in need:
                need.append(p)
    return [Dir(p, mode=mode) for p in need]


def tar_bytes(entries: Iterable[Entry], add_parents: bool = True) -> bytes:
    """An uncompressed PAX tar of the entries in the given order."""
    entries = list(entries)
    if add_parents:
        entries = parent_dirs(entries) + entries
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = e.tarinfo()
            tf.addfile(ti, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


# -- layers, configs, images -------------------------------------------------

@dataclass
class Layer:
    blob: bytes          # as stored in the registry (compressed or not)
    diff_id: str         # digest of the uncompressed tar
    compression: str     # gzip | zstd | none

    @classmethod
    def build(cls, entries: Iterable[Entry], compression: str = "gzip",
              add_parents: bool = True) -> Layer:
        return cls.from_tar(tar_bytes(entries, add_parents), compression)

    @classmethod
    def from_tar(cls, raw: bytes, compression: str = "gzip") -> Layer:
        if compression == "gzip":
            blob = gzip.compress(raw, compresslevel=6, mtime=0)
        elif compression == "zstd":
            blob = zstandard.ZstdCompressor(level=3).compress(raw)
        elif compression == "none":
            blob = raw
        else:
            raise ValueError(f"unknown compression {compression!r}")
        return cls(blob, sha256_digest(raw), compression)

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    def media_type(self, fmt: str) -> str:
        if fmt == "docker":
            if self.compression == "gzip":
                return MT_DOCKER_LAYER_GZIP
            if self.compression == "none":
                return "application/vnd.docker.image.rootfs.diff.tar"
        return MT_OCI_LAYER + {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[self.compression]


@dataclass
class Config:
    """The parts of an image config a runtime reads."""

    env: list[str] = field(default_factory=lambda: [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str = ""
    working_dir: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    os: str = "linux"
    architecture: str = field(default_factory=host_arch)
    variant: str = ""

    def to_dict(self, diff_ids: list[str]) -> dict:
        cfg: dict[str, object] = {"Env": self.env}
        if self.entrypoint is not None:
            cfg["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            cfg["Cmd"] = self.cmd
        if self.user:
            cfg["User"] = self.user
        if self.working_dir:
            cfg["WorkingDir"] = self.working_dir
        if self.stop_signal:
            cfg["StopSignal"] = self.stop_signal
        if self.volumes:
            cfg["Volumes"] = {v: {} for v in self.volumes}
        if self.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            cfg["Labels"] = self.labels
        out: dict[str, object] = {
            "created": "2023-11-14T22:13:20Z",
            "architecture": self.architecture, "os": self.os, "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "pycri tests"}
                        for _ in diff_ids],
        }
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass
class Image:
    layers: list[Layer]
    config: Config = field(default_factory=Config)
    fmt: str = "oci"                       # oci | docker
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def config_bytes(self) -> bytes:
        return json.dumps(self.config.to_dict([la.diff_id for la in self.layers]),
                          sort_keys=True).encode()

    @property
    def config_digest(self) -> str:
        """The image ID a runtime reports."""
        return sha256_digest(self.config_bytes)

    @property
    def manifest_media_type(self) -> str:
        return MT_DOCKER_MANIFEST if self.fmt == "docker" else MT_OCI_MANIFEST

    @property
    def manifest_bytes(self) -> bytes:
        cfg = self.config_bytes
        m: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": self.manifest_media_type,
            "config": {"mediaType": MT_DOCKER_CONFIG if self.fmt == "docker" else MT_OCI_CONFIG,
                       "digest": sha256_digest(cfg), "size": len(cfg)},
            "layers": [{"mediaType": la.media_type(self.fmt), "digest": la.digest,
                        "size": len(la.blob)} for la in self.layers],
        }
        if self.annotations:
            m["annotations"] = self.annotations
        return json.dumps(m, indent=2).encode()

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    def blobs(self) -> dict[str, bytes]:
        """Every blob but the manifest, by digest."""
        out = {la.digest: la.blob for la in self.layers}
        out[self.config_digest] = self.config_bytes
        return out

    @property
    def size(self) -> int:
        """Bytes of config + layers as stored (what ListImages reports)."""
        return len(self.config_bytes) + sum(len(la.blob) for la in self.layers)


def index_bytes(entries: list[tuple[Image, str, str]], fmt: str = "oci",
                variant: str = "") -> bytes:
    """An OCI index (fmt oci) or Docker manifest list (fmt docker) of (image, os, arch)."""
    manifests = []
    for img, os_name, arch in entries:
        plat = {"os": os_name, "architecture": arch}
        if variant:
            plat["variant"] = variant
        manifests.append({"mediaType": img.manifest_media_type, "digest": img.manifest_digest,
                          "size": len(img.manifest_bytes), "platform": plat})
    return json.dumps({"schemaVersion": 2,
                       "mediaType": MT_DOCKER_LIST if fmt == "docker" else MT_OCI_INDEX,
                       "manifests": manifests}, indent=2).encode()


# -- pushing -----------------------------------------------------------------

class Pusher:
    """Pushes blobs and manifests over the registry HTTP API v2 (basic auth optional)."""

    def __init__(self, registry_url: str, auth: tuple[str, str] | None = None,
                 ca_file: str | None = None) -> None:
        self.base = registry_url.rstrip("/")
        verify: bool | ssl.SSLContext = (ssl.create_default_context(cafile=ca_file)
                                         if ca_file else True)
        self.client = httpx.Client(auth=auth, timeout=30.0, follow_redirects=True, verify=verify)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        r = self.client.head(f"{self.base}/v2/{repo}/blobs/{digest}")
        if r.status_code == 200:
            return digest
        r = self.client.post(f"{self.base}/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = self.base + loc
        sep = "&" if "?" in loc else "?"
        r = self.client.put(f"{loc}{sep}digest={digest}", content=data,
                            headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
        return digest

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        r = self.client.put(f"{self.base}/v2/{repo}/manifests/{reference}", content=data,
                            headers={"Content-Type": media_type})
        if r.status_code >= 400:
            raise RuntimeError(f"manifest push failed: {r.status_code} {r.text}")
        return sha256_digest(data)

    def push_image(self, repo: str, tag: str | None, image: Image) -> str:
        for data in image.blobs().values():
            self.push_blob(repo, data)
        ref = tag or image.manifest_digest
        return self.push_manifest(repo, ref, image.manifest_bytes, image.manifest_media_type)

    def push_index(self, repo: str, tag: str, entries: list[tuple[Image, str, str]],
                   fmt: str = "oci") -> str:
        for img, _, _ in entries:
            self.push_image(repo, None, img)
        data = index_bytes(entries, fmt)
        return self.push_manifest(repo, tag, data, MT_DOCKER_LIST if fmt == "docker"
                                  else MT_OCI_INDEX)


def push_image(registry_url: str, repo: str, tag: str | None, image: Image,
               auth: tuple[str, str] | None = None) -> str:
    """Pushes image as repo:tag; returns the manifest digest."""
    with Pusher(registry_url, auth) as p:
        return p.push_image(repo, tag, image)


def push_index(registry_url: str, repo: str, tag: str, entries: list[tuple[Image, str, str]],
               fmt: str = "oci", auth: tuple[str, str] | None = None) -> str:
    """Pushes each image by digest and an index/manifest list as repo:tag; returns its digest."""
    with Pusher(registry_url, auth) as p:
        return p.push_index(repo, tag, entries, fmt)


# -- archives (for `pycri image import`) --------------------------------------

def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = FIXED_MTIME
    ti.mode = 0o644
    tf.addfile(ti, io.BytesIO(data))


def write_oci_archive(path: str | os.PathLike[str], image: Image, ref_name: str = "") -> None:
    """An OCI image layout tarball (like `skopeo copy … oci-archive:path:ref`)."""
    with tarfile.open(path, "w") as tf:
        _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        blobs = dict(image.blobs())
        blobs[image.manifest_digest] = image.manifest_bytes
        for digest, data in blobs.items():
            _add_bytes(tf, "blobs/" + digest.replace(":", "/"), data)
        desc: dict[str, object] = {"mediaType": image.manifest_media_type,
                                   "digest": image.manifest_digest,
                                   "size": len(image.manifest_bytes)}
        if ref_name:
            desc["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
        _add_bytes(tf, "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [desc]}).encode())


def write_docker_archive(path: str | os.PathLike[str], image: Image,
                         repo_tags: list[str]) -> None:
    """A `docker save` tarball: manifest.json, <config>.json, <n>/layer.tar (uncompressed)."""
    with tarfile.open(path, "w") as tf:
        cfg_name = image.config_digest.split(":")[1] + ".json"
        _add_bytes(tf, cfg_name, image.config_bytes)
        layer_names = []
        for i, la in enumerate(image.layers):
            raw = la.blob
            if la.compression == "gzip":
                raw = gzip.decompress(raw)
            elif la.compression == "zstd":
                raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            name = f"{i:03d}/layer.tar"
            _add_bytes(tf, name, raw)
            layer_names.append(name)
        _add_bytes(tf, "manifest.json", json.dumps(
            [{"Config": cfg_name, "RepoTags": repo_tags, "Layers": layer_names}]).encode())


# -- busybox -----------------------------------------------------------------

BUSYBOX_APPLETS = (
    "sh", "ash", "ls", "cat", "id", "sleep", "echo", "env", "stty", "httpd", "nc", "true",
    "false", "ps", "top", "kill", "mkdir", "rm", "rmdir", "mv", "cp", "ln", "touch", "chmod",
    "chown", "grep", "sed", "awk", "head", "tail", "wc", "sort", "uniq", "tr", "cut", "date",
    "hostname", "mount", "umount", "whoami", "printf", "test", "[", "[[", "find", "xargs",
    "wget", "ip", "ifconfig", "ping", "dd", "df", "du", "stat", "readlink", "realpath",
    "basename", "dirname", "uname", "tee", "yes", "seq", "nslookup", "free", "pwd", "sync",
    "vi", "less", "more", "expr", "timeout", "nohup", "usleep", "watch", "md5sum",
    "sha256sum", "tar", "gzip", "gunzip", "zcat", "pidof", "pgrep", "pkill", "nproc",
    "dmesg", "hexdump", "od", "which", "netstat", "telnet", "nice", "renice", "chroot",
    "su", "login", "ln", "mknod", "setsid", "logger", "diff", "patch", "tac", "rev",
)


def _ldd_libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].split("(")[0].strip()
            if target:
                libs.append(target)
        elif line.startswith("/"):
            libs.append(line.split("(")[0].strip())
    return libs


def busybox_rootfs_files(applets: Iterable[str] = BUSYBOX_APPLETS,
                         busybox: str = "/bin/busybox",
                         extra_users: Iterable[tuple[str, int, int]] = ()) -> list[Entry]:
    """A minimal busybox root filesystem (entries for Layer.build).

    The dynamically linked busybox goes to /bin/busybox with every library ldd
    lists at its real path (e.g. /lib/x86_64-linux-gnu/libc.so.6 and
    /lib64/ld-linux-x86-64.so.2); each applet is a symlink /bin/<applet> -> busybox.
    /etc/passwd and /etc/group know root (0), www-data (33), user (1000),
    nobody (65534) and extra_users (name, uid, gid).
    """
    real = os.path.realpath(busybox)
    entries: list[Entry] = [Dir(d) for d in ("bin", "etc", "tmp", "root", "home", "var",
                                            "dev", "proc", "sys", "usr", "usr/bin", "lib")]
    entries[entries.index(next(e for e in entries if e.path == "tmp"))].mode = 0o1777
    entries.append(File("bin/busybox", Path(real).read_bytes(), mode=0o755))
    seen: set[str] = set()
    for lib in _ldd_libs(real):
        path = lib.lstrip("/")
        if path in seen:
            continue
        seen.add(path)
        entries.append(File(path, Path(os.path.realpath(lib)).read_bytes(), mode=0o755))
    for name in dict.fromkeys(applets):
        if name != "busybox":
            entries.append(Symlink(f"bin/{name}", "busybox"))
    users = [("root", 0, 0, "/root", "/bin/sh"), ("www-data", 33, 33, "/var/www", "/bin/sh"),
             ("user", 1000, 1000, "/home/user", "/bin/sh"),
             ("nobody", 65534, 65534, "/nonexistent", "/bin/false")]
    users += [(n, u, g, f"/home/{n}", "/bin/sh") for n, u, g in extra_users]
    passwd = "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, u, g, h, s in users)
    groups = [("root", 0), ("www-data", 33), ("user", 1000), ("nogroup", 65534)]
    groups += [(n, g) for n, _, g in extra_users]
    group = "".join(f"{n}:x:{g}:\n" for n, g in groups)
    entries += [File("etc/passwd", passwd), File("etc/group", group),
                File("etc/hostname", "busybox\n"), Dir("home/user", uid=1000, gid=1000)]
    return entries
