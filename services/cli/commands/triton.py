"""`shelfwise triton up`: a real Triton server in the foreground on this machine's CPU, over a
repository derived from model_repository/ (services/local/triton.py), until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from services.common.config import text_encoder_model
from services.local.triton import LocalTriton, TritonPorts, derive_cpu_repository, ensure_triton_environment, tail


def register(commands) -> None:
    triton = commands.add_parser("triton", help="a real Triton server on this machine (CPU)")
    triton_commands = triton.add_subparsers(dest="triton_command", required=True)
    triton_up = triton_commands.add_parser(
        "up", help="derive the CPU repository and run tritonserver", description=__doc__
    )
    add_arguments(triton_up)
    triton_up.set_defaults(run=triton_up_command)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--env-dir", type=Path, default=Path(".venv-triton"))
    parser.add_argument("--work-dir", type=Path, default=Path(".shelfwise/triton"))
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--no-dynamic-batching", action="store_true", help="derive models without dynamic batching")
    parser.add_argument(
        "--ragged-batching",
        action="store_true",
        help="let requests of different length buckets merge (the GPU configs do not)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the models to be ready")


def triton_up_command(args) -> int:
    env_dir = ensure_triton_environment(args.env_dir)
    repository = args.work_dir.absolute() / "repository"
    # The encoder the services will ask for (same setting, same default as retrieval's).
    text_encoder = text_encoder_model()
    try:
        models = derive_cpu_repository(
            args.model_repository,
            repository,
            dynamic_batching=not args.no_dynamic_batching,
            ragged_batching=args.ragged_batching,
        )
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    if text_encoder not in models:
        print(
            f"SHELFWISE_TEXT_ENCODER={text_encoder} is not a model of {args.model_repository} "
            f"(it has: {', '.join(models) or 'nothing'}); run `shelfwise export` or change the setting",
            file=sys.stderr,
        )
        return 1
    triton = LocalTriton(
        repository,
        env_dir,
        ports=TritonPorts(args.grpc_port, args.http_port, args.metrics_port),
        log_path=args.work_dir.absolute() / "tritonserver.log",
        host=args.host,
    )

    def interrupt(signum, frame):
        # SIGTERM too: the server runs in its own session and must not outlive us.
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.monotonic()
        triton.start(timeout=args.timeout)
        elapsed = time.monotonic() - started
        print(f"Triton ready in {elapsed:.1f} s at {triton.grpc_url} (gRPC), models: {', '.join(models)}")
        print(f"services embed text with {text_encoder} (SHELFWISE_TEXT_ENCODER)")
        print(f"log: {triton.log_path}; Ctrl-C to stop", flush=True)
        while triton.running:
            time.sleep(0.5)
        print(f"tritonserver exited; last lines of {triton.log_path}:\n{tail(triton.log_path)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
