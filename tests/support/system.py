"""The system as tests start it: settings for a test run, a fresh database in the session's
PostgreSQL, and the five servers in this process through the same LocalStack as `shelfwise up`."""

from __future__ import annotations

from pathlib import Path


async def create_database(postgres_url: str, name: str) -> str:
    """A new, empty database `name` in the session's PostgreSQL; returns its URL (for a test
    whose writes must not meet the session system's)."""
    import asyncpg

    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, query = postgres_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def system_environment(postgres_url: str, model_repository: Path, **overrides: str) -> dict[str, str]:
    environ = {
        "SHELFWISE_DATABASE_URL": postgres_url,
        "SHELFWISE_MODEL_REPOSITORY": str(model_repository),
        "SHELFWISE_POPULARITY_REFRESH_SECONDS": "0.3",
        "SHELFWISE_VOCABULARY_REFRESH_SECONDS": "0.3",
        # Generous stage deadlines: CI machines are small and shared.
        "SHELFWISE_DEADLINE_QUERY_UNDERSTANDING_SECONDS": "5",
        "SHELFWISE_DEADLINE_RETRIEVAL_SECONDS": "10",
        "SHELFWISE_DEADLINE_RANKING_SECONDS": "5",
    }
    environ.update(overrides)
    return environ


async def start_system(environ: dict[str, str]):
    """The five servers in this process on port 0, through the same LocalStack as `shelfwise up`
    (configured by `environ`, which names the database and the model repository)."""
    import tempfile

    from services.local.stack import LocalStack, StackSettings

    stack = LocalStack(StackSettings(
        state_dir=Path(tempfile.mkdtemp(prefix="shelfwise-stack-")),
        model_repository=Path(environ["SHELFWISE_MODEL_REPOSITORY"]), environ=environ,
        database_url=environ["SHELFWISE_DATABASE_URL"], free_ports=False, in_process=True,
    ))
    await stack.start()
    return stack
