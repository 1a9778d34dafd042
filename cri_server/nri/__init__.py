"""The runtime side of NRI (Node Resource Interface): plugins watch and adjust pods and
containers.

- ``hooks``: the thin interface the pod and container managers call at their lifecycle
  points (``NriHooks``), and ``NO_NRI`` when NRI is disabled.
- ``service``: the NRI socket, plugin registration, configuration, synchronization, and
  events to every subscribed plugin in index order.
- ``plugin``: one connected plugin (over ``nri.endpoint``).
- ``adjust``: plugin adjustments merged (conflicts named) and applied to a container spec.
- ``convert``: pod and container records as NRI messages.
"""
