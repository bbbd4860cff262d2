"""Server reflection under both of its service names, v1 and v1alpha.

grpcio-reflection ships only `grpc.reflection.v1alpha.ServerReflection`, but clients that ask
v1 first (grpcurl 1.9 and later, Postman) get UNIMPLEMENTED from a server without v1. The two
versions' messages are wire-identical, so the one servicer answers both: v1 is registered as a
generic handler whose method (de)serialises with the v1alpha message classes.
"""

from __future__ import annotations

from typing import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Registers reflection v1 and v1alpha on `server`, listing `service_names` and both
    reflection services."""
    servicer = reflection.aio.ReflectionServicer((*service_names, *SERVICE_NAMES))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in SERVICE_NAMES:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )
