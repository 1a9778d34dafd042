"""Foundations shared by every layer (daemon, runtime, images, CNI); imports nothing of the project."""
