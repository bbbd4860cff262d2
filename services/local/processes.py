"""The five services as child processes (`python -m services.<name>`), each logging to its own
file, started in order and counted as started when their gRPC health check says SERVING.

For measurements (`shelfwise bench search`): services can be started in groups (so a large
catalogue is imported before query understanding reads its vocabulary once), in several
replicas, under cProfile (`profile_dir`: one .prof per service, written when it exits on
SIGTERM), and each process's CPU time can be read, so a load test can say what a request costs
per service. `services.local.stack.LocalStack` is the one way the project starts them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from services.common.channels import wait_until_serving
from services.common.config import ServerSettings

# Start order: the gateway checks retrieval's health; ranking reads popularity from events.
SERVICE_ORDER = ("events", "retrieval", "query_understanding", "ranking", "gateway")


def free_ports(count: int) -> list[int]:
    """Ports free on the loopback right now (all bound at once, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def free_port_environment() -> dict[str, str]:
    """Settings that put the five services on free ports and point them at each other."""
    environ = {}
    for service, port in zip(SERVICE_ORDER, free_ports(len(SERVICE_ORDER))):
        environ[f"SHELFWISE_{service.upper()}_PORT"] = str(port)
        environ[f"SHELFWISE_{service.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    return environ


@dataclass
class ServiceProcesses:
    database_url: str
    model_repository: Path
    log_dir: Path
    environ: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # When set, every service runs under cProfile and writes <service>.prof here at exit.
    profile_dir: Path | None = None

    def service_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # One OpenBLAS thread per service unless the caller says otherwise: its worker threads
        # spin after every numpy call (language identification, dense scoring), and with five
        # services on a few cores that spinning took most of the CPU of a search (measured:
        # language identification 3.8 -> 0.5 ms of CPU per query; `shelfwise bench search`).
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.update(
            {
                "SHELFWISE_DATABASE_URL": self.database_url,
                "SHELFWISE_MODEL_REPOSITORY": str(self.model_repository),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.environ)
        return env

    def address(self, service: str) -> str:
        return f"127.0.0.1:{ServerSettings.from_env(service, self.service_environment()).port}"

    def _command(self, service: str) -> list[str]:
        if self.profile_dir is None:
            return [sys.executable, "-m", f"services.{service}"]
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "cProfile", "-o", str(self.profile_dir / f"{service}.prof"), "-m", f"services.{service}"]

    async def start(
        self, timeout: float = 120.0, services: tuple[str, ...] = SERVICE_ORDER, replicas: Mapping[str, int] | None = None
    ) -> None:
        """Starts `services` (all five by default) in SERVICE_ORDER, then waits until each is
        SERVING. `replicas`: processes per service (default one), each on its own free port,
        named `<service>-2`, `<service>-3`, ...; the services started after them call all of
        them, round robin (their address becomes the list of every replica's)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        services = tuple(service for service in SERVICE_ORDER if service in services)
        started: dict[str, str] = {}  # process name -> its address
        for service in services:
            env = self.service_environment()
            count = (replicas or {}).get(service, 1)
            ports = [str(ServerSettings.from_env(service, env).port)] + [str(p) for p in free_ports(count - 1)]
            for number, port in enumerate(ports, start=1):
                name = service if number == 1 else f"{service}-{number}"
                self._spawn(name, service, port)
                started[name] = f"127.0.0.1:{port}"
            if count > 1:
                self.environ[f"SHELFWISE_{service.upper()}_ADDRESS"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
        for name, address in started.items():
            await self._wait_until_serving(name, address, timeout)

    async def restart(self, service: str, timeout: float = 120.0) -> None:
        """Starts `service` again on its port (after it was killed or exited) and waits until it
        is SERVING."""
        port = str(ServerSettings.from_env(service, self.service_environment()).port)
        self._spawn(service, service, port)
        await self._wait_until_serving(service, f"127.0.0.1:{port}", timeout)

    def _spawn(self, name: str, service: str, port: str) -> None:
        log_file = (self.log_dir / f"{name}.log").open("ab")
        # Own session: a Ctrl-C in the terminal reaches `shelfwise up` alone, which then stops
        # the services in order (gateway first) instead of all at once.
        self.processes[name] = subprocess.Popen(
            self._command(service), env={**self.service_environment(), f"SHELFWISE_{service.upper()}_PORT": port},
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )

    async def _wait_until_serving(self, name: str, address: str, timeout: float) -> None:
        process = self.processes[name]
        try:
            await wait_until_serving(address, timeout, lambda: process.poll() is None)
        except Exception as error:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} did not start: {error}\n--- {name}.log ---\n{tail}") from error

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time each running service has used so far, all threads included
        (from /proc; empty where there is no /proc)."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        used = {}
        for service, process in self.processes.items():
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            used[service] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return used

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """SIGTERM (they drain and exit), the gateway first so that its last impressions still
        reach a running events service; returns each exit code."""
        deadline = time.monotonic() + timeout
        codes = {}
        front = [name for name in ("gateway",) if name in self.processes]
        for group in (front, [name for name in self.processes if name not in front]):
            for service in group:
                if self.processes[service].poll() is None:
                    self.processes[service].send_signal(signal.SIGTERM)
            for service in group:
                process = self.processes[service]
                try:
                    codes[service] = process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    codes[service] = process.wait()
        return codes
