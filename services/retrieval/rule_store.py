"""The merchandising rules store in PostgreSQL (table merchandising_rules, migration 0009) and
the snapshot of it every retrieval replica serves from.

Writes are serialised by a transaction-scoped advisory lock, so two merchandisers writing
conflicting rules at once through two replicas cannot both succeed: the second sees the first
when it checks for conflicts. Every write takes the next store version; `RulesKeeper` polls the
version (one indexed max() per period, SHELFWISE_RULES_REFRESH_SECONDS) and swaps in a new
`RuleSet` when it moves, so a change is live on every replica within one period, and at once on
the replica that wrote it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields

import asyncpg

from services.common.errors import InvalidArgument, NotFound
from services.retrieval.metrics import RetrievalMetrics
from services.retrieval.rules import Rule, RuleSet, conflict, validate_rule

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of rule writes ("shelfwise rules" in ASCII, truncated to 63 bits).
_WRITE_LOCK = 0x7368656C66776973
_RULE_FIELDS = tuple(f.name for f in fields(Rule) if f.name not in ("id", "version"))


def _rule_of(row: asyncpg.Record) -> Rule:
    body = json.loads(row["rule"])
    values = {name: body[name] for name in _RULE_FIELDS if name in body}
    for name in ("product_ids", "terms"):
        values[name] = tuple(values.get(name, ()))
    return Rule(id=row["id"], version=row["version"], **values)


def _body(rule: Rule) -> str:
    body = asdict(rule)
    body.pop("id")
    body.pop("version")
    return json.dumps(body, ensure_ascii=False)


class RuleStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def version(self) -> int:
        return await self._pool.fetchval("SELECT coalesce(max(version), 0) FROM merchandising_rules")

    async def load(self) -> RuleSet:
        async with self._pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            version = await connection.fetchval("SELECT coalesce(max(version), 0) FROM merchandising_rules")
            rows = await connection.fetch(
                "SELECT id, rule::text AS rule, version FROM merchandising_rules WHERE NOT deleted ORDER BY id"
            )
        return RuleSet(tuple(_rule_of(row) for row in rows), version)

    async def put(self, rule: Rule) -> tuple[Rule, bool, int]:
        """Inserts or replaces `rule` (validated by the caller); (the rule as stored, whether
        the id was new, the store version). A conflict is InvalidArgument naming both rules."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
            rows = await connection.fetch(
                "SELECT id, rule::text AS rule, version FROM merchandising_rules WHERE NOT deleted AND id <> $1", rule.id
            )
            reason = conflict(rule, [_rule_of(row) for row in rows])
            if reason:
                raise InvalidArgument("rule", reason)
            row = await connection.fetchrow(
                """
                INSERT INTO merchandising_rules (id, rule, version, deleted, updated_at)
                VALUES ($1, $2::jsonb, nextval('merchandising_rule_versions'), false, now())
                ON CONFLICT (id) DO UPDATE SET rule = EXCLUDED.rule, version = EXCLUDED.version,
                    deleted = false, updated_at = now()
                RETURNING version, (xmax = 0) AS inserted,
                    (SELECT deleted FROM merchandising_rules WHERE id = $1) AS was_deleted
                """,
                rule.id, _body(rule),
            )
        created = row["inserted"] or bool(row["was_deleted"])
        return Rule(**{**asdict(rule), "version": row["version"]}), created, row["version"]

    async def delete(self, rule_id: str) -> int:
        """Marks the rule deleted; the new store version. NotFound for an unknown id."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
            version = await connection.fetchval(
                "UPDATE merchandising_rules SET deleted = true, version = nextval('merchandising_rule_versions'),"
                " updated_at = now() WHERE id = $1 AND NOT deleted RETURNING version",
                rule_id,
            )
        if version is None:
            raise NotFound(f"rule_id: no rule {rule_id!r}")
        return version


class RulesKeeper:
    """The RuleSet in force, refreshed from the store when its version moves."""

    def __init__(self, store: RuleStore | None, metrics: RetrievalMetrics | None = None):
        self._store = store
        self._metrics = metrics
        self.current = RuleSet()

    async def refresh(self) -> bool:
        """Reloads when the store's version moved; whether it did."""
        if self._store is None:
            return False
        version = await self._store.version()
        if version == self.current.version:
            return False
        self.current = await self._store.load()
        if self._metrics is not None:
            self._metrics.rules_version(self.current.version)
        log.info("merchandising rules version %d in force: %d rules", self.current.version, len(self.current.rules))
        return True

    async def put(self, rule: Rule) -> tuple[Rule, bool, int]:
        stored = await self._require_store().put(validate_rule(rule))
        await self.refresh()
        return stored

    async def delete(self, rule_id: str) -> int:
        version = await self._require_store().delete(rule_id)
        await self.refresh()
        return version

    def _require_store(self) -> RuleStore:
        if self._store is None:
            raise InvalidArgument("rule", "this retrieval index has no rules store")
        return self._store
