"""pycri daemon: the CRI v1 gRPC server, its configuration, state and streaming."""

__version__ = "0.1.0"
