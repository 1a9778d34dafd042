"""GetContainerEvents: a server stream of container lifecycle events.

Every subscriber gets every event published after it subscribed, in order; one that falls
more than cri_server.events.QUEUE_LIMIT events behind is dropped with UNAVAILABLE (kubelet
then subscribes again and relists) instead of slowing anyone down.
"""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from cri_server.events import SubscriberTooSlow
from cri_server.services import Services
from proto import api_pb2
from pycri_common.errors import Unavailable


class EventRpcs:
    svc: Services

    def GetContainerEvents(self, request: api_pb2.GetEventsRequest, context: grpc.ServicerContext
                           ) -> Iterator[api_pb2.ContainerEventResponse]:
        subscription = self.svc.events.subscribe(is_active=context.is_active)
        try:
            # headers go out once the subscription exists: a client that waits for them
            # (call.initial_metadata()) knows that no later event will be missed
            context.send_initial_metadata(())
            yield from subscription
        except SubscriberTooSlow as exc:
            raise Unavailable(f"event stream closed: {exc}; subscribe again") from None
        finally:
            subscription.close()
