"""Oversized calls cost a service about nothing: 64 concurrent 3 MB Search requests to a
gateway process (auth off; auth on without a token and with one) are refused with
RESOURCE_EXHAUSTED, its resident memory stays under twice its idle size at the peak and
returns to within 20% of it. The gateway's limit (1 MiB, what its largest request needs) is
checked from each call's frame header, before the body is read; at the former 4 MiB, each
rejected 2 MB message cost the gateway 10-35 MB (issue 27).

The gateway runs as its own process (`python -m services.gateway`, in the environment
`shelfwise up` gives it) so its memory is its own; its stages point at closed ports, which the
refused calls never reach."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from shelfwise.gateway.v1 import gateway_pb2

from services.common.channels import create_channel
from services.common.config import SecuritySettings
from services.local.processes import ServiceProcesses, free_ports
from tests.support.paths import MODEL_REPOSITORY, ROOT

CALLS = 64
MESSAGE_BYTES = 3 * 1024 * 1024
SEARCH = "/shelfwise.gateway.v1.GatewayService/Search"
SHOP_TOKEN = f"shop-{uuid.uuid4().hex}"


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def oversized_search() -> bytes:
    """A SearchRequest on the wire whose query holds MESSAGE_BYTES of text."""
    return gateway_pb2.SearchRequest(query="x" * MESSAGE_BYTES).SerializeToString()


async def listening(address: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway did not listen on {address} within {timeout:.0f}s")


@pytest.mark.parametrize("auth, token", [("off", None), ("token", None), ("token", SHOP_TOKEN)])
async def test_oversized_calls_are_refused_without_growing_the_gateway(tmp_path: Path, auth: str, token: str | None):
    gateway, *closed = free_ports(5)
    overrides = {
        "SHELFWISE_GATEWAY_PORT": str(gateway),
        **{f"SHELFWISE_{name}_ADDRESS": f"127.0.0.1:{port}"
           for name, port in zip(("QUERY_UNDERSTANDING", "RETRIEVAL", "RANKING", "EVENTS"), closed)},
        "SHELFWISE_AUTH": auth,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
    }
    if auth == "token":
        tokens = tmp_path / "tokens"
        tokens.write_text(f"shop {SHOP_TOKEN} caller\n")
        overrides["SHELFWISE_AUTH_TOKENS_FILE"] = str(tokens)
    # What `shelfwise up` gives each service process (no database: the gateway has none).
    environ = ServiceProcesses("postgresql://unused", MODEL_REPOSITORY, tmp_path, overrides).service_environment()
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=environ, stdout=log, stderr=log, cwd=ROOT)
    address = f"127.0.0.1:{gateway}"
    try:
        await listening(address, process)
        await asyncio.sleep(1.0)  # settled
        idle = resident_bytes(process.pid)
        peak = idle
        body = oversized_search()
        security = SecuritySettings(own_token=token) if token else SecuritySettings()
        async with create_channel(address, max_message_bytes=8 * MESSAGE_BYTES, security=security) as channel:
            search = channel.unary_unary(SEARCH)

            async def call() -> grpc.StatusCode:
                try:
                    await search(body, timeout=30)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    return error.code()

            calls = asyncio.gather(*(call() for _ in range(CALLS)))
            while not calls.done():
                peak = max(peak, resident_bytes(process.pid))
                await asyncio.sleep(0.01)
            codes = await calls
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
        assert peak < 2 * idle, f"peak RSS {peak / 2**20:.0f} MiB against {idle / 2**20:.0f} MiB idle"
        deadline = time.monotonic() + 60
        while resident_bytes(process.pid) > 1.2 * idle and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        after = resident_bytes(process.pid)
        assert after <= 1.2 * idle, f"RSS {after / 2**20:.0f} MiB a minute after, {idle / 2**20:.0f} MiB idle"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
