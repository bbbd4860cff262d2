"""The committed stubs are exactly what protos/generate.py makes from the committed protos,
and the protos follow the stable-interface rules (versioned packages, VerbNoun RPCs with
their own request/response messages, the fields the servers require documented as such)."""

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


def test_every_field_the_servers_require_says_so_in_the_proto():
    """The fields the gateway's requests require (tests/integration/test_api_contract.py checks
    their errors) are documented "Required." in the protos."""
    root = PROTOS / "shelfwise"
    required = {
        "gateway/v1/gateway.proto": ["string query = 1;", "RecommendMode mode = 1;", "string product_id = 2;",
                                     "string category = 3;", "repeated string cart_product_ids = 11;",
                                     "repeated shelfwise.events.v1.Interaction interactions = 1;"],
        "events/v1/events.proto": ["string event_id = 1;", "InteractionType type = 2;", "string request_id = 3;",
                                   "string product_id = 4;", "int32 position = 5;"],
    }
    for path, fields in required.items():
        lines = (root / path).read_text().splitlines()
        for declaration in fields:
            index = next(i for i, line in enumerate(lines) if line.strip() == declaration)
            comment = []
            for line in reversed(lines[:index]):
                if not line.strip().startswith("//"):
                    break
                comment.append(line)
            assert any("Required" in line for line in comment), (path, declaration)
