"""A real Triton server on the CPU serves every model of the repository like the GPU configs say.

One `tritonserver` (the build bundled in nvidia-pytriton, in its own environment `.venv-triton`
or `$SHELFWISE_TRITON_ENV`) runs for this whole file on free ports, over the CPU repository
`services.local.triton` derives from `model_repository/`. The tests check that clients see
the same models (names, tensors, batch limits, dynamic batching), that Triton computes what
embedded ONNX Runtime computes, and that concurrent requests really merge into dynamic batches
(and, with ragged batching on, across length buckets, which a second short-lived server checks).
When Triton cannot start the tests fail, never skip: CI runs on CPU machines to prove this works.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.local.triton import LocalTriton, derive_cpu_repository, ensure_triton_environment
from services.common.text_encoder import MODEL_NAME as MINILM, is_text_encoder
from tests.support.eventually import eventually
from tests.support.models import complete_model_repository

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "model_repository"
# Every committed config is a model Triton must serve; a missing export fails its tests.
MODELS = sorted(path.parent.name for path in MODEL_REPOSITORY.glob("*/config.pbtxt"))
# Text encoders get real token ids from their own tokenizers; other models random inputs.
TEXT_ENCODERS = [model for model in MODELS if is_text_encoder(model)]
TOLERANCE = 1e-4
# A model that quantizes its activations per run (int8: the Universal Sentence Encoder) computes
# a request a little differently when Triton merges it with others: the scales are the batch's.
PER_RUN_QUANTIZED_TOLERANCE = 1e-2
CONCURRENT_REQUESTS = 64


def per_run_quantized(model: str) -> bool:
    import onnx

    versions = sorted(p for p in (MODEL_REPOSITORY / model).glob("[0-9]*/model.onnx"))
    return bool(versions) and any(
        node.op_type == "DynamicQuantizeLinear" for node in onnx.load(str(versions[-1]), load_external_data=False).graph.node
    )

TEXTS = (
    "red wine",
    "a bottle of Cabernet Sauvignon",
    "Men's trail running shoes, waterproof, size 44",
    "Bluetooth speaker, 20W, IPX7 — works in the shower & at the pool!",
    "Organic dark-roast coffee beans (1 kg bag), fair trade, notes of cocoa and cherry",
)

NUMPY_TYPES = {
    model_config_pb2.TYPE_FP32: np.float32,
    model_config_pb2.TYPE_FP64: np.float64,
    model_config_pb2.TYPE_FP16: np.float16,
    model_config_pb2.TYPE_INT64: np.int64,
    model_config_pb2.TYPE_INT32: np.int32,
    model_config_pb2.TYPE_BOOL: np.bool_,
}


def source_config(model: str) -> model_config_pb2.ModelConfig:
    path = MODEL_REPOSITORY / model / "config.pbtxt"
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def onnx_path(repository: Path, model: str) -> Path:
    versions = sorted(
        (int(p.name) for p in (repository / model).iterdir() if p.name.isdigit() and (p / "model.onnx").is_file())
    )
    if not versions:
        pytest.fail(f"{model} has a config.pbtxt but no exported model.onnx: run `python -m training.encoders.export`")
    return repository / model / str(versions[-1]) / "model.onnx"


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """model_repository/ with every configured model: one trained on shop data that a fresh
    clone has no version of yet is served freshly initialised (the services do without it, but
    its config must still serve)."""
    assert MODELS, f"no config.pbtxt under {MODEL_REPOSITORY}"
    return complete_model_repository(MODEL_REPOSITORY, tmp_path_factory.mktemp("source") / "model_repository")


@pytest.fixture(scope="module")
def triton(tmp_path_factory, repository) -> LocalTriton:
    for model in MODELS:
        onnx_path(repository, model)
    env_dir = ensure_triton_environment(Path(os.environ.get("SHELFWISE_TRITON_ENV", ROOT / ".venv-triton")))
    work = tmp_path_factory.mktemp("triton")
    derived = derive_cpu_repository(repository, work / "repository")
    assert derived == MODELS
    server = LocalTriton(work / "repository", env_dir, log_path=work / "tritonserver.log")
    started = time.monotonic()
    server.start(timeout=120)  # raises with the server log: a failure, not a skip
    print(f"\ntritonserver ready in {time.monotonic() - started:.1f} s at {server.grpc_url}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(triton):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizers(repository) -> dict:
    from tokenizers import Tokenizer

    loaded = {}
    for model in TEXT_ENCODERS:
        path = onnx_path(repository, model).parent / "tokenizer" / "tokenizer.json"
        if not path.is_file():
            pytest.fail(f"{path} missing: run `python -m training.encoders.export`")
        loaded[model] = Tokenizer.from_file(str(path))
    return loaded


@pytest.fixture(scope="module")
def tokenizer(tokenizers):
    """MiniLM's: the tests of Triton's own machinery below use the smaller encoder."""
    return tokenizers[MINILM]


@pytest.fixture(scope="module")
def sessions(repository):
    import onnxruntime as ort

    return {
        model: ort.InferenceSession(str(onnx_path(repository, model)), providers=["CPUExecutionProvider"])
        for model in MODELS
    }


def tokens(tokenizer, texts, length: int) -> dict[str, np.ndarray]:
    """Right-padded to exactly `length` tokens: the fixed length buckets callers use."""
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def random_inputs(model: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs shaped and typed from the model's config; variable dims get a random size."""
    inputs = {}
    for tensor in source_config(model).input:
        shape = [batch] + [int(d) if d > 0 else int(rng.integers(2, 9)) for d in tensor.dims]
        dtype = NUMPY_TYPES[tensor.data_type]
        if np.issubdtype(dtype, np.floating):
            inputs[tensor.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            inputs[tensor.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            inputs[tensor.name] = rng.integers(0, 100, shape).astype(dtype)
    return inputs


def request_inputs(model: str, index: int, tokenizers: dict, rng: np.random.Generator, run: int) -> dict[str, np.ndarray]:
    """One request of batch size 1. The text encoders' cycle through the length buckets,
    changing bucket every `run` requests."""
    if model in tokenizers:
        return tokens(tokenizers[model], [TEXTS[index % len(TEXTS)]], (16, 64, 32)[(index // run) % 3])
    return random_inputs(model, 1, rng)


def triton_inputs(module, inputs: dict[str, np.ndarray]) -> list:
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def output_names(model: str) -> list[str]:
    return [tensor.name for tensor in source_config(model).output]


def infer(client, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient

    names = output_names(model)
    result = client.infer(
        model, triton_inputs(grpcclient, inputs), outputs=[grpcclient.InferRequestedOutput(n) for n in names]
    )
    return {name: result.as_numpy(name) for name in names}


def assert_close(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], what: str, tolerance: float = TOLERANCE
) -> None:
    for name, value in expected.items():
        assert actual[name].shape == value.shape, f"{what}: {name} shape {actual[name].shape} != {value.shape}"
        diff = float(np.max(np.abs(actual[name] - value))) if value.size else 0.0
        assert diff <= tolerance, f"{what}: {name} differs from embedded ONNX Runtime by {diff:.2e}"


def embedded(sessions, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = output_names(model)
    return dict(zip(names, sessions[model].run(names, inputs)))


def batch_counts(statistics) -> dict[int, int]:
    return {entry.batch_size: entry.compute_infer.count for entry in statistics.batch_stats}


def test_cpu_repository_keeps_tensors_and_can_drop_dynamic_batching(tmp_path, repository):
    derived = derive_cpu_repository(repository, tmp_path / "repository", dynamic_batching=False)
    assert derived == MODELS
    for model in MODELS:
        config = text_format.Parse(
            (tmp_path / "repository" / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        assert config.backend == "python" and not config.platform
        assert not config.HasField("dynamic_batching")
        assert list(config.input) == list(source_config(model).input)
        assert list(config.output) == list(source_config(model).output)
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
        assert (tmp_path / "repository" / model / onnx_path(repository, model).parent.name / "model.py").is_file()


def test_every_model_of_the_repository_is_ready_with_the_source_configuration(triton, client):
    assert client.is_server_ready()
    served = {model.name for model in client.get_model_repository_index().models}
    assert served == set(MODELS)
    for model in MODELS:
        assert client.is_model_ready(model), f"{model} is not READY"
        source = source_config(model)
        config = client.get_model_config(model).config
        assert config.name == source.name == model
        assert config.backend == "python"
        assert config.max_batch_size == source.max_batch_size
        # What clients see: same tensor names, types and dims as the GPU config.
        for seen, committed in ((config.input, source.input), (config.output, source.output)):
            assert [(t.name, t.data_type, list(t.dims)) for t in seen] == [
                (t.name, t.data_type, list(t.dims)) for t in committed
            ]
        assert source.HasField("dynamic_batching"), f"{model}: the committed config has no dynamic_batching"
        # Triton fills an empty preferred list with [max_batch_size], the GPU container too.
        expected = list(source.dynamic_batching.preferred_batch_size) or [source.max_batch_size]
        assert list(config.dynamic_batching.preferred_batch_size) == expected
        assert (
            config.dynamic_batching.max_queue_delay_microseconds
            == source.dynamic_batching.max_queue_delay_microseconds
        )
        if source.HasField("version_policy"):
            assert config.version_policy == source.version_policy
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("model", MODELS)
def test_triton_computes_what_embedded_onnx_runtime_computes(model, client, sessions, tokenizers):
    if model in tokenizers:
        # Separate requests at two length buckets: real token ids, real padding.
        requests = {
            f"{len(TEXTS)} texts padded to {length}": tokens(tokenizers[model], TEXTS, length) for length in (16, 64)
        }
    else:
        rng = np.random.default_rng(7)
        requests = {f"random batch of {n}": random_inputs(model, n, rng) for n in (1, 5)}
    for what, inputs in requests.items():
        assert_close(infer(client, model, inputs), embedded(sessions, model, inputs), f"{model}, {what}")


async def run_concurrently(url: str, model: str, requests: list[dict[str, np.ndarray]]):
    """Sends all `requests` at once; returns the results and Triton's statistics before and after."""
    import tritonclient.grpc.aio as aioclient

    names = output_names(model)
    async with aioclient.InferenceServerClient(url) as aio:

        async def one(inputs):
            result = await aio.infer(
                model, triton_inputs(aioclient, inputs), outputs=[aioclient.InferRequestedOutput(n) for n in names]
            )
            return {name: result.as_numpy(name) for name in names}

        before = (await aio.get_inference_statistics(model)).model_stats[0]
        results = await asyncio.gather(*(one(inputs) for inputs in requests))
        # Triton records a batch's statistics just after sending its responses: wait for them
        # (5 s at most; assert_merged then names the counts it saw).
        async def recorded() -> bool:
            nonlocal after
            after = (await aio.get_inference_statistics(model)).model_stats[0]
            return after.inference_count - before.inference_count >= len(requests)

        after = before
        try:
            await eventually(recorded, 5, f"Triton recording {len(requests)} inferences of {model}")
        except AssertionError:
            pass  # assert_merged reports the counts
        return results, before, after


def assert_merged(model: str, before, after, requests: int) -> None:
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == requests
    assert executions < inferences, f"{model}: {executions} executions for {inferences} requests: nothing merged"
    merged = {
        size: count - batch_counts(before).get(size, 0)
        for size, count in batch_counts(after).items()
        if size > 1 and count > batch_counts(before).get(size, 0)
    }
    assert merged, f"{model}: no batch larger than 1 ran; batch stats {batch_counts(after)}"


@pytest.mark.parametrize("model", MODELS)
async def test_concurrent_requests_merge_into_dynamic_batches(model, triton, sessions, tokenizers):
    # Mixed lengths in runs of 8 per bucket: like Triton on the GPU, the batcher merges only
    # neighbouring requests of equal shape.
    rng = np.random.default_rng(11)
    requests = [request_inputs(model, index, tokenizers, rng, run=8) for index in range(CONCURRENT_REQUESTS)]
    results, before, after = await run_concurrently(triton.grpc_url, model, requests)
    assert_merged(model, before, after, CONCURRENT_REQUESTS)
    tolerance = PER_RUN_QUANTIZED_TOLERANCE if per_run_quantized(model) else TOLERANCE
    for index, (inputs, result) in enumerate(zip(requests, results)):
        assert_close(result, embedded(sessions, model, inputs), f"{model}, concurrent request {index}", tolerance)


@pytest.fixture(scope="module")
def ragged_triton(triton, repository, tmp_path_factory) -> LocalTriton:
    work = tmp_path_factory.mktemp("triton-ragged")
    derive_cpu_repository(repository, work / "repository", ragged_batching=True)
    server = LocalTriton(work / "repository", triton.env_dir, log_path=work / "tritonserver.log")
    server.start(timeout=120)
    yield server
    server.stop()


async def test_with_ragged_batching_every_length_bucket_merges_and_padding_changes_nothing(
    ragged_triton, sessions, tokenizers
):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(ragged_triton.grpc_url) as client:
        config = client.get_model_config("text_encoder").config
    assert all(tensor.allow_ragged_batch for tensor in config.input)
    # Every request a different bucket from its neighbours: only ragged batching merges them,
    # and the model zero-pads them to the longest in the batch.
    requests = [request_inputs("text_encoder", index, tokenizers, None, run=1) for index in range(CONCURRENT_REQUESTS)]
    results, before, after = await run_concurrently(ragged_triton.grpc_url, "text_encoder", requests)
    assert_merged("text_encoder", before, after, CONCURRENT_REQUESTS)
    for index, (inputs, result) in enumerate(zip(requests, results)):
        assert_close(result, embedded(sessions, "text_encoder", inputs), f"ragged request {index}")


def test_a_malformed_request_fails_alone_and_the_model_keeps_serving(client, sessions, tokenizer):
    from tritonclient.utils import InferenceServerException

    good = tokens(tokenizer, TEXTS[:2], 16)
    bad = {"input_ids": good["input_ids"], "attention_mask": good["attention_mask"][:, :8]}
    with pytest.raises(InferenceServerException):
        infer(client, "text_encoder", bad)
    assert_close(infer(client, "text_encoder", good), embedded(sessions, "text_encoder", good), "after an error")


def test_restart_serves_again_on_the_same_address(triton, sessions, tokenizer):
    import tritonclient.grpc as grpcclient

    url = triton.grpc_url
    triton.restart()
    assert triton.grpc_url == url
    # A new client: an old channel may still be backing off from the refused connections.
    with grpcclient.InferenceServerClient(url) as client:
        assert all(client.is_model_ready(model) for model in MODELS)
        inputs = tokens(tokenizer, TEXTS[:1], 16)
        assert_close(infer(client, "text_encoder", inputs), embedded(sessions, "text_encoder", inputs), "after restart")
