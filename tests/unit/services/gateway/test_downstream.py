"""How the gateway reads a downstream service's failure: a refusal for load (RESOURCE_EXHAUSTED
from the service's admission control) becomes `Overloaded` carrying the service's retry hint,
which the gateway passes on to its own caller; it is no outage."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import DeadlineExceeded, Overloaded, Unavailable
from services.common.server import RETRY_PUSHBACK_KEY, STATUS_FOR_ERROR, retry_hint, status_for
from services.gateway.downstream import domain_error


def rpc_error(code: grpc.StatusCode, details: str, trailing=()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_a_refusal_for_load_is_overloaded_with_the_services_hint():
    error = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Retrieve: this server is at its limit of 3 concurrent calls",
                      [(RETRY_PUSHBACK_KEY, "37")])
    mapped = domain_error("retrieval", error)
    assert isinstance(mapped, Overloaded) and isinstance(mapped, Unavailable)  # every degradation path applies
    assert mapped.retry_after_ms == 37
    assert mapped.message == "retrieval: Retrieve: this server is at its limit of 3 concurrent calls"
    assert status_for(mapped) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_hint(mapped) == ((RETRY_PUSHBACK_KEY, "37"),)


@pytest.mark.parametrize("trailing", [(), [(RETRY_PUSHBACK_KEY, "soon")]])
def test_a_refusal_without_a_readable_hint_gets_a_default_one(trailing):
    mapped = domain_error("ranking", rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailing))
    assert isinstance(mapped, Overloaded) and mapped.retry_after_ms == 100


def test_outages_and_timeouts_stay_what_they_were():
    assert type(domain_error("ranking", rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))) is Unavailable
    assert isinstance(domain_error("ranking", rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")), DeadlineExceeded)
    assert retry_hint(Unavailable("down")) == ()
    assert STATUS_FOR_ERROR[Overloaded] == grpc.StatusCode.RESOURCE_EXHAUSTED
