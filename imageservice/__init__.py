"""pycri: imageservice."""
