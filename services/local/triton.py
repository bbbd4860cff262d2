"""A real Triton Inference Server on a CPU machine, over the project's model repository.

`model_repository/` is written for NVIDIA's GPU Triton container (ONNX Runtime backend,
`KIND_GPU`). The only Triton that installs from PyPI without Docker is the `tritonserver` 2.51
bundled in `nvidia-pytriton`, which carries nothing but the python backend (DESIGN.md §2). This
module makes that server usable for tests, benchmarks and `shelfwise triton up`:

- `ensure_triton_environment` gives the server its own virtual environment, because
  nvidia-pytriton pulls a tritonclient that needs protobuf<7 and the main environment runs
  protobuf 7;
- `derive_cpu_repository` writes a CPU repository with the same model names, tensors, batch
  limits and dynamic batching as the source, each model the python-backend
  `triton_backend/model.py`, which runs the source ONNX file with ONNX Runtime once per dynamic
  batch;
- `LocalTriton` starts and stops the server with the environment the bundled binary needs;
- `main` runs it in the foreground: `shelfwise triton up`.

Clients (tritonclient 2.41 in the main environment) cannot tell the derived models from the
GPU ones: input/output names, types and dims are identical.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.local.processes import free_ports
from services.common.inference import TRAINED_ON_SHOP_DATA

# Only what the server and its python-backend models import; kept apart from the main
# environment because nvidia-pytriton's tritonclient pins protobuf<7.
TRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime", "numpy<2")
ENVIRONMENT_MARKER = ".shelfwise-requirements"
PYTHON_VERSION = "3.11"
# Marks a directory as written by `derive_cpu_repository`, so re-deriving may delete it.
DERIVED_MARKER = ".shelfwise-derived"
# The config parameter that tells the generic model.py which ONNX file to run. `{version}` is
# replaced by the version Triton loads, so one config serves every exported version.
# Parameters of the derived configs that triton_backend/model.py reads.
ONNX_PATH_PARAMETER = "onnx_model_path"
ONNX_THREADS_PARAMETER = "onnx_intra_op_threads"
ONNX_INTRA_OP_THREADS = 2
# Triton drains in-flight requests for up to this long on SIGTERM; stop() kills after STOP_TIMEOUT.
EXIT_TIMEOUT_SECONDS = 10
STOP_TIMEOUT_SECONDS = 15


def _site_packages(env_dir: Path) -> Path:
    return env_dir / "lib" / f"python{PYTHON_VERSION}" / "site-packages"


def ensure_triton_environment(env_dir: Path, python: str = "python3.11") -> Path:
    """Create `env_dir` with the local Triton's packages unless it already holds exactly them."""
    env_dir = Path(env_dir).absolute()
    marker = env_dir / ENVIRONMENT_MARKER
    wanted = "\n".join(TRITON_REQUIREMENTS) + "\n"
    env_python = env_dir / "bin" / "python"

    def installed() -> bool:
        return env_python.exists() and marker.is_file() and marker.read_text(encoding="utf-8") == wanted

    if installed():
        return env_dir
    env_dir.mkdir(parents=True, exist_ok=True)
    # Tests, `shelfwise up --triton` and benchmarks may all ask at once; one installs.
    with open(env_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return env_dir
        print(
            f"Installing the local Triton environment in {env_dir} ({', '.join(TRITON_REQUIREMENTS)}); "
            "about a minute...",
            file=sys.stderr,
            flush=True,
        )
        if not env_python.exists():
            subprocess.run([python, "-m", "venv", str(env_dir)], check=True)
        # Removed first: an interrupted install must not look complete next time.
        marker.unlink(missing_ok=True)
        subprocess.run(
            # Twice quiet: the one progress line above, pip's errors, nothing else.
            [str(env_python), "-m", "pip", "install", "-qq", "--disable-pip-version-check", *TRITON_REQUIREMENTS],
            check=True,
        )
        marker.write_text(wanted, encoding="utf-8")
    return env_dir


# The one python-backend model every derived model runs, copied into each version folder.
BACKEND_MODEL = Path(__file__).with_name("triton_backend") / "model.py"


def _exported_versions(model_dir: Path) -> list[str]:
    return sorted(
        (child.name for child in model_dir.iterdir() if child.name.isdigit() and (child / "model.onnx").is_file()),
        key=int,
    )


def derive_cpu_repository(
    source: Path, target: Path, dynamic_batching: bool = True, ragged_batching: bool = False
) -> list[str]:
    """Write a python-backend CPU repository for every model of `source` into `target`.

    Returns the names of the models derived: every folder of `source` with a config.pbtxt (the
    text encoders, MiniLM and multilingual, the CTR head, and the user-sequence encoder once it
    has been trained), so whichever one the services are set to use is there. A model with a
    config but no exported version (other than one trained on the shop's events) raises
    ValueError rather than being left out, which would only surface later as a service failing
    to find its model. `target` is replaced as a whole, so models removed from the source
    disappear; it must be empty, missing, or an earlier derived repository.

    `dynamic_batching=False` drops the source's dynamic batching (to measure what it buys).
    `ragged_batching=True` marks variable-size inputs `allow_ragged_batch`, so Triton merges
    requests of different length buckets and the model zero-pads them to one shape. Off by
    default because the GPU configs do not allow it: there, as here by default, Triton's dynamic
    batcher merges only requests whose input shapes are equal.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    source = Path(source).absolute()
    target = Path(target).absolute()
    model_dirs = sorted(path for path in source.iterdir() if (path / "config.pbtxt").is_file())
    # Not yet trained on this shop's events: nothing to serve, and the services do without it.
    model_dirs = [path for path in model_dirs if _exported_versions(path) or path.name not in TRAINED_ON_SHOP_DATA]
    unexported = [path.name for path in model_dirs if not _exported_versions(path)]
    if unexported:
        raise ValueError(
            f"{', '.join(unexported)} in {source} has a config.pbtxt but no exported version: run `shelfwise export`"
        )
    if target.exists():
        if any(target.iterdir()) and not (target / DERIVED_MARKER).is_file():
            raise ValueError(f"{target} is not a derived Triton repository; refusing to replace it")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / DERIVED_MARKER).write_text(f"derived from {source}\n", encoding="utf-8")

    derived = []
    for model_dir in model_dirs:
        versions = _exported_versions(model_dir)
        original = text_format.Parse(
            (model_dir / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
        )
        config = model_config_pb2.ModelConfig(
            name=original.name or model_dir.name,
            backend="python",
            max_batch_size=original.max_batch_size,
        )
        config.input.extend(original.input)
        # Padding is only harmless when no output has a variable dim (see triton_backend/model.py).
        if ragged_batching and all(-1 not in output.dims for output in original.output):
            for tensor in config.input:
                if -1 in tensor.dims:
                    tensor.allow_ragged_batch = True
        config.output.extend(original.output)
        if original.HasField("version_policy"):
            config.version_policy.CopyFrom(original.version_policy)
        if dynamic_batching and original.HasField("dynamic_batching"):
            config.dynamic_batching.CopyFrom(original.dynamic_batching)
        # One stub process per model: each runs ONNX Runtime with two intra-op threads, which is
        # all the cores these machines have; more instances would only contend.
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=1)
        # A path, not a copy: the weights are ~90 MB and already on disk.
        config.parameters[ONNX_PATH_PARAMETER].string_value = str(model_dir / "{version}" / "model.onnx")
        config.parameters[ONNX_THREADS_PARAMETER].string_value = str(ONNX_INTRA_OP_THREADS)

        out_dir = target / model_dir.name
        out_dir.mkdir()
        (out_dir / "config.pbtxt").write_text(
            f"# Derived by services/local/triton.py from {model_dir / 'config.pbtxt'}: same tensors and\n"
            "# batching, python backend on the CPU. Rewritten by every derive; do not edit.\n"
            + text_format.MessageToString(config),
            encoding="utf-8",
        )
        for version in versions:
            (out_dir / version).mkdir()
            shutil.copyfile(BACKEND_MODEL, out_dir / version / "model.py")
        derived.append(config.name)
    return derived


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@dataclass(frozen=True)
class TritonPorts:
    """The server's three ports; 0 picks a free one."""

    grpc: int = 0
    http: int = 0
    metrics: int = 0


class LocalTriton:
    """The bundled `tritonserver` over a derived CPU repository, as a child process."""

    def __init__(
        self, repository: Path, env_dir: Path, log_path: Path | None = None, host: str = "127.0.0.1",
        ports: TritonPorts = TritonPorts(),
    ):
        self.repository = Path(repository).absolute()
        # Loopback by default: a developer's model server is not for the network.
        self.host = host
        self.env_dir = Path(env_dir).absolute()
        # Ports are fixed here, not at start, so `restart()` comes back on the same address.
        picked = iter(free_ports(3))
        self.grpc_port = ports.grpc or next(picked)
        self.http_port = ports.http or next(picked)
        self.metrics_port = ports.metrics or next(picked)
        self.log_path = Path(log_path).absolute() if log_path else self.repository.parent / "tritonserver.log"
        self.backend_dir = self.repository.parent / "backends"
        self._process: subprocess.Popen | None = None
        self._log = None
        self._started_once = False

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def server_binary(self) -> Path:
        return _site_packages(self.env_dir) / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    def model_names(self) -> list[str]:
        return sorted(path.name for path in self.repository.iterdir() if (path / "config.pbtxt").is_file())

    def _prepare_backends(self) -> None:
        """Assemble `--backend-directory`: the wheel's python backend plus the 3.11 stub.

        The wheel keeps one stub per Python version apart from the backend; the backend looks
        for `triton_python_backend_stub` next to `libtriton_python.so`.
        """
        dist = _site_packages(self.env_dir) / "pytriton" / "tritonserver"
        python_backend = self.backend_dir / "python"
        if python_backend.exists():
            shutil.rmtree(python_backend)
        python_backend.mkdir(parents=True)
        for item in (dist / "backends" / "python").iterdir():
            if item.name != "__pycache__":
                (python_backend / item.name).symlink_to(item)
        # The stub embeds libpython: its version must be the environment's (3.11).
        (python_backend / "triton_python_backend_stub").symlink_to(
            dist / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
        )

    def _environment(self) -> dict[str, str]:
        env_python = self.env_dir / "bin" / "python"
        libdir = subprocess.run(
            [str(env_python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = dict(os.environ)
        # The main environment's paths must not leak into the stub's embedded interpreter
        # (protobuf 7, another numpy); the stub finds its site-packages from `python` on PATH.
        for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(name, None)
        env["VIRTUAL_ENV"] = str(self.env_dir)
        env["PATH"] = f"{self.env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        # LIBDIR: the stub links libpython3.11 and must get the interpreter the venv was made
        # from (a foreign one fails with "'_thread.RLock' object has no attribute
        # '_recursion_count'"). nvidia_pytriton.libs: the server's own libraries (without them
        # it hangs while loading models).
        libraries = [libdir, str(_site_packages(self.env_dir) / "nvidia_pytriton.libs")]
        if env.get("LD_LIBRARY_PATH"):
            libraries.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
        return env

    def command(self) -> list[str]:
        return [
            str(self.server_binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backend_dir}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-http=true",
            "--allow-metrics=true",
            "--log-verbose=0",
            # Fail fast: a model that does not load ends the server, so start() reports it at
            # once with the log instead of serving a partial repository the services would
            # silently fall back from.
            "--exit-on-error=true",
            "--strict-readiness=true",
            # Below stop()'s SIGKILL deadline, so a stuck request cannot turn a clean stop into a kill.
            f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
        ]

    def start(self, timeout: float = 120) -> None:
        """Start the server and return when it and every model of the repository are READY."""
        if self.running:
            return
        if not self.server_binary.is_file():
            raise RuntimeError(f"{self.server_binary} not found: run ensure_triton_environment({self.env_dir}) first")
        models = self.model_names()
        self._prepare_backends()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh log per instance; a restart appends, so the log shows why it was restarted.
        self._log = open(self.log_path, "ab" if self._started_once else "wb")
        self._started_once = True
        self._process = subprocess.Popen(
            self.command(),
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C in a terminal reaches only us, and we stop the
            # server (and its stub processes) in order.
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(models, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, models: list[str], timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        pending = list(models)
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RuntimeError(
                        f"tritonserver exited with code {code} while starting; last lines of {self.log_path}:\n"
                        + tail(self.log_path)
                    )
                try:
                    if client.is_server_live():
                        pending = [name for name in pending if not client.is_model_ready(name)]
                        if not pending and client.is_server_ready():
                            return
                except Exception:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"tritonserver not ready after {timeout:.0f} s (models not ready: {pending}); "
                        f"last lines of {self.log_path}:\n" + tail(self.log_path)
                    )
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (Triton drains in-flight requests and unloads models), SIGKILL after `timeout`."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    # The whole group: the stub processes must not outlive a killed server.
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def restart(self, timeout: float = 120) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "LocalTriton":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
