"""Generates the Python stubs for `proto/` into the `taskgate` tree (`make proto`), and
lints the contract with buf (`python -m taskgate.codegen lint`, part of `make lint`).

The generated modules and their `.pyi` type stubs are committed, so users of the
package need neither protoc nor grpcio-tools; `tests/test_codegen.py` fails when
the committed files differ from a fresh generation.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
TOOLS = Path(sys.executable).parent  # protoc plugins and buf come with the dev extra


def proto_files() -> list[str]:
    """Every `.proto` file of the contract, relative to `proto/`, in a stable order."""
    return sorted(str(path.relative_to(PROTO_ROOT)) for path in PROTO_ROOT.rglob("*.proto"))


def _protoc(*args: str) -> None:
    """Run grpcio-tools' protoc with the contract's import paths."""
    # Imported here: grpcio-tools is a development dependency only.
    from google.rpc import status_pb2  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415

    well_known = Path(protoc.__file__).parent / "_proto"
    # googleapis-common-protos ships google/rpc/*.proto beside its modules.
    googleapis = Path(status_pb2.__file__).parent.parent.parent
    includes = [f"-I{PROTO_ROOT}", f"-I{well_known}", f"-I{googleapis}"]
    if protoc.main(["protoc", *includes, *args, *proto_files()]) != 0:
        raise SystemExit("protoc failed; see the messages above")


def generate(out_dir: Path) -> None:
    """Write `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs below `out_dir`."""
    _protoc(
        f"--plugin=protoc-gen-mypy={TOOLS / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={TOOLS / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
    )


def lint() -> int:
    """buf lint (STANDARD, `proto/buf.yaml`) and buf format on the contract; buf's exit code.

    buf reads a descriptor set built by protoc, because with no network it cannot
    fetch `google/rpc/status.proto` from the Buf Schema Registry.
    """
    buf = str(TOOLS / "buf")
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "contract.binpb"
        _protoc("--include_imports", "--include_source_info", f"--descriptor_set_out={image}")
        paths = [arg for path in proto_files() for arg in ("--path", path)]
        checks = [
            [buf, "lint", str(image), "--config", str(PROTO_ROOT / "buf.yaml"), *paths],
            [buf, "format", "--diff", "--exit-code", str(PROTO_ROOT)],
        ]
        for check in checks:
            code = subprocess.run(check, cwd=PROTO_ROOT, check=False).returncode
            if code != 0:
                return code
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["lint"]:
        sys.exit(lint())
    generate(REPO_ROOT)
