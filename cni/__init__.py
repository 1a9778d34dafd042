"""pycri: cni."""
