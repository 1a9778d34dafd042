"""Resource usage of containers and pods, read from cgroups, upper dirs and /proc.

`sources.py` describes what a stats reading needs to know about a container or
a pod; `collector.py` turns cgroup files into CRI stats messages; `cadvisor.py`
the same readings into the cAdvisor-style metrics of ListPodSandboxMetrics.
"""
