"""`pycri image import FILE` and `pycri image ls`, working on the store under the root dir.

cri_server/cli.py calls ``register_cli(subparsers)``. These commands open
the image store directly (no daemon needed, so they work on air-gapped machines
before the daemon runs); next to a running daemon they skip recovery and garbage
collection, which stay the daemon's job.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from pycri_common.errors import PycriError


def _manager(args: argparse.Namespace) -> Any:
    from cri_server import config as config_mod
    from cri_server.paths import Paths
    from imageservice.manager import ImageManager

    overrides = {"root": args.root} if args.root else {}
    cfg = config_mod.load(args.config, overrides, require_file=args.config is not None)
    paths = Paths(Path(cfg.root), Path(cfg.state))
    return ImageManager(paths.images_dir, registry_config=dataclasses.asdict(cfg.registry),
                        exclusive=False)


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


def cmd_import(args: argparse.Namespace) -> int:
    from imageservice.importer import import_archive

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            pct = 100 * done / total if total else 100
            sys.stderr.write(f"\rimporting {args.file}: {_human(done)} / {_human(total)} "
                             f"({pct:.0f}%)")
            sys.stderr.flush()

    try:
        mgr = _manager(args)
        try:
            images = import_archive(mgr, args.file, name=args.name or "", progress=progress)
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


def cmd_ls(args: argparse.Namespace) -> int:
    try:
        mgr = _manager(args)
        try:
            recs = mgr.list_images()
        finally:
            mgr.close()
    except PycriError as e:
        return _fail("listing images failed", e)
    if args.quiet:
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


def register_cli(subparsers: Any) -> None:
    """Adds `image import` and `image ls` to the pycri command's subparsers."""
    image = subparsers.add_parser("image", help="manage the local image store")
    isub = image.add_subparsers(dest="image_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="pycri config file (for the root dir)")
        p.add_argument("--root", help="pycri root dir (default /var/lib/pycri)")

    imp = isub.add_parser("import", help="load a docker-archive or OCI-layout tarball")
    imp.add_argument("file", help="the tarball (docker save / skopeo oci-archive)")
    imp.add_argument("--name", help="reference to tag the image with when the archive "
                     "names none (or only a tag)")
    common(imp)
    imp.set_defaults(func=cmd_import)
    ls = isub.add_parser("ls", help="list images")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    common(ls)
    ls.set_defaults(func=cmd_ls)
