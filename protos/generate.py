"""Generates the Python stubs of every Shelfwise proto (the one way stubs are made).

Run `python protos/generate.py` after editing a .proto. Stubs are written next to the protos
(`protos/shelfwise/<service>/v1/*_pb2*.py`) so the `shelfwise` package installs from
`protos/`; `tests/contract/test_protos.py` fails when they are stale.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.glob("shelfwise/**/*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Writes stubs (and package __init__ files) under out_dir; returns the files written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    protos = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    for proto in protos:
        package_dir = out_dir / Path(proto).parent
        while package_dir != out_dir:
            init = package_dir / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated protobuf package; do not edit (see protos/generate.py)."""\n')
            package_dir = package_dir.parent
    return sorted(p for p in out_dir.rglob("*") if p.suffix in {".py", ".pyi"} and p.name != "generate.py")


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
    print(f"wrote {len(written)} files")
