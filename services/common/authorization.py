"""What each authenticated caller may call: three roles and the role each method needs.

    caller   the shop's backend: the gateway's API (Search, Recommend, Track)
    service  Shelfwise's own services calling each other: query understanding, ranking,
             retrieval's reads, every events method (the gateway logs impressions and reads
             shopper history, ranking reads popularity)
    admin    operators: everything, including catalogue writes and deletes
             (retrieval.UpsertProducts / DeleteProducts, `shelfwise import-catalog`) and the
             merchandising rules (retrieval.PutRule / DeleteRule / ListRules, `shelfwise rules`)

Each role may do what the roles before it may. A principal's role comes from its line in the
tokens file (`principal token role`) or, with mutual TLS, from the organisational unit of its
certificate (`OU=service`; `caller` without one). A method nobody listed needs `admin`:
a new RPC is closed until someone decides who may call it. Health checks need no credentials
at all (services/common/auth.py).
"""

from __future__ import annotations

CALLER, SERVICE, ADMIN = "caller", "service", "admin"
ROLES = (CALLER, SERVICE, ADMIN)

# Longest matching prefix wins: a service's methods, or one method.
REQUIRED_ROLES: dict[str, str] = {
    "/shelfwise.gateway.v1.GatewayService/": CALLER,
    # Server reflection describes the API to any authenticated caller (grpcurl).
    "/grpc.reflection.v1.ServerReflection/": CALLER,
    "/grpc.reflection.v1alpha.ServerReflection/": CALLER,
    "/shelfwise.query_understanding.v1.QueryUnderstandingService/": SERVICE,
    "/shelfwise.ranking.v1.RankingService/": SERVICE,
    "/shelfwise.retrieval.v1.RetrievalService/Retrieve": SERVICE,
    "/shelfwise.retrieval.v1.RetrievalService/GetProducts": SERVICE,
    "/shelfwise.retrieval.v1.RetrievalService/UpsertProducts": ADMIN,
    "/shelfwise.retrieval.v1.RetrievalService/DeleteProducts": ADMIN,
    # Merchandising rules change what every shopper sees: operators (`shelfwise rules`).
    "/shelfwise.retrieval.v1.RetrievalService/PutRule": ADMIN,
    "/shelfwise.retrieval.v1.RetrievalService/DeleteRule": ADMIN,
    "/shelfwise.retrieval.v1.RetrievalService/ListRules": ADMIN,
    "/shelfwise.events.v1.EventsService/": SERVICE,
}


def check_role(role: str, source: str) -> str:
    """`role` if it is one of ROLES, else ValueError naming `source` and the choices."""
    if role not in ROLES:
        raise ValueError(f"{source}: role {role!r} is not one of {', '.join(ROLES)}")
    return role


def required_role(method: str) -> str:
    """The role `method` ("/package.Service/Method") needs."""
    matches = [prefix for prefix in REQUIRED_ROLES if method.startswith(prefix)]
    return REQUIRED_ROLES[max(matches, key=len)] if matches else ADMIN


def allowed(role: str, method: str) -> bool:
    return ROLES.index(role) >= ROLES.index(required_role(method))
