"""GetContainerEvents: a server stream of container lifecycle events."""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from proto import api_pb2
from cri_server.errors import Unavailable
from cri_server.events import SubscriberTooSlow
from cri_server.services import Services


class EventRpcs:
    svc: Services

    def GetContainerEvents(self, request: api_pb2.GetEventsRequest, context: grpc.ServicerContext
                           ) -> Iterator[api_pb2.ContainerEventResponse]:
        subscription = self.svc.events.subscribe(is_active=context.is_active)
        try:
            yield from subscription
        except SubscriberTooSlow as exc:
            raise Unavailable(f"event stream closed: {exc}; subscribe again") from None
        finally:
            subscription.close()
