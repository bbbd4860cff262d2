"""The Triton implementation of the inference interface (tritonclient.grpc.aio).

Same models, same names, same tensors as the embedded runtime: the service reads each model's
version, metadata and tokenizer from its copy of the model repository (the volume Triton
serves from), and pins that version on every request, so client and server never disagree on
what a model is. Every call has a timeout; transient failures (Triton restarting, a dropped
connection) are retried a bounded number of times within that timeout; anything else becomes
`Unavailable` / `DeadlineExceeded`, which the services turn into their stated degradations
(lexical-only retrieval, feature-only ranking) instead of failing the request.

Each model has a circuit breaker ("triton:<model>", `services.common.circuit`): once calls
have failed a few times in a row (retries exhausted), the client stops sending for a while and
raises `CircuitOpen` (an `Unavailable`) at once, so a dead Triton is not hammered with
reconnects and retries, and every request degrades immediately instead of after its retries.
One probe per open period notices when Triton is back; then calls flow again by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from services.common.circuit import Breakers, CircuitSettings
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.inference import ModelVersion, find_model
from services.common.metrics import CircuitMetrics, TritonMetrics

log = logging.getLogger(__name__)

# Statuses worth a retry: the server is (re)starting or the connection dropped.
_TRANSIENT = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "not ready", "Socket closed", "failed to connect")


def _transient(error: Exception) -> bool:
    text = f"{getattr(error, 'status', lambda: '')()} {error}"
    return any(marker in text for marker in _TRANSIENT)


class TritonInference:
    def __init__(
        self,
        url: str,
        repository: Path,
        pinned_versions: Mapping[str, int] | None = None,
        timeout_seconds: float = 1.0,
        retries: int = 2,
        circuit: CircuitSettings | None = None,
    ):
        import tritonclient.grpc.aio as triton_aio

        from services.common.tracing import instrument_libraries

        instrument_libraries()  # tritonclient opens a grpc.aio channel: trace it like ours
        self.url = url
        self._client = triton_aio.InferenceServerClient(url)
        self._repository = repository
        self._pinned = dict(pinned_versions or {})
        self._timeout = timeout_seconds
        self._retries = retries
        self._versions: dict[str, ModelVersion] = {}
        self._metrics = TritonMetrics()
        self._breakers = Breakers(circuit or CircuitSettings(), CircuitMetrics().transition, prefix="triton:")

    def has_model(self, name: str) -> bool:
        return find_model(self._repository, name, self._pinned.get(name)) is not None

    def model_version(self, name: str) -> ModelVersion:
        if name not in self._versions:
            found = find_model(self._repository, name, self._pinned.get(name))
            if found is None:
                raise Unavailable(f"model {name!r} is not in {self._repository} (run `shelfwise export`)")
            self._versions[name] = found
        return self._versions[name]

    async def wait_until_ready(self, models: Sequence[str], timeout: float) -> bool:
        """True once Triton serves every model at its pinned version; False after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self._client.is_server_ready(client_timeout=1.0):
                    ready = [
                        await self._client.is_model_ready(
                            name, str(self.model_version(name).version), client_timeout=1.0
                        )
                        for name in models
                    ]
                    if all(ready):
                        return True
            except Exception as error:  # not up yet
                log.debug("triton not ready: %s", error)
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)

    async def infer(
        self, name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        # One breaker verdict per call, after its retries: a retry is not another failure.
        return await self._breakers[name].call(lambda: self._infer(name, inputs, outputs, timeout))

    async def _infer(
        self, name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], timeout: float | None
    ) -> dict[str, np.ndarray]:
        from tritonclient.grpc import InferInput, InferRequestedOutput
        from tritonclient.utils import np_to_triton_dtype

        version = str(self.model_version(name).version)
        request_inputs = []
        for input_name, array in inputs.items():
            tensor = InferInput(input_name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request_inputs.append(tensor)
        requested = [InferRequestedOutput(output) for output in outputs]
        timeout = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"triton {name}: no answer within {timeout:.2f}s")
            started = time.perf_counter()
            try:
                result = await self._client.infer(
                    model_name=name, inputs=request_inputs, outputs=requested, model_version=version,
                    client_timeout=left,
                )
            except Exception as error:
                if "DEADLINE_EXCEEDED" in str(error) or "Deadline" in str(error):
                    self._record(name, TritonMetrics.DEADLINE, started)
                    raise DeadlineExceeded(f"triton {name}: no answer within {timeout:.2f}s") from None
                if attempt >= self._retries or not _transient(error):
                    self._record(name, TritonMetrics.UNAVAILABLE, started)
                    raise Unavailable(f"triton {name} at {self.url}: {str(error)[:200]}") from None
                attempt += 1
                pause = 0.05 * 2**attempt
                if deadline - time.monotonic() <= pause:  # no time left for another attempt after the pause
                    self._record(name, TritonMetrics.DEADLINE, started)
                    raise DeadlineExceeded(f"triton {name}: no answer within {timeout:.2f}s") from None
                self._record(name, TritonMetrics.RETRY, started)
                await asyncio.sleep(pause)
                continue
            self._record(name, TritonMetrics.OK, started)
            return {output: result.as_numpy(output) for output in outputs}

    def _record(self, model: str, outcome: str, started: float) -> None:
        self._metrics.record_attempt(model, outcome, (time.perf_counter() - started) * 1000.0)

    async def close(self) -> None:
        await self._client.close()
