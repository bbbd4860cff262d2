"""The command line as a user runs it: `shelfwise up` (the README's first command),
`shelfwise import-catalog`, `search --json` into `track`, in real subprocesses (the README's
examples are run by test_readme.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from services.local.processes import free_port_environment
from tests.support.paths import MODEL_REPOSITORY, ROOT

def test_shelfwise_up_starts_everything_prints_ranked_results_and_stops_cleanly(tmp_path):
    env = {**os.environ, **free_port_environment()}
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--exit", "--data-dir", str(tmp_path),
         "--model-repository", str(MODEL_REPOSITORY), "--query", "red wine", "--query", "绿茶"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "all five services SERVING" in output
    assert "catalogue demo_catalog.jsonl: 352 new" in output
    assert "search 'red wine'" in output and "    1. " in output and "[Red Wine]" in output
    assert "search '绿茶'" in output and "also searched as 'green tea'" in output and "[Tea]" in output
    assert "recommend complete_cart sku-redwine-0001" in output
    assert "recommend for_user new-shopper-" in output
    assert output.count("    1. ") >= 4, output
    assert "    1. sku-redwine-" in output, "each result line shows its product id"
    assert "record a click on the first result: shelfwise track --request-id " in output
    assert "stopped: all services exited cleanly" in output


async def test_import_catalog_reports_the_bad_row_and_imports_nothing(system, tmp_path):
    # The servers run on this test's event loop: the CLI must run without blocking it.
    run = lambda *args, **kwargs: asyncio.to_thread(subprocess.run, *args, **kwargs)  # noqa: E731
    catalog = tmp_path / "products.csv"
    catalog.write_text(
        "id,title,brand,category,price\n"
        "imp-1,Maple Syrup Grade A,Vermont Gold,Pantry,12.50\n"
        "imp-2,Buckwheat Honey,Hive & Co,Pantry,twelve\n",
        encoding="utf-8",
    )
    completed = await run(
        [sys.executable, "-m", "services.cli", "import-catalog", str(catalog),
         "--retrieval-address", system.address("retrieval")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 1
    assert "row 3.price: must be a number, got 'twelve'" in completed.stderr

    catalog.write_text(
        "id,title,brand,category,price,origin\n"
        "imp-1,Maple Syrup Grade A,Vermont Gold,Pantry,12.50,Vermont\n",
        encoding="utf-8",
    )
    completed = await run(
        [sys.executable, "-m", "services.cli", "import-catalog", str(catalog),
         "--retrieval-address", system.address("retrieval")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "imported 1 products (1 new, 0 updated)" in completed.stdout


async def test_search_json_gives_the_ids_that_track_takes(system):
    """`--json` prints one JSON object with the proto's field names; the request_id, product id
    and position it holds are what `shelfwise track` accepts."""
    import json

    run = lambda *args, **kwargs: asyncio.to_thread(subprocess.run, *args, **kwargs)  # noqa: E731
    address = ["--address", system.address("gateway")]
    completed = await run([sys.executable, "-m", "services.cli", "search", "red wine", "--page-size", "3", "--json",
                           *address], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    first = response["results"][0]
    assert first["product"]["category"] == "Red Wine" and first["position"] == 1

    completed = await run([sys.executable, "-m", "services.cli", "track", "--request-id", response["request_id"],
                           "--product-id", first["product"]["id"], "--position", str(first["position"]), "--json",
                           *address], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"accepted": 1}


async def test_search_prints_facets_and_sorts(system):
    run = lambda *args: asyncio.to_thread(  # noqa: E731
        subprocess.run, [sys.executable, "-m", "services.cli", "search", *args, "--address", system.address("gateway")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    completed = await run("red wine", "--brand", "Bodega Alta", "--facet", "brand", "--facet", "price",
                          "--sort", "price_ascending", "--page-size", "5")
    assert completed.returncode == 0, completed.stderr
    assert "facet brand (other values of a filtered field): " in completed.stdout and "Bodega Alta * (" in completed.stdout
    assert "facet price: " in completed.stdout
    refused = await run("red wine", "--facet", "flavour")
    assert refused.returncode != 0 and "facets[0].field" in refused.stdout + refused.stderr


async def test_rules_commands_pin_list_refuse_a_conflict_and_delete(system, gateway):
    """`shelfwise rules` writes the store through retrieval: the pin is in force for the next
    search, a conflicting pin is refused naming the first, and delete removes it."""
    from shelfwise.gateway.v1 import gateway_pb2

    run = lambda *args: asyncio.to_thread(  # noqa: E731
        subprocess.run, [sys.executable, "-m", "services.cli", "rules", *args, "--address", system.address("retrieval")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    query, rule_id = "cli pinned wine", "cli-pin-test"
    completed = await run("pin", "--id", rule_id, "--query", query, "--product", "sku-redwine-0002", "--position", "1")
    try:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert f"created {rule_id}: pin sku-redwine-0002 at position 1 (when query '{query}')" in completed.stdout
        response = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=1))
        assert response.results[0].product.id == "sku-redwine-0002"
        listed = await run("list")
        assert rule_id in listed.stdout and "rules in force" in listed.stdout
        refused = await run("pin", "--id", "cli-pin-other", "--query", query, "--product", "sku-redwine-0003",
                            "--position", "1")
        assert refused.returncode == 1 and f"INVALID_ARGUMENT: rule: conflicts with rule '{rule_id}'" in refused.stdout
    finally:
        deleted = await run("delete", rule_id)
    assert deleted.returncode == 0 and f"deleted {rule_id}" in deleted.stdout, deleted.stdout + deleted.stderr


def test_kill_stops_a_running_command_and_what_it_started(tmp_path):
    """`kill` (SIGTERM) mid-import of `bench search` cancels the command, whose clean-up stops
    the services and PostgreSQL it started; before, Python ended at once and left them running.
    Started the way a script starts it in the background: SIGINT ignored (it must still work)."""
    import signal

    data_dir = tmp_path / "bench"
    env = {**os.environ, **free_port_environment()}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "bench", "search", "--items", "5000", "--rate", "1", "--duration", "1",
         "--data-dir", str(data_dir), "--model-repository", str(MODEL_REPOSITORY)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "importing 5,000 synthetic products" in line:
                break
        else:
            raise AssertionError("the import never started:\n" + "".join(seen))
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=120)[1]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, rest
    assert "stopped" in rest
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL was left running"
    for service in ("events", "retrieval"):
        assert "shutting down" in (data_dir / "logs" / f"{service}.log").read_text(), f"{service} was left running"
