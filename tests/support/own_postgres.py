"""A PostgreSQL of one test (pgserver's binaries) that the test may stop and start again, for
the tests of what the services do when their database goes away."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path


class OwnPostgres:
    """A PostgreSQL (pgserver's binaries) of one test, which the test stops and starts again.

    Every step runs in a thread (`asyncio.to_thread`) so the session's event loop, which also
    runs the shared servers and their health checks, never stalls. initdb and pg_ctl run
    through `runuser` rather than subprocess's `user=` (which is what pgserver uses): with
    `user=` Python forks instead of vforking, the child runs gRPC's fork handlers, and it
    crashes while gRPC threads are busy."""

    def __init__(self, root: Path) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self._bin = POSTGRES_BIN_PATH
        self._root = root
        self._data = root / "data"
        self._log = root / "postgres.log"
        self.url = f"postgresql://postgres:@/postgres?host={root}"
        # PostgreSQL refuses to run as root: as root, run it as pgserver's own system user.
        self._user = "pgserver" if os.geteuid() == 0 else None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def init(self) -> None:
        if self._user is not None:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            entry = ensure_user_exists(self._user)
            ensure_prefix_permissions(self._root)
            ensure_prefix_permissions(self._bin)
            ensure_folder_permissions(self._bin, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(self._bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            self._root.chmod(0o755)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self._data), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        self.start()

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self._data), "-w", "-o", '-h ""', "-o", f"-k {self._root}", "-l", str(self._log), "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self._data), "-w", "-m", "fast", "stop")
