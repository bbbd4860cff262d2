"""The inference interface every service uses to run models, and its embedded implementation.

Models live in the Triton model repository layout (`<repository>/<model>/<version>/model.onnx`
next to a committed `config.pbtxt`). `InferenceBackend` is what services depend on; the
embedded implementation runs the same ONNX files with ONNX Runtime inside the service process
(the default), and a Triton implementation (tritonclient, services/common/triton.py) plugs in
behind the same methods; services/common/backends.py builds the one the settings name.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from services.common.errors import Unavailable
from services.common.model_versions import MODEL_FILE, latest_version, version_dir



# Models trained on the shop's own data rather than exported from packaged weights: the sequence
# model on its events (`shelfwise train rec --events`), the relevance ranker on relevance
# judgments (`shelfwise train ranker`; `shelfwise export` trains one when the benchmark data is
# there). A system may have no version of them, and the services work without them.
TRAINED_ON_SHOP_DATA = ("user_sequence_encoder", "relevance_ranker")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def find_model(repository: Path, name: str, version: int | None = None) -> ModelVersion | None:
    """The pinned version, else the highest numbered version folder holding a model.onnx."""
    if version is None:
        version = latest_version(repository, name)
        if version is None:
            return None
    path = version_dir(repository, name, version) / MODEL_FILE
    return ModelVersion(name, version, path) if path.is_file() else None


class InferenceBackend(Protocol):
    """Runs a named model of the repository on a batch of named input tensors."""

    def has_model(self, name: str) -> bool: ...

    def model_version(self, name: str) -> ModelVersion: ...

    async def infer(
        self, name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """`timeout` overrides the backend's default (bulk work such as catalogue encoding
        needs longer than a query); in-process backends have nothing to time out."""
        ...

    async def close(self) -> None: ...


# Models up to this size (the relevance ranker, the CTR head: trees and small MLPs) run on the
# event loop's thread: a run over 200 candidates is short, and handing it to a worker thread
# (a queue, a wake-up, the GIL handed over and back) cost about half as much again.
INLINE_MAX_BYTES = 1 << 20


class EmbeddedOnnxRuntime:
    """ONNX Runtime in-process. Sessions load on first use; runs of the encoders go to a worker
    thread (ORT releases the GIL) so the event loop keeps serving while a batch runs; small
    models run in place (`INLINE_MAX_BYTES`)."""

    def __init__(self, repository: Path, pinned_versions: Mapping[str, int] | None = None, threads: int | None = None):
        self._repository = repository
        self._pinned = dict(pinned_versions or {})
        self._threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._sessions: dict[str, object] = {}
        self._inline: set[str] = set()
        self._versions: dict[str, ModelVersion] = {}

    @property
    def threads(self) -> int:
        """ONNX Runtime's intra-op threads per session."""
        return self._threads

    def has_model(self, name: str) -> bool:
        return name in self._versions or find_model(self._repository, name, self._pinned.get(name)) is not None

    def model_version(self, name: str) -> ModelVersion:
        if name not in self._versions:
            found = find_model(self._repository, name, self._pinned.get(name))
            if found is None:
                pinned = self._pinned.get(name)
                raise Unavailable(
                    f"model {name!r}{f' version {pinned}' if pinned else ''} is not in {self._repository}"
                    " (run `shelfwise export`)"
                )
            self._versions[name] = found
        return self._versions[name]

    def _session(self, name: str):
        session = self._sessions.get(name)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            # Several services share the machine's cores; ORT's idle threads would otherwise
            # spin after every run and slow the other services' models (measured: p50 of a
            # Search went from 23 to 38 ms once ranking ran its ONNX head next to retrieval).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.model_version(name).path
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
            if path.stat().st_size <= INLINE_MAX_BYTES:
                self._inline.add(name)
            self._sessions[name] = session
        return session

    def load(self, name: str) -> ModelVersion:
        """Loads a model now (at start-up) rather than on the first request."""
        self._session(name)
        return self.model_version(name)

    async def infer(
        self, name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        session = self._session(name)
        if name in self._inline:
            results = session.run(list(outputs), dict(inputs))
        else:
            results = await asyncio.to_thread(session.run, list(outputs), dict(inputs))
        return dict(zip(outputs, results))

    async def close(self) -> None:
        self._sessions.clear()
        self._inline.clear()
