"""Experiments through the real gateway: a gateway started with an experiments file (next to the
session's other four real servers) serves each shopper their sticky arm's policies, records the
arm on every impression, serves the lexical arm lexically, and interleaves two arms with the
contributing arm of every position logged and clicks credited to it."""

from __future__ import annotations

import json
import uuid

import pytest
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.channels import create_channel
from services.events.config import DEVELOPMENT_USER_ID_KEY
from services.events.pseudonyms import UserIdPseudonyms
from services.gateway.experiments import ExperimentConfigError, parse_experiments

SPLIT = {
    "experiments": [{
        "name": "lex-vs-full",
        "control": "bm25",
        "arms": [
            {"name": "bm25", "retrieval": "lexical", "ranking": "retrieval", "query_understanding": False},
            {"name": "full"},
        ],
    }]
}
INTERLEAVED = {
    "experiments": [{
        "name": "il",
        "interleaving": True,
        "arms": [{"name": "bm25", "retrieval": "lexical", "ranking": "retrieval"}, {"name": "dense", "retrieval": "dense"}],
    }]
}


async def start_gateway(system, tmp_path, config: dict):
    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server

    path = tmp_path / f"experiments-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(config))
    environ = dict(system.environ, SHELFWISE_EXPERIMENTS=str(path))
    server = await create_server(GatewaySettings.from_env(environ), port=0)
    channel = create_channel(f"127.0.0.1:{server.port}")
    return server, channel, gateway_pb2_grpc.GatewayServiceStub(channel)


@pytest.fixture(scope="module")
async def split_gateway(system, tmp_path_factory):
    server, channel, stub = await start_gateway(system, tmp_path_factory.mktemp("split"), SPLIT)
    yield stub, server
    await channel.close()
    await server.stop(grace=1.0)


@pytest.fixture(scope="module")
async def interleaved_gateway(system, tmp_path_factory):
    server, channel, stub = await start_gateway(system, tmp_path_factory.mktemp("interleaved"), INTERLEAVED)
    yield stub, server
    await channel.close()
    await server.stop(grace=1.0)


def user_in(arm: str, config: dict = SPLIT, prefix: str = "shopper") -> str:
    experiments = parse_experiments(config)
    return next(f"{prefix}-{n}" for n in range(1000) if experiments.assign(f"{prefix}-{n}", "", "r").arm.name == arm)


async def test_every_impression_records_the_sticky_arm_of_its_shopper(split_gateway, database):
    split_gateway, server = split_gateway
    experiments = parse_experiments(SPLIT)
    seen = {}
    for n in range(16):
        user = f"arm-user-{n}"
        expected = experiments.assign(user, "", "any").arm.name
        for _ in range(2):
            response = await split_gateway.Search(gateway_pb2.SearchRequest(query="red wine", page_size=3, user_id=user))
            assert response.model_version.endswith(f"experiment=lex-vs-full/{expected}")
            seen[response.request_id] = expected
    assert set(seen.values()) == {"bm25", "full"}
    await server.app.wait_for_impressions()
    rows = await database.fetch(
        "SELECT request_id, experiment_arm FROM impressions WHERE request_id = ANY($1::text[])", list(seen)
    )
    assert {r["request_id"]: r["experiment_arm"] for r in rows} == {rid: f"lex-vs-full/{arm}" for rid, arm in seen.items()}


async def test_the_lexical_arm_skips_query_understanding_and_serves_bm25_order(split_gateway, system):
    split_gateway, _ = split_gateway
    user = user_in("bm25")
    response = await split_gateway.Search(gateway_pb2.SearchRequest(query="red wine", page_size=10, user_id=user))
    assert "ranker=retrieval-order" in response.model_version
    assert "query_understanding=fallback" in response.model_version
    assert "query_understanding" not in response.degraded_stages  # not called, by policy
    for result in response.results:
        assert "dense_similarity" not in {reason.feature for reason in result.reasons}
    async with create_channel(system.address("retrieval")) as channel:
        lexical = await retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve(
            retrieval_pb2.RetrieveRequest(query_text="red wine", limit=10, mode=retrieval_pb2.RETRIEVAL_MODE_LEXICAL)
        )
    assert [r.product.id for r in response.results] == [c.product.id for c in lexical.candidates]

    full_user = user_in("full")
    full = await split_gateway.Search(gateway_pb2.SearchRequest(query="red wine", page_size=10, user_id=full_user))
    assert "retrieval-order" not in full.model_version and "query_understanding=fallback" not in full.model_version
    assert any("dense_similarity" in {r.feature for r in result.reasons} for result in full.results)


