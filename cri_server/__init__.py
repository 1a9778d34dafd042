"""pycri daemon: the CRI v1 gRPC server, its configuration, state and streaming."""

from pycri_common.version import __version__

__all__ = ["__version__"]
