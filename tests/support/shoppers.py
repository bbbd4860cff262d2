"""What a shopper does through the gateway in a test: search, then interact with some results."""

from __future__ import annotations

import uuid

from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2


async def interact(gateway, user_id: str, query: str, category: str, count: int, kind=events_pb2.INTERACTION_TYPE_CLICK):
    """Searches as the shopper and tracks `count` interactions with results of `category`."""
    search = await gateway.Search(gateway_pb2.SearchRequest(query=query, user_id=user_id, page_size=20))
    chosen = [r for r in search.results if r.product.category == category][:count]
    assert len(chosen) == count, [r.product.category for r in search.results]
    await gateway.Track(
        gateway_pb2.TrackRequest(
            interactions=[
                events_pb2.Interaction(
                    event_id=uuid.uuid4().hex,
                    type=kind,
                    request_id=search.request_id,
                    product_id=result.product.id,
                    position=result.position,
                    user_id=user_id,
                )
                for result in chosen
            ]
        )
    )
    return [r.product.id for r in chosen]
