from __future__ import annotations

from pathlib import Path

import pytest

from cri_server import config
from cri_server.cli import build_parser, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path) -> None:
    cfg = config.load(tmp_path / "absent.toml")
    assert cfg.socket == "/run/pycri/pycri.sock"
    assert cfg.root == "/var/lib/pycri"
    assert cfg.state == "/run/pycri"
    assert cfg.cgroup_driver == "cgroupfs"
    assert cfg.streaming.address == "127.0.0.1:0"


def test_precedence_defaults_file_dropins_flags(tmp_path: Path) -> None:
    main = write(tmp_path / "pycri.toml", 'log_level = "warning"\nroot = "/srv/a"\n'
                 '[streaming]\naddress = "127.0.0.1:1000"\ntoken_ttl_seconds = 5\n')
    write(tmp_path / "pycri.d" / "20-b.toml", 'root = "/srv/b"\n[streaming]\naddress = "127.0.0.1:2000"\n')
    write(tmp_path / "pycri.d" / "10-a.toml", 'root = "/srv/ignored-by-order"\nstate = "/run/x"\n')
    write(tmp_path / "pycri.d" / "not-toml.txt", "garbage = [")
    cfg = config.load(main, {"streaming": {"address": "127.0.0.1:3000"}})
    assert cfg.log_level == "warning"                 # file
    assert cfg.root == "/srv/b"                       # later drop-in wins
    assert cfg.state == "/run/x"                      # earlier drop-in kept where not overridden
    assert cfg.streaming.address == "127.0.0.1:3000"  # flag wins
    assert cfg.streaming.token_ttl_seconds == 5.0     # table merged key by key
    assert cfg.socket == "/run/pycri/pycri.sock"      # default


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    main = write(tmp_path / "pycri.toml", "")
    bad = write(tmp_path / "pycri.d" / "50-bad.toml", "[cni]\nconfdir = '/x'\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(main)
    assert "cni.confdir" in str(err.value) and str(bad) in str(err.value)


def test_unknown_top_level_table(tmp_path: Path) -> None:
    main = write(tmp_path / "pycri.toml", "[plugins]\nx = 1\n")
    with pytest.raises(config.ConfigError, match=r"unknown key 'plugins'.*pycri.toml"):
        config.load(main)


@pytest.mark.parametrize("text,match", [
    ('log_level = "loud"', "log_level"),
    ("log_level = 3", "'log_level'.*must be a string"),
    ('cgroup_driver = "cgroupv3"', "cgroup_driver"),
    ('root = "relative/dir"', "root must be an absolute path"),
    ('[streaming]\naddress = "nohostport"', "streaming.address"),
    ('[streaming]\ntoken_ttl_seconds = -1', "token_ttl_seconds"),
    ('[streaming]\ntoken_ttl_seconds = true', "must be a number"),
    ('[cni]\nbin_dirs = "/usr/lib/cni"', "'cni.bin_dirs'.*must be a list"),
    ('[cni]\nbin_dirs = ["/a", 3]', r"cni.bin_dirs\[1\]"),
    ('[cni]\ndefault_subnet = "10.0.0.0/33"', "default_subnet"),
    ('[registry]\nmax_concurrent_downloads = 0', "max_concurrent_downloads"),
    ("socket = ", "not valid TOML"),
    ('[runtime]\nshim_python = "/nonexistent/python3"', "runtime.shim_python"),
])
def test_bad_values_are_rejected(tmp_path: Path, text: str, match: str) -> None:
    main = write(tmp_path / "pycri.toml", text + "\n")
    with pytest.raises(config.ConfigError, match=match):
        config.load(main)


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", require_file=True)


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = config.load(tmp_path / "absent.toml", {"cni": {"bin_dirs": ["/x", "/y"]},
                                                 "log_format": "json"})
    out = write(tmp_path / "rt" / "pycri.toml", config.to_toml(cfg))
    assert config.load(out) == cfg


def test_cli_flags_override_files(tmp_path: Path) -> None:
    main = write(tmp_path / "pycri.toml", 'socket = "/run/a.sock"\nlog_level = "error"\n')
    args = build_parser().parse_args(["serve", "--config", str(main), "--socket", "/run/b.sock",
                                      "--streaming-address", "127.0.0.1:9999",
                                      "--cgroup-driver", "systemd"])
    cfg = load_config(args)
    assert cfg.socket == "/run/b.sock"
    assert cfg.log_level == "error"
    assert cfg.streaming.address == "127.0.0.1:9999"
    assert cfg.cgroup_driver == "systemd"
