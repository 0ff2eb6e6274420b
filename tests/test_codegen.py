"""What `make proto` generates, the stubs in taskgate/v1 and the API reference docs/api.md,
must be exactly what is committed; and every element of the contract has a comment."""

from pathlib import Path

import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorSet

from taskgate.apidoc import undocumented
from taskgate.apidoc.markdown import inline
from taskgate.codegen import API_REFERENCE, REPO_ROOT, descriptor_set, generate
from taskgate.v1 import task_service_pb2 as pb


def _generated_files(root: Path) -> dict[str, bytes]:
    stubs = [
        path
        for path in sorted((root / "taskgate").rglob("*_pb2*"))
        if path.suffix in (".py", ".pyi")
    ]
    return {
        str(path.relative_to(root)): path.read_bytes() for path in [*stubs, root / API_REFERENCE]
    }


@pytest.fixture(scope="module")
def contract() -> FileDescriptorSet:
    return descriptor_set()


def test_committed_stubs_and_reference_match_a_fresh_generation(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = _generated_files(tmp_path)
    assert len(fresh) > 1, "protoc generated nothing"
    committed = _generated_files(REPO_ROOT)
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, f"generated files out of date, run `make proto`: {stale}"


def test_every_element_of_the_contract_has_a_comment(contract: FileDescriptorSet) -> None:
    assert undocumented(contract) == []


def test_an_element_without_a_comment_is_named(tmp_path: Path) -> None:
    proto = tmp_path / "taskgate" / "v9" / "bare.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(
        'syntax = "proto3";\npackage taskgate.v9;\n'
        "// Commented.\nmessage Commented {\n  // Commented.\n  string said = 1;\n"
        "  string unsaid = 2;\n}\n"
        "enum Bare {\n  // Commented.\n  BARE_UNSPECIFIED = 0;\n  BARE_ONE = 1;\n}\n"
    )
    missing = undocumented(descriptor_set(tmp_path))
    assert missing == [
        "taskgate.v9.Commented.unsaid",
        "taskgate.v9.Bare",
        "taskgate.v9.Bare.BARE_ONE",
    ]


def test_the_reference_has_a_section_for_each_rpc_message_and_enum() -> None:
    reference = (REPO_ROOT / API_REFERENCE).read_text()
    service = pb.DESCRIPTOR.services_by_name["TaskService"]
    names = [*service.methods_by_name, *pb.DESCRIPTOR.message_types_by_name]
    names += pb.DESCRIPTOR.enum_types_by_name
    assert [name for name in names if f"\n### {name}\n" not in reference] == []


def test_the_reference_lists_each_rpcs_status_codes() -> None:
    reference = (REPO_ROOT / API_REFERENCE).read_text()
    execute = reference.split("\n### Execute\n")[1].split("\n### ")[0]
    # Execute's comment says "those of Submit, then those of GetResult".
    codes = execute.rpartition("Status codes besides OK: ")[2].rstrip(".\n").split(", ")
    assert {"ALREADY_EXISTS", "FAILED_PRECONDITION", "NOT_FOUND", "DEADLINE_EXCEEDED"} <= set(codes)
    assert "UNKNOWN" not in codes


def test_a_comment_cannot_break_the_markdown_it_lands_in() -> None:
    comment = 'Patterns "a.*;b.*" | `a|b` and\n`self.request.<name>`, "_" or args_json.'
    assert inline(comment) == (
        'Patterns "a.\\*;b.\\*" \\| `a\\|b` and `self.request.<name>`, "\\_" or args_json.'
    )
