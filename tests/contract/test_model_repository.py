"""Contract between the committed Triton configs and the models they serve.

Every ``model_repository/<model>/config.pbtxt`` must parse as Triton's ``ModelConfig``, be set up
for dynamic batching on GPU, and, for ONNX models, describe exactly the inputs and outputs of
the exported graph. The ONNX files are build outputs (``shelfwise export`` /
``python -m training.encoders.export``); a missing export is a failure here, not a skip, because the test
command exports first and a silently skipped contract check is how config drift ships.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.common.inference import TRAINED_ON_SHOP_DATA
from tests.support.models import UNTRAINED_EXPORTS, export_untrained

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
CONFIG_PATHS = sorted(MODEL_REPOSITORY.glob("*/config.pbtxt"))
ONNX_PLATFORMS = {"onnxruntime_onnx"}
ONNX_BACKENDS = {"onnxruntime"}

# Triton config data types and the ONNX element types they must match.
TRITON_TO_ONNX_TYPE = {
    "TYPE_BOOL": onnx.TensorProto.BOOL,
    "TYPE_UINT8": onnx.TensorProto.UINT8,
    "TYPE_UINT16": onnx.TensorProto.UINT16,
    "TYPE_UINT32": onnx.TensorProto.UINT32,
    "TYPE_UINT64": onnx.TensorProto.UINT64,
    "TYPE_INT8": onnx.TensorProto.INT8,
    "TYPE_INT16": onnx.TensorProto.INT16,
    "TYPE_INT32": onnx.TensorProto.INT32,
    "TYPE_INT64": onnx.TensorProto.INT64,
    "TYPE_FP16": onnx.TensorProto.FLOAT16,
    "TYPE_FP32": onnx.TensorProto.FLOAT,
    "TYPE_FP64": onnx.TensorProto.DOUBLE,
    "TYPE_BF16": onnx.TensorProto.BFLOAT16,
    "TYPE_STRING": onnx.TensorProto.STRING,
}


def _config_id(path: Path) -> str:
    return path.parent.name


@pytest.fixture(scope="module")
def model_repository() -> Path:
    return MODEL_REPOSITORY


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _is_onnx(config: model_config_pb2.ModelConfig) -> bool:
    return config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS


def _is_onnx_config(path: Path) -> bool:
    """Collection-time filter; an unparsable config is kept so that its test fails loudly."""
    try:
        return _is_onnx(_parse(path))
    except text_format.ParseError:
        return True


def test_every_model_trained_on_shop_data_has_an_untrained_export_to_check_its_config() -> None:
    assert set(UNTRAINED_EXPORTS) == set(TRAINED_ON_SHOP_DATA)


def _exported_onnx_models(config_path: Path, config: model_config_pb2.ModelConfig, tmp_path: Path) -> list[Path]:
    """The model file of every numeric version folder; fails when nothing has been exported."""
    model_dir = config_path.parent
    filename = config.default_model_filename or "model.onnx"
    versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions and model_dir.name in TRAINED_ON_SHOP_DATA:
        return [export_untrained(model_dir.name, tmp_path)]
    if not versions:
        pytest.fail(
            f"{model_dir / '1' / filename} is missing: run `shelfwise export` first "
            "(or `python -m training.encoders.export`)"
        )
    missing = [v / filename for v in versions if not (v / filename).is_file()]
    if missing:
        pytest.fail(f"{', '.join(map(str, missing))} missing: run `shelfwise export` first (or `python -m training.encoders.export`)")
    return [v / filename for v in versions]


def _onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    """ONNX dims with symbolic/unknown ones as -1, as Triton writes them."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def test_model_repository_holds_the_text_encoder_config(model_repository: Path) -> None:
    assert (model_repository / "text_encoder" / "config.pbtxt") in CONFIG_PATHS


def test_model_repository_holds_the_multilingual_text_encoder_config(model_repository: Path) -> None:
    assert (model_repository / "text_encoder_multilingual" / "config.pbtxt") in CONFIG_PATHS


def test_the_default_text_encoder_setting_names_a_model_of_the_repository(model_repository: Path) -> None:
    from services.common.config import DEFAULT_TEXT_ENCODER

    assert (model_repository / DEFAULT_TEXT_ENCODER / "config.pbtxt") in CONFIG_PATHS


TEXT_ENCODER_CONFIGS = [p for p in CONFIG_PATHS if p.parent.name.startswith("text_encoder")]


