"""Linux capability names and numbers (linux/capability.h), and name normalisation.

Pure data + helpers: no syscalls, safe to import anywhere (daemon, shim, init).
"""
from __future__ import annotations

#: Capability names in kernel number order (index == capability number).
CAPABILITY_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

CAPABILITY_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(CAPABILITY_NAMES)}


def last_cap(proc_path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open(proc_path) as f:
            return min(int(f.read().strip()), len(CAPABILITY_NAMES) - 1)
    except (OSError, ValueError):
        return len(CAPABILITY_NAMES) - 1


def normalize_capability(name: str) -> str | None:
    """'chown', 'CHOWN', 'CAP_CHOWN' -> 'CAP_CHOWN'; 'ALL' -> 'ALL'; unknown -> None."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    return upper if upper in CAPABILITY_NUMBERS else None


def capabilities_to_mask(names: list[str]) -> int:
    """['CAP_CHOWN', 'CAP_KILL'] -> bit mask. Names must already be normalised."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def mask_to_capabilities(mask: int) -> list[str]:
    """Bit mask (e.g. CapEff from /proc/self/status) -> names in number order."""
    return [name for i, name in enumerate(CAPABILITY_NAMES) if mask & (1 << i)]
