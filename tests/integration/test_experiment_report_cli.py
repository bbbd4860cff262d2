"""`shelfwise report experiment` over the real events store: a hand-computed set of impressions
and interactions logged through the events service, read back per arm by the command."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.channels import create_channel

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)


def impression(request_id, user, arm, products, minutes=0, interleaving=()):
    message = events_pb2.Impression(
        event_id=f"imp-{request_id}", request_id=request_id, user_id=user, surface=events_pb2.SURFACE_SEARCH,
        query="q", product_ids=products, first_position=1, experiment_arm=arm, interleaving_arms=list(interleaving),
    )
    message.occurred_at.FromDatetime(T0 + timedelta(minutes=minutes))
    return message


def interaction(request_id, kind, product, position, value=0.0):
    message = events_pb2.Interaction(
        event_id=f"{request_id}-{kind}-{position}-{uuid.uuid4().hex[:4]}", type=kind, request_id=request_id,
        product_id=product, position=position, quantity=1, value=value,
    )
    message.occurred_at.FromDatetime(T0 + timedelta(minutes=1))
    return message


CLICK, CART, BUY = events_pb2.INTERACTION_TYPE_CLICK, events_pb2.INTERACTION_TYPE_ADD_TO_CART, events_pb2.INTERACTION_TYPE_PURCHASE


async def test_the_report_command_gives_the_hand_computed_figures_of_each_arm(system, tmp_path):
    from services.cli.main import main

    name = f"hand{uuid.uuid4().hex[:6]}"
    r = {k: f"{name}-{k}" for k in ("r1", "r2", "r3", "r4", "late", "other")}
    impressions = [
        impression(r["r1"], "u1", f"{name}/a", ["p1", "p2", "p3"]),
        impression(r["r2"], "u1", f"{name}/a", ["p4", "p5"]),
        impression(r["r3"], "u2", f"{name}/a", ["p1", "p6"]),
        impression(r["r4"], "u3", f"{name}/b", ["p7", "p8"]),
        impression(r["late"], "u4", f"{name}/b", ["p9"], minutes=120),  # after --until
        impression(r["other"], "u5", f"{name}x/a", ["p1"]),  # another experiment
    ]
    interactions = [
        interaction(r["r1"], CLICK, "p1", 1), interaction(r["r1"], CART, "p1", 1), interaction(r["r1"], BUY, "p1", 1, 5.0),
        interaction(r["r3"], CLICK, "p1", 1), interaction(r["r3"], CLICK, "p6", 2),
        interaction(r["r4"], CLICK, "p8", 2), interaction(r["r4"], CART, "p8", 2), interaction(r["r4"], BUY, "p8", 2, 7.5),
        interaction(r["late"], CLICK, "p9", 1), interaction(r["other"], CLICK, "p1", 1),
    ]
    async with create_channel(system.address("events")) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        await stub.LogEvents(events_pb2.LogEventsRequest(impressions=impressions))
        await stub.LogEvents(events_pb2.LogEventsRequest(interactions=interactions))

    out = tmp_path / "report.json"
    argv = ["report", "experiment", name, "--database-url", system.environ["SHELFWISE_DATABASE_URL"],
            "--since", (T0 - timedelta(minutes=1)).isoformat(), "--until", (T0 + timedelta(minutes=60)).isoformat(),
            "--control", "a", "--samples", "200", "--out", str(out), "--plot", str(tmp_path / "arms.png")]
    assert await asyncio.to_thread(main, argv) == 0
    report = json.loads(out.read_text())
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == {"a", "b"} and report["searches"] == 4
    a, b = arms["a"], arms["b"]
    assert (a["searches"], a["units"], a["shown"], a["clicks"], a["add_to_carts"], a["purchases"]) == (3, 2, 7, 3, 1, 1)
    assert a["revenue"] == pytest.approx(5.0) and b["revenue"] == pytest.approx(7.5)
    assert a["metrics"]["ctr"]["value"] == pytest.approx(3 / 7)
    assert a["metrics"]["search_ctr"]["value"] == pytest.approx(2 / 3)
    assert a["metrics"]["cvr"]["value"] == pytest.approx(1 / 3)
    assert a["metrics"]["revenue_per_search"]["value"] == pytest.approx(5 / 3)
    assert (b["searches"], b["clicks"], b["purchases"]) == (1, 1, 1)
    assert b["lift_vs_control"]["cvr"]["relative"]["value"] == pytest.approx(1 / (1 / 3) - 1)
    assert (tmp_path / "arms.png").is_file()


async def test_an_experiment_without_searches_is_reported_as_such(system, capsys):
    from services.cli.main import main

    argv = ["report", "experiment", "never-ran", "--database-url", system.environ["SHELFWISE_DATABASE_URL"]]
    assert await asyncio.to_thread(main, argv) == 1
    assert "no search impressions of experiment 'never-ran'" in capsys.readouterr().err
