"""The List budget: why per-object limits do not suffice, and that with the budget no List
response can pass the 16 MiB CRI clients accept at the node sizes kubelet supports."""
from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cri_server import labels, list_budget
from cri_server.list_budget import ListBudget
from proto import api_pb2
from pycri_common.errors import InvalidArgument, ResourceExhausted

MAX_PODS = 250               # kubelet's maxPods: 110 by default, ~250 on big nodes
CONTAINERS_PER_POD = 10      # several containers, and an exited one of each kept for its logs
MIB = 1024 * 1024


def _fill(msg: Message, skip: tuple[str, ...] = ()) -> Message:
    """Every scalar at its widest encoding, strings of 256 characters, two of each repeated
    message (network interfaces...); maps and the fields in `skip` stay empty."""
    for f in msg.DESCRIPTOR.fields:
        if f.name in skip or (f.message_type and f.message_type.GetOptions().map_entry):
            continue
        repeated = bool(f.is_repeated)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            for _ in range(2 if repeated else 1):
                sub = getattr(msg, f.name).add() if repeated else getattr(msg, f.name)
                _fill(sub, skip)
            continue
        value: object = {FieldDescriptor.TYPE_STRING: "s" * 256, FieldDescriptor.TYPE_BOOL: True,
                         FieldDescriptor.TYPE_ENUM: 1, FieldDescriptor.TYPE_DOUBLE: 1e300,
                         FieldDescriptor.TYPE_FLOAT: 1e30, FieldDescriptor.TYPE_INT64: -1,
                         FieldDescriptor.TYPE_INT32: -1, FieldDescriptor.TYPE_UINT32: 2**32 - 1,
                         }.get(f.type, 2**64 - 1)
        if repeated:
            getattr(msg, f.name).extend([value, value])
        else:
            setattr(msg, f.name, value)
    return msg


def _stats_overhead(msg: Message) -> int:
    """What a stats item adds to its (budgeted) attributes."""
    return _fill(msg, skip=("attributes", "containers", "windows")).ByteSize() + 16


def test_per_object_limits_alone_let_a_list_pass_16_mib() -> None:
    biggest = api_pb2.PodSandbox(
        id="0" * 64, labels={"k": "v" * (labels.MAX_LABELS_BYTES - 1)},
        annotations={"a": "x" * (labels.MAX_ANNOTATIONS_BYTES - 1)}).ByteSize()
    assert 110 * biggest > 50 * MIB and MAX_PODS * biggest > 120 * MIB


def test_with_the_budget_every_list_stays_under_what_clients_accept() -> None:
    items = MAX_PODS * (1 + CONTAINERS_PER_POD)
    per_item = max(_stats_overhead(api_pb2.PodSandboxStats()),
                   _stats_overhead(api_pb2.ContainerStats()))
    # ListPodSandboxStats: every pod and container once (attributes, within the budget),
    # each with its numbers and a few bytes of framing
    worst = list_budget.LIST_BUDGET + items * per_item
    assert per_item < 1536
    assert worst < list_budget.CLIENT_MAX_MESSAGE, (worst / MIB, per_item)


def test_admit_refuses_what_would_exceed_the_budget() -> None:
    used = [900]
    budget = ListBudget(lambda: used[0], limit=1000)
    with budget.admit("pod sandbox a", 100):
        pass
    with pytest.raises(ResourceExhausted, match=r"pod sandbox b: .* already carry 900 bytes"):
        with budget.admit("pod sandbox b", 101):
            pass


def test_concurrent_creates_count_while_in_flight() -> None:
    budget = ListBudget(lambda: 0, limit=1000)
    with budget.admit("container a", 600):
        with pytest.raises(ResourceExhausted):
            with budget.admit("container b", 600):
                pass
    with budget.admit("container b", 600):   # released once a is done
        pass


def test_one_oversized_object_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="at most 1048576"):
        with ListBudget(lambda: 0).admit("pod sandbox x", list_budget.MAX_ITEM + 1):
            pass
