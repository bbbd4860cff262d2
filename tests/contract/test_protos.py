"""The committed stubs are exactly what protos/generate.py makes from the committed protos,
and the protos follow the stable-interface rules (versioned packages, VerbNoun RPCs with
their own request/response messages)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def _generator():
    spec = importlib.util.spec_from_file_location("generate", PROTOS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    fresh = _generator().generate(tmp_path)
    assert fresh, "the generator wrote nothing"
    stale = []
    for path in fresh:
        relative = path.relative_to(tmp_path)
        committed = PROTOS / relative
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(relative))
    generated_here = {p.relative_to(PROTOS) for p in PROTOS.rglob("*_pb2*.py*")}
    extra = sorted(str(p) for p in generated_here - {p.relative_to(tmp_path) for p in fresh})
    assert not stale and not extra, f"stale stubs {stale}, stubs without a proto {extra}: run `make protos`"


def test_every_service_proto_is_versioned_and_rpcs_have_their_own_messages():
    from shelfwise.events.v1 import events_pb2
    from shelfwise.gateway.v1 import gateway_pb2
    from shelfwise.query_understanding.v1 import query_understanding_pb2
    from shelfwise.ranking.v1 import ranking_pb2
    from shelfwise.retrieval.v1 import retrieval_pb2

    for module, service in (
        (gateway_pb2, "gateway"),
        (query_understanding_pb2, "query_understanding"),
        (retrieval_pb2, "retrieval"),
        (ranking_pb2, "ranking"),
        (events_pb2, "events"),
    ):
        assert module.DESCRIPTOR.package == f"shelfwise.{service}.v1"
        assert module.DESCRIPTOR.name == f"shelfwise/{service}/v1/{service}.proto"
        for svc in module.DESCRIPTOR.services_by_name.values():
            assert svc.name.endswith("Service")
            for method in svc.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
