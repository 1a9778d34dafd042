"""The streaming server: exec, attach and port-forward over SPDY/3.1 and WebSocket.

Modules: spdy (framing state machine), spdy_session (threads + sockets), websocket
(k8s channel multiplexing), k8s_protocols (names, negotiation, status messages),
remotecommand (copying a session), exec_attach / portforward (protocol handlers),
tokens (single-use URLs), server (HTTP + StreamingServer), backend (the interface
the daemon implements), netns_socket (connect inside a pod's network namespace).
"""
