"""Unit tests of services.common.authorization: the role each method needs."""

from __future__ import annotations

import pytest

from services.common.auth import subject_unit
from services.common.authorization import ADMIN, CALLER, SERVICE, allowed, check_role, required_role

GATEWAY = "/shelfwise.gateway.v1.GatewayService/"
RETRIEVAL = "/shelfwise.retrieval.v1.RetrievalService/"
EVENTS = "/shelfwise.events.v1.EventsService/"


@pytest.mark.parametrize(
    "method, role",
    [
        (GATEWAY + "Search", CALLER),
        (GATEWAY + "Track", CALLER),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", CALLER),
        ("/shelfwise.query_understanding.v1.QueryUnderstandingService/Understand", SERVICE),
        ("/shelfwise.ranking.v1.RankingService/Rank", SERVICE),
        (RETRIEVAL + "Retrieve", SERVICE),
        (RETRIEVAL + "GetProducts", SERVICE),
        (EVENTS + "LogEvents", SERVICE),
        (EVENTS + "ListUserHistory", SERVICE),
        (RETRIEVAL + "UpsertProducts", ADMIN),
        (RETRIEVAL + "DeleteProducts", ADMIN),
        (RETRIEVAL + "SomethingAddedLater", ADMIN),  # closed until someone decides
        ("/shelfwise.rules.v1.RulesService/SetRule", ADMIN),
    ],
)
def test_each_method_needs_its_role(method, role):
    assert required_role(method) == role


def test_a_role_covers_the_roles_before_it():
    assert allowed(CALLER, GATEWAY + "Search") and not allowed(CALLER, EVENTS + "ListUserHistory")
    assert allowed(SERVICE, EVENTS + "ListUserHistory") and not allowed(SERVICE, RETRIEVAL + "DeleteProducts")
    assert allowed(ADMIN, RETRIEVAL + "DeleteProducts") and allowed(ADMIN, GATEWAY + "Search")


def test_an_unknown_role_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'root' is not one of caller, service, admin"):
        check_role("root", "tokens")


@pytest.mark.parametrize(
    "subject, unit",
    [("CN=gateway,OU=service,O=Shop", "service"), ("CN=shop", ""), ("OU=admin,CN=ops", "admin"),
     ("CN=a\\,b,OU=caller", "caller")],
)
def test_the_role_of_a_certificate_is_its_organisational_unit(subject, unit):
    assert subject_unit(subject) == unit
