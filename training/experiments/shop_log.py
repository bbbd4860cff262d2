"""What a simulated shop's periods leave in its database and what is learned from it: counting an
experiment's logged searches, and training the CTR head on a window of its events (`shelfwise
train ctr`)."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path


async def logged_searches(url: str, experiment: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM impressions WHERE split_part(experiment_arm, '/', 1) = $1", experiment
        )
    except asyncpg.UndefinedTableError:  # a fresh database: the events service has not migrated it yet
        return 0
    finally:
        await connection.close()


async def train_ctr_head(url: str, since: datetime, until: datetime, repository: Path) -> str:
    """`shelfwise train ctr` on the warm-up window; returns the new version's folder."""
    from services.common.inference import find_model
    from training.ctr.train_ctr import main as train_ctr

    argv = ["--database-url", url, "--since", since.isoformat(), "--until", until.isoformat(),
            "--out", str(repository), "--threads", "1", "--quiet"]
    print(f"training the CTR head on the warm-up window: shelfwise train ctr {' '.join(argv[2:])}", file=sys.stderr)
    code = await asyncio.to_thread(train_ctr, argv)  # it runs its own event loop
    if code != 0:
        raise RuntimeError(f"shelfwise train ctr failed (exit {code}); the test period would not use a trained head")
    return find_model(repository, "ctr_head").label
