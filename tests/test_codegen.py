"""The committed stubs in taskgate/v1 must be exactly what `make proto` generates now."""

from pathlib import Path

from taskgate.codegen import REPO_ROOT, generate


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / "taskgate").rglob("*_pb2*"))
        if path.suffix in (".py", ".pyi")
    }


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = _generated_files(tmp_path)
    assert fresh, "protoc generated nothing"
    committed = _generated_files(REPO_ROOT)
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, f"stubs out of date, run `make proto`: {stale}"
