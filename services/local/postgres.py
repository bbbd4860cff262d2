"""An embedded PostgreSQL 16 (the pgserver wheel) for running the system on one machine: its
data in a folder of the caller's choosing, reached over a unix socket."""

from __future__ import annotations

import json
import os
from pathlib import Path

# pgserver lists the processes using a data folder here and stops the server when the last of
# them exits. A process that died without running its exit hook (kill -9, a machine restart)
# stays listed, and from then on the server was never stopped: every later run left it running.
PGSERVER_HANDLES = ".handle_pids.json"


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, data in `data_dir`, reached over a unix socket."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._server = None

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(self.data_dir)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def forget_dead_handles(data_dir: Path) -> list[int]:
    """Drops processes that no longer exist from pgserver's list of a data folder's users, so
    that the last live one stops the server again. Returns the pids dropped."""
    path = data_dir / PGSERVER_HANDLES
    if not path.is_file():
        return []
    pids = json.loads(path.read_text())
    dead = [pid for pid in pids if not process_exists(pid)]
    if dead:
        path.write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead
