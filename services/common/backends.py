"""The inference backend that settings name: ONNX Runtime in the process (`embedded`, the
default; services/common/inference.py) or a Triton server over the same model repository
(`triton`; services/common/triton.py). The one place that knows both, so neither imports the
other's factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from services.common.inference import EmbeddedOnnxRuntime, InferenceBackend

if TYPE_CHECKING:
    from services.common.config import InferenceSettings


def create_backend(settings: "InferenceSettings") -> InferenceBackend:
    """The backend that settings name: `embedded` (ONNX Runtime in process, the default) or
    `triton` (a Triton server over the same repository)."""
    if settings.kind == "embedded":
        return EmbeddedOnnxRuntime(settings.model_repository, settings.pinned_versions)
    if settings.kind == "triton":
        from services.common.triton import TritonInference

        return TritonInference(
            settings.triton_url,
            settings.model_repository,
            settings.pinned_versions,
            settings.triton_timeout_seconds,
            settings.triton_retries,
            settings.circuit,
        )
    raise ValueError(f"SHELFWISE_INFERENCE={settings.kind!r} is not supported; use 'embedded' or 'triton'")


async def wait_for_models(backend: InferenceBackend, models: Sequence[str], timeout: float) -> bool:
    """Start-up readiness: True when the backend can serve these models (always, in process)."""
    wait = getattr(backend, "wait_until_ready", None)
    return True if wait is None else await wait(models, timeout)
