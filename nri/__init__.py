"""NRI's wire protocols, without sockets of their own where it matters.

- ``nri.ttrpc``: containerd's ttrpc (frames, client and server stream state machines,
  request routing), sans-I/O.
- ``nri.mux``: NRI's multiplexer (two logical connections over one socket), sans-I/O.
- ``nri.endpoint``: the one module that touches a socket: it drives both over a connected
  unix socket with a reader thread and a handler thread.

The runtime side of NRI (plugins, events, adjustments) is ``cri_server.nri``; the test
plugin is ``tests/support/nri_plugin.py``. This package imports only the standard library,
``proto`` (the generated messages) and ``pycri_common``.
"""
