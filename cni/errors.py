"""CNI-specific errors, each also one of the project's classes in pycri_common.errors.

A plugin failure carries the plugin type, the CNI command, and the CNI error
code/msg/details the plugin reported (spec "Error" result), so the daemon can
log them and the gRPC client sees a message naming the plugin.
"""
from __future__ import annotations

from pycri_common import errors

# CNI spec well-known error codes (spec section "Error").
CODE_INCOMPATIBLE_VERSION = 1
CODE_UNSUPPORTED_FIELD = 2
CODE_CONTAINER_UNKNOWN = 3
CODE_INVALID_ENV = 4
CODE_IO_FAILURE = 5
CODE_DECODE_FAILURE = 6
CODE_INVALID_NETWORK_CONFIG = 7
CODE_TRY_AGAIN_LATER = 11

# Codes that mean "the node's CNI set-up is wrong", not a transient failure.
_CONFIG_CODES = {
    CODE_INCOMPATIBLE_VERSION,
    CODE_UNSUPPORTED_FIELD,
    CODE_INVALID_ENV,
    CODE_DECODE_FAILURE,
    CODE_INVALID_NETWORK_CONFIG,
}


class CniError(errors.PycriError):
    """Base of every error raised by the cni package (maps to INTERNAL unless mixed)."""


class CniConfigError(CniError, errors.FailedPrecondition):
    """No usable network configuration, or a plugin binary is missing."""


class CniPluginError(CniError):
    """A plugin exited non-zero or printed something that is not a valid result."""

    def __init__(
        self,
        plugin: str,
        command: str,
        network: str,
        msg: str,
        cni_code: int | None = None,
        details: str = "",
        stderr: str = "",
    ) -> None:
        self.plugin = plugin
        self.command = command
        self.network = network
        self.cni_msg = msg
        self.cni_code = cni_code
        self.details = details
        self.stderr = stderr
        text = f"CNI plugin {plugin!r} failed on {command} for network {network!r}: {msg}"
        if cni_code is not None:
            text += f" (CNI error code {cni_code})"
        if details:
            text += f"; details: {details}"
        if stderr and stderr not in text:
            text += f"; stderr: {stderr}"
        super().__init__(text)


class CniPluginConfigError(CniPluginError, errors.FailedPrecondition):
    """The plugin rejected its configuration or version (codes 1, 2, 4, 6, 7)."""


class CniPluginUnavailable(CniPluginError, errors.Unavailable):
    """The plugin asked to be retried later (code 11)."""


class CniPluginTimeout(CniPluginError, errors.DeadlineExceeded):
    """The plugin did not finish within the per-plugin timeout and was killed."""


class CniTeardownError(CniError, errors.Unavailable):
    """One or more plugins failed on DEL; the cached state is kept for a retry."""

    def __init__(self, message: str, failures: list[CniPluginError]) -> None:
        self.failures = failures
        super().__init__(message)


def plugin_error(
    plugin: str,
    command: str,
    network: str,
    msg: str,
    cni_code: int | None = None,
    details: str = "",
    stderr: str = "",
) -> CniPluginError:
    """The most specific CniPluginError subclass for a CNI error code."""
    cls: type[CniPluginError] = CniPluginError
    if cni_code in _CONFIG_CODES:
        cls = CniPluginConfigError
    elif cni_code == CODE_TRY_AGAIN_LATER:
        cls = CniPluginUnavailable
    return cls(plugin, command, network, msg, cni_code, details, stderr)
