"""The embedded PostgreSQL (`shelfwise up`, `bench search --data-dir`, the evaluations) stops when
its process is done, even in a data folder whose earlier user died without cleaning up.

pgserver lists the processes using a data folder and stops the server when the last one exits;
a process killed with -9, or by a machine restart, stays on that list. Found on the 1M-item bench
folder: after one restart, every later run left PostgreSQL running."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services.local.postgres import PGSERVER_HANDLES, EmbeddedPostgres, forget_dead_handles


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_data_folder_left_by_a_killed_process_is_stopped_by_the_next_user(tmp_path) -> None:
    data_dir = tmp_path / "postgres"
    first = EmbeddedPostgres(data_dir)
    first.start()
    first.stop()
    assert not (data_dir / "postmaster.pid").exists()
    # As a run killed mid-way leaves the folder: its pid still on the list.
    (data_dir / PGSERVER_HANDLES).write_text(json.dumps([dead_pid()]))
    postgres = EmbeddedPostgres(data_dir)
    try:
        postgres.start()
        assert json.loads((data_dir / PGSERVER_HANDLES).read_text()) == [os.getpid()]
    finally:
        postgres.stop()
        left_running = (data_dir / "postmaster.pid").exists()
        if left_running:
            import pgserver

            pgserver.pg_ctl(["-m", "immediate", "stop"], pgdata=data_dir,
                            **({"user": "pgserver"} if os.geteuid() == 0 else {}))
    assert not left_running, "PostgreSQL was left running"


def test_only_processes_that_no_longer_exist_are_forgotten(tmp_path) -> None:
    killed = dead_pid()
    (tmp_path / PGSERVER_HANDLES).write_text(json.dumps([os.getpid(), killed]))
    assert forget_dead_handles(tmp_path) == [killed]
    assert json.loads((tmp_path / PGSERVER_HANDLES).read_text()) == [os.getpid()]
    assert forget_dead_handles(tmp_path) == []
    assert forget_dead_handles(tmp_path / "missing") == []
