"""`shelfwise bench inference`: throughput and latency of each served model, side by side:
Triton with dynamic batching, Triton without it, and the embedded ONNX Runtime.

Requests look like the services' own: each text encoder of the repository (MiniLM,
multilingual-e5) gets one prefixed query per request, texts of mixed lengths (so requests land
in different token buckets); the CTR head gets one whole
candidate list per request (200 rows), as ranking sends it. Each cell runs a closed loop of
`concurrency` clients for a fixed time and reports requests/s and p50/p99 latency; the last
columns are the ratios of batched Triton to unbatched Triton and to embedded.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.common.inference import EmbeddedOnnxRuntime, InferenceBackend, find_model
from services.common.text_encoder import TextEncoder, is_text_encoder
from services.ranking.features import FEATURE_NAMES

CONCURRENCY = (1, 8, 32, 64)
CANDIDATES_PER_RANK = 200
TEXTS = (
    "red wine",
    "noise cancelling headphones for travel",
    "something to drink with steak",
    "lightweight waterproof hiking boots for women with ankle support and a wide toe box",
    "绿茶",
    "有机全脂牛奶 1升 草饲",
    "gift for a coffee lover who already owns an espresso machine and a grinder",
    "2 person tent",
    "stainless steel cookware set induction compatible dishwasher safe with glass lids, 10 pieces "
    "including frying pans, saucepans and a stock pot",
)


def request_factory(model: str, backend: InferenceBackend, repository: Path):
    """A function returning one request (inputs, outputs) shaped like the services send."""
    rng = random.Random(0)
    if is_text_encoder(model):
        encoder = TextEncoder(backend, model_name=model)

        def text_request():
            input_ids, attention_mask = encoder.tokenize(encoder.prefixed([rng.choice(TEXTS)], "query"))
            return {"input_ids": input_ids, "attention_mask": attention_mask}, ["sentence_embedding"]

        return text_request
    features = np.random.default_rng(0).random((CANDIDATES_PER_RANK, len(FEATURE_NAMES)), dtype=np.float32)

    def rank_request():
        return {"features": features}, ["ctr"]

    return rank_request


async def run_cell(backend: InferenceBackend, model: str, make_request, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            inputs, outputs = make_request()
            started = time.perf_counter()
            await backend.infer(model, inputs, outputs)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


async def bench_inference(repository: Path, env_dir: Path, seconds: float, concurrency=CONCURRENCY) -> str:
    from services.local.triton import LocalTriton, derive_cpu_repository, ensure_triton_environment
    from services.common.triton import TritonInference

    repository = repository.resolve()
    env_dir = ensure_triton_environment(env_dir)
    text_encoders = sorted(
        path.name for path in repository.iterdir() if is_text_encoder(path.name) and find_model(repository, path.name)
    )
    models = text_encoders + [name for name in ("ctr_head",) if find_model(repository, name)]
    results: dict[tuple[str, str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-triton-") as work:
        for mode, batching in (("triton-batched", True), ("triton-unbatched", False)):
            target = Path(work) / mode / "repository"
            derive_cpu_repository(repository, target, dynamic_batching=batching)
            with LocalTriton(target, env_dir, log_path=Path(work) / f"{mode}.log") as server:
                backend = TritonInference(server.grpc_url, repository, timeout_seconds=60.0, retries=0)
                try:
                    for model in models:
                        make_request = request_factory(model, backend, repository)
                        await run_cell(backend, model, make_request, 8, 1.0)  # warm-up
                        for clients in concurrency:
                            results[(model, mode, clients)] = await run_cell(backend, model, make_request, clients, seconds)
                            print(f"  {model:<25} {mode:<17} c={clients:<3} {results[(model, mode, clients)]['rps']:8.1f} req/s",
                                  flush=True)
                finally:
                    await backend.close()
        embedded = EmbeddedOnnxRuntime(repository)
        for model in models:
            make_request = request_factory(model, embedded, repository)
            await run_cell(embedded, model, make_request, 8, 1.0)
            for clients in concurrency:
                results[(model, "embedded", clients)] = await run_cell(embedded, model, make_request, clients, seconds)
                print(f"  {model:<25} {'embedded':<17} c={clients:<3} {results[(model, 'embedded', clients)]['rps']:8.1f} req/s",
                      flush=True)
    return table(results, models, concurrency)


def table(results: dict, models: list[str], concurrency) -> str:
    modes = ("triton-batched", "triton-unbatched", "embedded")
    header = f"{'model':<25} {'clients':>7} | " + " | ".join(f"{m + ' req/s p50/p99 ms':>36}" for m in modes)
    lines = [header + " | batched/unbatched | batched/embedded", "-" * (len(header) + 40)]
    for model in models:
        for clients in concurrency:
            cells = [results[(model, mode, clients)] for mode in modes]
            text = " | ".join(f"{c['rps']:>12.1f} {c['p50']:>10.1f} {c['p99']:>10.1f}" + " " * 1 for c in cells)
            lines.append(
                f"{model:<25} {clients:>7} | {text} | {cells[0]['rps'] / cells[1]['rps']:>17.2f}x"
                f" | {cells[0]['rps'] / cells[2]['rps']:>15.2f}x"
            )
    return "\n".join(lines)
