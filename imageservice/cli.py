"""`pycri image import FILE` and `pycri image ls`, working on the store in images_dir.

cri_server.cli parses the command line and resolves the store's directory and the
registry settings from the pycri config; these functions take those plain values.
They open the image store directly (no daemon needed, so they work on air-gapped
machines before the daemon runs); next to a running daemon they skip recovery and
garbage collection, which stay the daemon's job.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from imageservice.manager import ImageManager
from pycri_common.errors import PycriError


def _manager(images_dir: Path, registry_config: dict[str, Any],
             discard_unpacked_layers: bool = True) -> ImageManager:
    return ImageManager(images_dir, registry_config=registry_config, exclusive=False,
                        discard_unpacked_layers=discard_unpacked_layers)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n}"


def _fail(doing: str, e: PycriError) -> int:
    """One line on stderr (never a traceback) and exit status 1."""
    message = " ".join(str(e).split())
    print(f"pycri: {doing}: {message}", file=sys.stderr)
    return 1


def run_import(images_dir: Path, registry_config: dict[str, Any], file: str, name: str = "",
               discard_unpacked_layers: bool = True) -> int:
    """Imports the tarball FILE; prints one line per image; 1 (with the reason on stderr) on
    failure. discard_unpacked_layers: the daemon's images setting (the imported layer blobs
    are then collected once unpacked)."""
    from imageservice.importer import import_archive

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            pct = 100 * done / total if total else 100
            sys.stderr.write(f"\rimporting {file}: {_human(done)} / {_human(total)} "
                             f"({pct:.0f}%)")
            sys.stderr.flush()

    try:
        mgr = _manager(images_dir, registry_config, discard_unpacked_layers)
        try:
            images = import_archive(mgr, file, name=name, progress=progress)
        finally:
            mgr.close()
    except PycriError as e:
        if tty:
            sys.stderr.write("\n")
        return _fail("import failed", e)
    if tty:
        sys.stderr.write("\n")
    for img in images:
        print(f"{img.image_id} {' '.join(img.names) or '<untagged>'}")
    return 0


def run_ls(images_dir: Path, registry_config: dict[str, Any], quiet: bool = False) -> int:
    """Prints the stored images as a table (or only their IDs)."""
    try:
        mgr = _manager(images_dir, registry_config)
        try:
            recs = mgr.list_images()
        finally:
            mgr.close()
    except PycriError as e:
        return _fail("listing images failed", e)
    if quiet:
        for r in recs:
            print(r.id)
        return 0
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for r in recs:
        tags = r.repo_tags or [""]
        for t in tags:
            repo, _, tag = t.rpartition(":") if t else ("", "", "")
            if not t:
                repo = r.repo_digests[0].split("@")[0] if r.repo_digests else "<none>"
                tag = "<none>"
            rows.append((repo, tag, r.id[7:20], _human(r.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