async def test_interleaving_logs_the_contributing_arm_of_every_position_and_credits_clicks(
    interleaved_gateway, system, database
):
    from training.experiments.experiment_report import analyse, read_searches

    stub, server = interleaved_gateway
    user = f"il-user-{uuid.uuid4().hex[:6]}"
    first = await stub.Search(gateway_pb2.SearchRequest(query="green tea", page_size=6, user_id=user))
    second = await stub.Search(
        gateway_pb2.SearchRequest(query="green tea", page_size=6, user_id=user, page_token=first.next_page_token)
    )
    assert first.model_version.endswith("experiment=il/interleaved")
    ids = [r.product.id for r in first.results] + [r.product.id for r in second.results]
    assert len(ids) == len(set(ids)) == 12  # pages of one merged list never repeat a product
    assert [r.position for r in second.results] == list(range(7, 13))

    await server.app.wait_for_impressions()
    row = await database.fetchrow(
        "SELECT product_ids, interleaving_arms, experiment_arm FROM impressions WHERE request_id = $1", first.request_id
    )
    arms = list(row["interleaving_arms"])
    assert row["experiment_arm"] == "il/interleaved"
    assert row["product_ids"] == ids[:6] and len(arms) == 6 and set(arms) == {"bm25", "dense"}
    # Team draft: each pair of picks has one product of each arm.
    for start in range(0, 6, 2):
        assert sorted(arms[start : start + 2]) == ["bm25", "dense"]

    # The shopper clicks two products that the dense arm contributed and one of bm25's.
    dense_positions = [n + 1 for n, arm in enumerate(arms) if arm == "dense"][:2]
    bm25_position = next(n + 1 for n, arm in enumerate(arms) if arm == "bm25")
    clicks = [
        events_pb2.Interaction(
            event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_CLICK, request_id=first.request_id,
            product_id=first.results[position - 1].product.id, position=position, user_id=user,
        )
        for position in [*dense_positions, bm25_position]
    ]
    await stub.Track(gateway_pb2.TrackRequest(interactions=clicks))
    records = [r for r in await read_searches(system.environ["SHELFWISE_DATABASE_URL"], "il") if r.unit == f"user:{UserIdPseudonyms(DEVELOPMENT_USER_ID_KEY)(user)}"]
    summary = analyse(records, "il")["interleaving"]
    by_arm = {a["arm"]: a for a in summary["arms"]}
    assert by_arm["dense"]["clicks"] == 2 and by_arm["bm25"]["clicks"] == 1
    assert by_arm["dense"]["wins"] == 1 and by_arm["bm25"]["wins"] == 0
    assert summary["ties"] == 1  # the second page: no clicks


def test_a_bad_experiments_file_stops_the_gateway_at_start_up(tmp_path):
    from services.gateway.config import GatewaySettings

    path = tmp_path / "experiments.json"
    bad = json.loads(json.dumps(SPLIT))
    bad["experiments"][0]["arms"][0]["retrieval"] = "sql"
    path.write_text(json.dumps(bad))
    with pytest.raises(ExperimentConfigError) as error:
        GatewaySettings.from_env({"SHELFWISE_EXPERIMENTS": str(path)})
    assert error.value.field == "experiments[0].arms[0].retrieval"


def test_a_pinned_ctr_head_version_missing_from_the_repository_stops_the_gateway(tmp_path, model_repository):
    from services.gateway.config import GatewaySettings

    path = tmp_path / "experiments.json"
    pinned = json.loads(json.dumps(SPLIT))
    pinned["experiments"][0]["arms"][1]["ctr_head_version"] = 999
    path.write_text(json.dumps(pinned))
    environ = {"SHELFWISE_EXPERIMENTS": str(path), "SHELFWISE_MODEL_REPOSITORY": str(model_repository)}
    with pytest.raises(ExperimentConfigError, match="ctr_head version 999"):
        GatewaySettings.from_env(environ)
