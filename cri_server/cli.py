"""The `pycri` command: serve, config, version, image."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from cri_server import __version__
from cri_server import config as config_mod


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file (default /etc/pycri/pycri.toml; "
                   "drop-ins from <name>.d/*.toml next to it)")
    p.add_argument("--socket", help="gRPC unix socket (default /run/pycri/pycri.sock)")
    p.add_argument("--root", help="persistent data dir (default /var/lib/pycri)")
    p.add_argument("--state", help="runtime state dir (default /run/pycri)")
    p.add_argument("--log-level", choices=config_mod.LOG_LEVELS)
    p.add_argument("--log-format", choices=config_mod.LOG_FORMATS)
    p.add_argument("--streaming-address", help="host:port of the exec/attach/port-forward server")
    p.add_argument("--cgroup-driver", choices=config_mod.CGROUP_DRIVERS)
    p.add_argument("--cni-conf-dir", help="CNI network config dir (default /etc/cni/net.d)")
    p.add_argument("--metrics-address", help="host:port of the Prometheus endpoint (off when empty)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flat = {"socket": args.socket, "root": args.root, "state": args.state,
            "log_level": args.log_level, "log_format": args.log_format,
            "cgroup_driver": args.cgroup_driver}
    out: dict[str, Any] = {k: v for k, v in flat.items() if v is not None}
    if args.streaming_address is not None:
        out["streaming"] = {"address": args.streaming_address}
    if args.cni_conf_dir is not None:
        out["cni"] = {"conf_dir": args.cni_conf_dir}
    if args.metrics_address is not None:
        out["metrics"] = {"address": args.metrics_address}
    return out


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, _overrides(args), require_file=args.config is not None)


def cmd_serve(args: argparse.Namespace) -> int:
    from cri_server import logsetup
    from cri_server.locking import AlreadyRunning
    from cri_server.server import Daemon

    cfg = load_config(args)
    logsetup.configure(cfg.log_level, cfg.log_format)
    try:
        Daemon(cfg).run()
    except AlreadyRunning as exc:
        print(f"pycri: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.to_toml(load_config(args)))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from cri_server.rpc_runtime_info import RUNTIME_API_VERSION
    print(f"pycri {__version__} (CRI {RUNTIME_API_VERSION})")
    return 0


def _config(args: argparse.Namespace) -> config_mod.Config:
    """The pycri config, from --config/--root."""
    overrides = {"root": args.root} if args.root else {}
    return config_mod.load(args.config, overrides, require_file=args.config is not None)


def _image_store(cfg: config_mod.Config) -> tuple[Path, dict[str, Any]]:
    """The image store's directory and the registry settings."""
    from cri_server.paths import Paths

    return Paths(Path(cfg.root), Path(cfg.state)).images_dir, dataclasses.asdict(cfg.registry)


def cmd_image_import(args: argparse.Namespace) -> int:
    from imageservice.cli import run_import
    cfg = _config(args)
    return run_import(*_image_store(cfg), args.file, args.name or "",
                      discard_unpacked_layers=cfg.images.discard_unpacked_layers)


def cmd_image_ls(args: argparse.Namespace) -> int:
    from imageservice.cli import run_ls
    return run_ls(*_image_store(_config(args)), quiet=args.quiet)


def _add_image_commands(sub: Any) -> None:
    """`image import` and `image ls`: work on the image store without a daemon."""
    image = sub.add_parser("image", help="manage the local image store")
    isub = image.add_subparsers(dest="image_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="pycri config file (for the root dir)")
        p.add_argument("--root", help="pycri root dir (default /var/lib/pycri)")

    imp = isub.add_parser("import", help="load a docker-archive or OCI-layout tarball")
    imp.add_argument("file", help="the tarball (docker save / skopeo oci-archive)")
    imp.add_argument("--name", help="reference to tag the image with when the archive "
                     "names none (or only a tag)")
    common(imp)
    imp.set_defaults(func=cmd_image_import)
    ls = isub.add_parser("ls", help="list images")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    common(ls)
    ls.set_defaults(func=cmd_image_ls)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycri", description="A Kubernetes CRI v1 runtime.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    _add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)
    conf = sub.add_parser("config", help="print the effective configuration as TOML")
    _add_config_flags(conf)
    conf.set_defaults(func=cmd_config)
    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=cmd_version)
    _add_image_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except config_mod.ConfigError as exc:
        print(f"pycri: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
