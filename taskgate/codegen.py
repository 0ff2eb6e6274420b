"""Generates the Python stubs for `proto/` into the `taskgate` tree and the API reference
`docs/api.md` from the proto's comments (`make proto`), and checks the contract with buf
(`python -m taskgate.codegen lint [BRANCH]`, part of `make lint`): lint, format, and no
breaking change against BRANCH (main by default).

The generated modules, their `.pyi` type stubs and the reference are committed, so users
of the package need neither protoc nor grpcio-tools; `tests/test_codegen.py` fails when
the committed files differ from a fresh generation.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf.descriptor_pb2 import FileDescriptorSet

from taskgate import apidoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
TOOLS = Path(sys.executable).parent  # protoc plugins and buf come with the dev extra
API_REFERENCE = Path("docs") / "api.md"


def proto_files(root: Path = PROTO_ROOT) -> list[str]:
    """Every `.proto` file of the contract below `root` (`proto/`), relative to it, sorted.

    Only taskgate's own: the `google/rpc` protos beside it are googleapis', and Python
    callers get their modules from googleapis-common-protos.
    """
    own = (root / "taskgate").rglob("*.proto")
    return sorted(str(path.relative_to(root)) for path in own)


def _protoc(*args: str, root: Path = PROTO_ROOT) -> None:
    """Run grpcio-tools' protoc on the contract below `root`, with its import paths."""
    # Imported here: grpcio-tools is a development dependency only.
    from grpc_tools import protoc  # noqa: PLC0415

    well_known = Path(protoc.__file__).parent / "_proto"
    includes = [f"-I{root}", f"-I{well_known}"]
    if protoc.main(["protoc", *includes, *args, *proto_files(root)]) != 0:
        raise SystemExit("protoc failed; see the messages above")


def descriptor_set(root: Path = PROTO_ROOT) -> FileDescriptorSet:
    """The contract's own files as descriptors, with their comments (source info)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "contract.binpb"
        _protoc(f"--descriptor_set_out={out}", "--include_source_info", root=root)
        return FileDescriptorSet.FromString(out.read_bytes())


def generate(out_dir: Path) -> None:
    """Write `*_pb2.py`, `*_pb2_grpc.py`, their `.pyi` stubs and `docs/api.md` below `out_dir`."""
    _protoc(
        f"--plugin=protoc-gen-mypy={TOOLS / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={TOOLS / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
    )
    reference = out_dir / API_REFERENCE
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text(apidoc.render(descriptor_set()))


def base_commit(against: str) -> str:
    """The commit `against` names, or `origin/<against>` in a clone without that branch."""
    for ref in (against, f"origin/{against}"):
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode == 0:
            return found.stdout.strip()
    raise SystemExit(f"no commit {against!r} to compare proto/ with; set PROTO_BASE")


def lint(against: str = "main") -> int:
    """buf lint (STANDARD), buf format and buf breaking against `against`; buf's exit code.

    The rules are in `proto/buf.yaml`. buf reads the base from the repository's own
    git objects (a worktree's `.git` file works too), so no network is needed; on
    `against` itself the breaking check has nothing to compare and passes.
    """
    buf = str(TOOLS / "buf")
    base = f"{REPO_ROOT / '.git'}#ref={base_commit(against)},subdir=proto"
    checks = [
        [buf, "lint"],
        [buf, "format", "--diff", "--exit-code"],
        [buf, "breaking", "--against", base],
    ]
    for check in checks:
        code = subprocess.run(check, cwd=PROTO_ROOT, check=False).returncode
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["lint"]:
        sys.exit(lint(*sys.argv[2:3]))
    generate(REPO_ROOT)