@pytest.mark.parametrize("config_path", TEXT_ENCODER_CONFIGS, ids=_config_id)
def test_text_encoder_config_takes_what_the_text_encoder_client_sends(config_path: Path, tmp_path: Path) -> None:
    """services.common.text_encoder sends int64 input_ids and attention_mask [batch, tokens] to
    any text encoder and reads float32 sentence_embedding [batch, dimension], the dimension its
    metadata.json states; the metadata also carries the prefixes the client adds."""
    import json

    config = _parse(config_path)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("input_ids", "TYPE_INT64", [-1]),
        ("attention_mask", "TYPE_INT64", [-1]),
    ]
    [output] = config.output
    assert (output.name, model_config_pb2.DataType.Name(output.data_type)) == ("sentence_embedding", "TYPE_FP32")
    for model_file in _exported_onnx_models(config_path, config, tmp_path):
        metadata_file = model_file.parent / "metadata.json"
        if not metadata_file.is_file():
            pytest.fail(f"{metadata_file} missing: run `shelfwise export` first (or `python -m training.encoders.export`)")
        metadata = json.loads(metadata_file.read_text())
        assert metadata["model"] == config.name
        assert list(output.dims) == [metadata["dimension"]]
        assert isinstance(metadata.get("query_prefix"), str) and isinstance(metadata.get("passage_prefix"), str)
        assert max(metadata["length_buckets"]) <= metadata["max_sequence_length"]


@pytest.mark.parametrize("config_path", CONFIG_PATHS, ids=_config_id)
def test_config_parses_as_triton_model_config_named_after_its_folder(config_path: Path) -> None:
    config = _parse(config_path)
    assert config.name == config_path.parent.name


@pytest.mark.parametrize("config_path", CONFIG_PATHS, ids=_config_id)
def test_config_enables_dynamic_batching_within_max_batch_size(config_path: Path) -> None:
    config = _parse(config_path)
    assert config.max_batch_size > 0, "max_batch_size must be > 0 for Triton to batch requests"
    assert config.HasField("dynamic_batching"), "dynamic_batching must be configured"
    preferred = list(config.dynamic_batching.preferred_batch_size)
    too_big = [size for size in preferred if size > config.max_batch_size]
    assert not too_big, f"preferred_batch_size {too_big} exceeds max_batch_size {config.max_batch_size}"


@pytest.mark.parametrize("config_path", CONFIG_PATHS, ids=_config_id)
def test_config_runs_every_instance_group_on_gpu(config_path: Path) -> None:
    config = _parse(config_path)
    assert config.instance_group, "instance_group must be set (the default would follow the host's devices)"
    kinds = [model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) for group in config.instance_group]
    assert kinds == ["KIND_GPU"] * len(kinds), f"instance groups must be KIND_GPU, got {kinds}"


@pytest.mark.parametrize(
    "config_path",
    [p for p in CONFIG_PATHS if _is_onnx_config(p)],
    ids=_config_id,
)
def test_onnx_config_inputs_and_outputs_match_the_exported_graph(config_path: Path, tmp_path: Path) -> None:
    config = _parse(config_path)
    for model_file in _exported_onnx_models(config_path, config, tmp_path):
        graph = onnx.load(str(model_file), load_external_data=False).graph
        initializers = {init.name for init in graph.initializer}
        graph_inputs = {v.name: v for v in graph.input if v.name not in initializers}
        graph_outputs = {v.name: v for v in graph.output}

        for kind, declared, actual in (
            ("input", config.input, graph_inputs),
            ("output", config.output, graph_outputs),
        ):
            assert sorted(t.name for t in declared) == sorted(actual), (
                f"{model_file}: config {kind}s {sorted(t.name for t in declared)} != graph {kind}s {sorted(actual)}"
            )
            for tensor in declared:
                value = actual[tensor.name]
                type_name = model_config_pb2.DataType.Name(tensor.data_type)
                assert value.type.tensor_type.elem_type == TRITON_TO_ONNX_TYPE[type_name], (
                    f"{model_file}: {kind} {tensor.name} is "
                    f"{onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)} in the graph, "
                    f"{type_name} in the config"
                )
                dims = _onnx_dims(value)
                if config.max_batch_size > 0:
                    assert dims and dims[0] == -1, f"{model_file}: {tensor.name} batch dim must be dynamic, got {dims}"
                    dims = dims[1:]
                assert dims == list(tensor.dims), (
                    f"{model_file}: {kind} {tensor.name} dims {dims} (batch excluded) != config dims {list(tensor.dims)}"
                )
