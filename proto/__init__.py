"""The CRI v1 schema (package runtime.v1), NRI's schema (nri.pkg.api.v1alpha1), ttrpc's
envelopes, and their generated Python stubs.

Import the CRI messages as ``from proto import api_pb2``, its service stubs as
``from proto import api_pb2_grpc``, NRI's messages as ``from proto import nri_api_pb2`` and
ttrpc's as ``from proto import ttrpc_pb2``.
"""
