"""ImageManager: the image store the daemon and the CLI use (pull, status, list, remove, GC).

Construction (the daemon)::

    ImageManager(root_dir=<root>/images,
                 registry_config={"config_path": "/etc/pycri/certs.d",
                                  "stall_timeout_seconds": 60.0,
                                  "max_concurrent_downloads": 3,
                                  "auth_file": "/root/.docker/config.json"},
                 is_image_in_use=lambda image_id: bool,       # containers supply it
                 runtime_handlers=lambda: ["", "pycri"],      # optional
                 pinned_images=["registry.k8s.io/pause:3.9"]) # optional

``registry_config`` keys (all optional; also accepted: ``stall_timeout`` as an alias,
``hosts`` = inline hosts.toml tables by registry host, see registry_hosts).

On disk under root_dir: content/blobs/<algo>/<hex>, ingest/ (partial downloads),
snapshots/<n>/fs (unpacked layers), images.db (sqlite). Construction recovers
from a crash: partial downloads and half-made snapshots are deleted, and blobs
and snapshots no image uses are collected.

For the container code: ``resolve(ref)`` -> ImageRecord | None (by ID, short ID,
tag or digest), ``image_config(image_id)`` -> ImageConfig (env, entrypoint, cmd,
working_dir, user, stop_signal, volumes, labels), ``rootfs_layers(image_id)`` ->
lower dirs for overlayfs, top layer first.

Concurrency: pulls of the same reference share one pull; pulls of different images
share the unpacking of common layers (and, when layer blobs are kept, the downloads of
common blobs: discarded, a blob shared by two chains is downloaded for each); an in-flight
pull holds a lease on what it fetched so a concurrent garbage collection never
removes it. A failed or cancelled pull removes everything it created that no
image uses. An import in another process (`pycri image import`) holds
``importing()`` (a shared lock on gc.lock) and collection skips its round meanwhile.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageservice.auth import Credentials, DockerConfig
from imageservice.content_store import ContentStore, SharedWork
from imageservice.gc_lock import GcLock
from imageservice.layer_stream import unpack_download
from imageservice.manifest import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    Descriptor,
    ImageConfig,
    Manifest,
    follow_index,
    parse_manifest,
)
from imageservice.metadata import ImageDB, ImageRecord
from imageservice.reference import Reference, looks_like_image_id, parse
from imageservice.registry_client import RegistryClient
from imageservice.registry_hosts import RegistryHosts
from imageservice.snapshots import SnapshotStore, chain_ids
from imageservice.unpack import UnpackResult, unpack_layer
from pycri_common.errors import Cancelled, FailedPrecondition, InvalidArgument
from pycri_common.text import shorten

log = logging.getLogger(__name__)

_KNOWN_KEYS = {"config_path", "stall_timeout_seconds", "stall_timeout",
               "max_concurrent_downloads", "auth_file", "hosts"}
_HEX_PREFIX_RE = re.compile(r"^(?:sha256:)?([0-9a-f]{1,64})$")


@dataclass(frozen=True)
class FsUsage:
    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


class _Lease:
    """Names (blob digests, chain IDs) a running pull needs kept."""

    def __init__(self, manager: ImageManager) -> None:
        self.manager = manager
        self.keys: list[str] = []

    def add(self, *keys: str) -> None:
        with self.manager._gc_lock:
            self.manager._leases.update(keys)
            self.keys.extend(keys)

    def release(self) -> None:
        with self.manager._gc_lock:
            self.manager._leases.subtract(self.keys)
            self.manager._leases += Counter()   # drop zero counts
            self.keys.clear()


class ImageManager:
    def __init__(self, root_dir: str | Path, registry_config: dict[str, Any] | None = None,
                 is_image_in_use: Callable[[str], bool] | None = None,
                 runtime_handlers: Callable[[], Iterable[str]] | None = None,
                 pinned_images: Iterable[str] = (), exclusive: bool = True,
                 discard_unpacked_layers: bool = True) -> None:
        """exclusive=False (the CLI next to a running daemon): no start-up recovery and no
        garbage collection, which would race with the daemon's own pulls.
        discard_unpacked_layers: a layer's compressed blob is not kept once the layer is
        unpacked (a pulled layer's is never written; an imported one's is collected)."""
        cfg = dict(registry_config or {})
        unknown = set(cfg) - _KNOWN_KEYS
        if unknown:   # the daemon's config schema already rejects typos; keep going
            log.warning("registry config keys not used by the image service: %s",
                        sorted(unknown))
        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        stall = float(cfg.get("stall_timeout_seconds", cfg.get("stall_timeout", 60.0)))
        if stall <= 0:
            raise InvalidArgument("registry stall timeout must be positive")
        self.max_downloads = int(cfg.get("max_concurrent_downloads", 3))
        if self.max_downloads < 1:
            raise InvalidArgument("max_concurrent_downloads must be at least 1")
        self.hosts = RegistryHosts(str(cfg.get("config_path", "") or ""), cfg.get("hosts"))
        self.client = RegistryClient(self.hosts, DockerConfig(str(cfg.get("auth_file", "") or "")),
                                     stall_timeout=stall)
        self.db = ImageDB(self.root / "images.db")
        self.content = ContentStore(self.root)
        self.snapshots = SnapshotStore(self.root, self.db)
        self.discard_unpacked_layers = discard_unpacked_layers
        self.is_image_in_use = is_image_in_use or (lambda _id: False)
        self.runtime_handlers = runtime_handlers
        self.pinned = {str(parse(p)) for p in pinned_images}
        self._gc_lock = threading.RLock()
        self._gc_file_lock = GcLock(self.root)
        self._gc_skipped = False
        self._leases: Counter[str] = Counter()
        self._pulls = SharedWork()
        self._blob_work = SharedWork()
        self._snapshot_work = SharedWork()
        self.stats: Counter[str] = Counter()   # "blob_downloads", "bytes_downloaded", "pulls"
        self.exclusive = exclusive
        if exclusive:
            self.recover()

    # -- life cycle --------------------------------------------------------
    def recover(self) -> None:
        with self._gc_file_lock.collecting() as alone:
            if alone:
                self.content.clean_ingest()
                self.snapshots.recover()
            else:
                log.info("an image import is running: partial downloads and snapshots are "
                         "cleaned up at the next start")
        for rec in self.db.images():
            if any(t in self.pinned for t in rec.repo_tags) and not rec.pinned:
                self.db.set_pinned(rec.id, True)
        self.gc()

    def close(self) -> None:
        self.client.close()
        self.db.close()

    @contextmanager
    def _lease(self) -> Iterator[_Lease]:
        lease = _Lease(self)
        try:
            yield lease
        finally:
            lease.release()

    # -- lookups -----------------------------------------------------------
    def resolve(self, ref: str) -> ImageRecord | None:
        """The image a reference names: full ID, tag, digest reference or unique ID prefix.

        None when absent; InvalidArgument when ref is neither a reference nor an ID prefix,
        or when a short ID matches several images."""
        s = (ref or "").strip()
        if not s:
            raise InvalidArgument("image reference is empty")
        if looks_like_image_id(s):
            rec = self.db.image(s if s.startswith("sha256:") else "sha256:" + s)
            if rec is not None:
                return rec
        parsed: Reference | None = None
        parse_error: InvalidArgument | None = None
        try:
            parsed = parse(s)
        except InvalidArgument as e:
            parse_error = e
        if parsed is not None:
            rec = self.db.image_by_name(parsed.digested if parsed.digest else parsed.tagged)
            if rec is not None:
                return rec
        m = _HEX_PREFIX_RE.match(s)
        if m:
            ids = self.db.image_ids_with_prefix(m.group(1))
            if len(ids) == 1:
                return self.db.image(ids[0])
            if len(ids) > 1:
                raise InvalidArgument(f"image ID prefix {shorten(s)} is ambiguous: it matches "
                                      f"{len(ids)} images")
        if parse_error is not None and not m:
            raise parse_error
        return None

    def list_images(self, filter_ref: str = "") -> list[ImageRecord]:
        if filter_ref:
            rec = self.resolve(filter_ref)
            return [rec] if rec is not None else []
        return self.db.images()

    def image_config(self, image_id: str) -> ImageConfig:
        rec = self.db.image(image_id)
        if rec is None:
            from pycri_common.errors import NotFound
            raise NotFound(f"image {image_id} not found")
        return ImageConfig.parse(rec.config)

    def rootfs_layers(self, image_id: str) -> list[str]:
        """Overlay lower dirs of the image, top layer first."""
        rec = self.db.image(image_id)
        if rec is None:
            from pycri_common.errors import NotFound
            raise NotFound(f"image {image_id} not found")
        out = []
        for chain in reversed(rec.layers):
            snap = self.snapshots.get(chain)
            if snap is None:
                raise FailedPrecondition(f"layer {chain} of image {image_id} is missing; "
                                         "pull the image again")
            out.append(str(snap.path))
        return out

    def fs_info(self) -> FsUsage:
        snap_bytes, snap_inodes = self.snapshots.usage()
        blob_bytes, blob_inodes = self.content.usage()
        db_bytes = sum(p.stat().st_blocks * 512 for p in self.root.glob("images.db*"))
        return FsUsage(str(self.root), snap_bytes + blob_bytes + db_bytes,
                       snap_inodes + blob_inodes + 3, time.time_ns())

    # -- pull ----------------------------------------------------------------
    def _check_handler(self, handler: str) -> None:
        if not handler or self.runtime_handlers is None:
            return
        known = list(self.runtime_handlers())
        if handler not in known:
            raise InvalidArgument(f"unknown runtime handler {handler!r} "
                                  f"(known: {', '.join(h for h in known if h) or 'none'})")

    def pull(self, image: str, creds: Credentials | None = None, server_address: str = "",
             cancel: threading.Event | None = None, runtime_handler: str = "",
             annotations: dict[str, str] | None = None) -> str:
        """Pulls image (any reference form) and returns its image ID (config digest)."""
        ref = parse(image)
        self._check_handler(runtime_handler)
        cancel = cancel or threading.Event()
        key = f"{ref}\0{runtime_handler}"

        def work() -> str:
            return self._pull(ref, creds, server_address, cancel, runtime_handler,
                              dict(annotations or {}))
        return self._pulls.run(key, work, retry_on=(Cancelled,))

    def _pull(self, ref: Reference, creds: Credentials | None, server_address: str,
              cancel: threading.Event, runtime_handler: str,
              annotations: dict[str, str]) -> str:
        started = time.monotonic()
        self.stats["pulls"] += 1
        repo = self.client.repository(ref, creds, cancel, server_address)
        with self._lease() as lease:
            try:
                top_digest, mt, body = repo.get_manifest(ref.object)
                lease.add(top_digest)
                self.content.write_bytes(top_digest, body)
                blobs = [top_digest]
                manifest_digest, manifest_body = top_digest, body
                if mt in INDEX_TYPES:
                    def fetch(desc: Descriptor) -> tuple[str, str, bytes]:
                        digest, media_type, child = repo.get_manifest(desc.digest)
                        lease.add(digest)
                        self.content.write_bytes(digest, child)
                        blobs.append(digest)
                        return digest, media_type, child
                    manifest_digest, manifest_body, _ = follow_index(body, fetch)
                manifest = parse_manifest(manifest_body)
                names: list[tuple[str, str]] = []
                if ref.digest:
                    names.append((ref.digested, "digest"))
                else:
                    names += [(ref.tagged, "tag"), (f"{ref.name}@{top_digest}", "digest")]
                image_id = self._install(manifest, manifest_digest, blobs, names, lease,
                                         fetch=lambda d: repo.blob_chunks(d), cancel=cancel,
                                         runtime_handler=runtime_handler,
                                         annotations=annotations)
            except BaseException:
                cancel.set()
                raise
            finally:
                lease.release()
                if cancel.is_set():
                    self.gc()
        log.info("pulled %s as %s in %.2fs", ref, image_id, time.monotonic() - started)
        return image_id

    def _ensure_blob(self, desc: Descriptor, fetch: Callable[[Descriptor], Iterable[bytes]]
                     ) -> None:
        if self.content.exists(desc.digest):
            return

        def download() -> None:
            if self.content.exists(desc.digest):
                return
            self.stats["blob_downloads"] += 1
            self.content.ingest(desc.digest, desc.size, fetch(desc),
                                progress=lambda n: self.stats.update(bytes_downloaded=n))
        self._blob_work.run(desc.digest, download, retry_on=(Cancelled,))

    def _install(self, manifest: Manifest, manifest_digest: str, blobs: list[str],
                 names: list[tuple[str, str]], lease: _Lease,
                 fetch: Callable[[Descriptor], Iterable[bytes]], cancel: threading.Event,
                 runtime_handler: str = "", annotations: dict[str, str] | None = None) -> str:
        """Fetches config and layers (unless present), unpacks, and records the image."""
        if manifest.config.size > MAX_CONFIG_BYTES:   # it is read into memory and sqlite
            raise InvalidArgument(f"image config {manifest.config.digest} is "
                                  f"{manifest.config.size} bytes, larger than the "
                                  f"{MAX_CONFIG_BYTES} bytes allowed")
        lease.add(manifest.config.digest)
        self._ensure_blob(manifest.config, fetch)
        config_bytes = self.content.read(manifest.config.digest)
        config = ImageConfig.parse(config_bytes)
        diff_ids = config.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"image config lists {len(diff_ids)} layers but the manifest "
                                  f"has {len(manifest.layers)}")
        chains = chain_ids(diff_ids)
        lease.add(*chains, *(la.digest for la in manifest.layers))
        need = [i for i, c in enumerate(chains) if self.snapshots.get(c) is None]
        futures: dict[int, Future[None]] = {}

        def layer(i: int) -> None:
            # each layer is its own snapshot (it names its parent but does not need it to
            # exist), so layers download and unpack side by side, each in one pass
            if cancel.is_set():
                raise Cancelled("pull cancelled")
            self._unpack(manifest.layers[i], chains[i], chains[i - 1] if i else "", diff_ids[i],
                         fetch)
        if need:
            pool = ThreadPoolExecutor(max_workers=min(self.max_downloads, len(need)),
                                      thread_name_prefix="pycri-pull")
            try:
                for i in need:
                    futures[i] = pool.submit(layer, i)
                for i in need:
                    futures[i].result()
            except BaseException:
                cancel.set()
                for f in futures.values():
                    f.cancel()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        ann = dict(manifest.annotations)
        ann.update(annotations or {})
        rec = ImageRecord(
            id=manifest.config.digest, manifest_digest=manifest_digest, config=config_bytes,
            chain_id=chains[-1] if chains else "", pinned=any(n in self.pinned for n, _ in names),
            size=manifest.config.size + sum(la.size for la in manifest.layers),
            annotations=ann, runtime_handler=runtime_handler, created_at=time.time_ns(),
            layers=chains)
        self.db.put_image(rec, names, self._kept_blobs([*blobs, manifest.config.digest],
                                                       manifest))
        return rec.id

    def _kept_blobs(self, blobs: list[str], manifest: Manifest) -> list[str]:
        """The blobs an installed image keeps alive: blobs (index, manifest, config) and,
        unless they are discarded once unpacked, its layers'."""
        layers = [] if self.discard_unpacked_layers else [la.digest for la in manifest.layers]
        return list(dict.fromkeys([*blobs, *layers]))

    def _unpack(self, desc: Descriptor, chain_id: str, parent: str, diff_id: str,
                fetch: Callable[[Descriptor], Iterable[bytes]]) -> None:
        """Makes the snapshot chain_id of the layer desc: from the stored blob when it is
        there, else while downloading it (the blob is stored too unless layers are
        discarded once unpacked)."""
        def check(result: UnpackResult) -> None:
            if result.diff_id != diff_id:
                raise InvalidArgument(f"layer {desc.digest} unpacks to {result.diff_id} but the "
                                      f"image config says {diff_id}")

        def fill(dest: Path) -> None:
            if self.discard_unpacked_layers and not self.content.exists(desc.digest):
                # nothing to share: a pull of the same chain waits for this snapshot, and
                # another chain with the same blob downloads it again (as it would later)
                self._download_and_unpack(desc, dest, check, fetch, keep=False)
                return
            if not self.content.exists(desc.digest):
                # one download of a blob at a time; a pull waiting for another's download
                # of the same blob (for another chain) unpacks the stored blob after it
                def stream() -> Path | None:
                    return self._download_and_unpack(desc, dest, check, fetch)
                if self._blob_work.run(desc.digest, stream, retry_on=(Cancelled,)) == dest:
                    return
            with open(self.content.path(desc.digest), "rb") as f:
                check(unpack_layer(f, dest, layer=desc.digest))

        def create() -> None:
            self.snapshots.create(chain_id, parent, diff_id, fill)
        self._snapshot_work.run(chain_id, create)

    def _download_and_unpack(self, desc: Descriptor, dest: Path,
                             check: Callable[[UnpackResult], None],
                             fetch: Callable[[Descriptor], Iterable[bytes]],
                             keep: bool = True) -> Path | None:
        """Downloads the blob and unpacks it into dest in the same pass; dest when done,
        None when the blob turned out to be stored already. A kept blob is committed only
        after its digest and DiffID are checked (the caller commits the snapshot after);
        keep=False checks the blob's bytes as they pass and writes none of them."""
        if keep and self.content.exists(desc.digest):
            return None
        self.stats["blob_downloads"] += 1
        chunks = fetch(desc)

        def progress(n: int) -> None:
            self.stats.update(bytes_downloaded=n)
        try:
            with (self.content.writer(desc.digest, desc.size, progress) if keep
                  else self.content.check(desc.digest, desc.size, progress)) as blob:
                check(unpack_download(chunks, blob, dest, layer=desc.digest))
                blob.commit()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:   # a generator holding an HTTP response
                close()
        return dest

    # -- import ---------------------------------------------------------------
    def install_local(self, manifest_body: bytes, manifest_digest: str, names: list[str],
                      extra_blobs: Iterable[str] = (),
                      fetch: Callable[[Descriptor], Iterable[bytes]] | None = None) -> str:
        """Records an image whose blobs are already in the content store (import).

        names: references to tag it with (normalised here)."""
        manifest = parse_manifest(manifest_body)
        tag_names: list[tuple[str, str]] = []
        for n in names:
            r = parse(n)
            tag_names.append((r.digested, "digest") if r.digest else (r.tagged, "tag"))

        def missing(d: Descriptor) -> Iterable[bytes]:
            raise InvalidArgument(f"blob {d.digest} is missing from the archive")
        with self._lease() as lease:
            lease.add(manifest_digest, *extra_blobs)
            self.content.write_bytes(manifest_digest, manifest_body)
            try:
                return self._install(manifest, manifest_digest,
                                     [manifest_digest, *extra_blobs], tag_names, lease,
                                     fetch=fetch or missing, cancel=threading.Event())
            except BaseException:
                lease.release()
                self.gc()
                raise

    @contextmanager
    def importing(self) -> Iterator[None]:
        """Held for a whole import: no garbage collection in any process meanwhile (a round
        this manager skipped runs when the import ends)."""
        with self._gc_file_lock.importing():
            yield
        if self._gc_skipped:
            self.gc()

    # -- remove and garbage collection ------------------------------------------
    def remove(self, ref: str) -> bool:
        """Removes the image ref names with all its tags; False when there is none."""
        rec = self.resolve(ref)
        if rec is None:
            return False
        if self.is_image_in_use(rec.id):
            raise FailedPrecondition(f"image {ref} ({rec.id}) is used by a container; "
                                     "remove the container first")
        self.db.delete_image(rec.id)
        self.gc()
        return True

    def gc(self) -> None:
        """Deletes snapshots and blobs that no image and no running pull uses."""
        if not self.exclusive:
            return
        with self._gc_lock, self._gc_file_lock.collecting() as alone:
            self._gc_skipped = not alone
            if not alone:
                log.info("an image import is running: garbage collection skipped")
                return
            leased = set(self._leases)
            used_chains = self.db.referenced_chain_ids() | leased
            for chain, _ in self.db.snapshot_numbers():
                if chain not in used_chains:
                    self.snapshots.remove(chain)
            used_blobs = self.db.referenced_blobs() | leased
            for digest in self.content.all_digests():
                if digest not in used_blobs:
                    self.content.delete(digest)

    # -- presentation helpers ------------------------------------------------------
    def verbose_info(self, rec: ImageRecord) -> dict[str, str]:
        """ImageStatus verbose `info`: {"info": JSON like containerd's}."""
        snaps = [self.snapshots.get(c) for c in rec.layers]
        info = {
            "chainID": rec.chain_id,
            "manifestDigest": rec.manifest_digest,
            "imageSpec": json.loads(rec.config),
            "snapshots": [str(s.path) if s else "" for s in snaps],
            "pinned": rec.pinned,
            "runtimeHandler": rec.runtime_handler,
        }
        return {"info": json.dumps(info)}
