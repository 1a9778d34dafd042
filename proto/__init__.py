"""The CRI v1 schema (package runtime.v1) and its generated Python stubs.

Import the messages as ``from proto import api_pb2`` and the service stubs as
``from proto import api_pb2_grpc``.
"""
