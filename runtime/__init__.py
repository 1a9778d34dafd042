"""pycri: runtime."""
