"""Generates the Python stubs for `proto/` into the `taskgate` tree (`make proto`).

The generated modules and their `.pyi` type stubs are committed, so users of the
package need neither protoc nor grpcio-tools; `tests/test_codegen.py` fails when
the committed files differ from a fresh generation.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"


def proto_files() -> list[Path]:
    """Every `.proto` file of the contract, in a stable order."""
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs below `out_dir`."""
    # Imported here: grpcio-tools is a development dependency only.
    from google.rpc import status_pb2  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415

    plugin_dir = Path(sys.executable).parent
    well_known = Path(protoc.__file__).parent / "_proto"
    # googleapis-common-protos ships google/rpc/*.proto beside its modules.
    googleapis = Path(status_pb2.__file__).parent.parent.parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"-I{googleapis}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


if __name__ == "__main__":
    generate(REPO_ROOT)
