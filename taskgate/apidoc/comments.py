"""The contract's comments, read from a FileDescriptorSet that protoc built with
`--include_source_info`: SourceCodeInfo holds each element's leading comment, keyed by
the element's path of field numbers and indexes in the descriptors.
"""

import re
from collections.abc import Iterator

import grpc
from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FileDescriptorProto,
    FileDescriptorSet,
)

Comments = dict[tuple[int, ...], str]

# Field numbers of the descriptor messages, as SourceCodeInfo paths use them.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE, SERVICE_METHOD = 2, 2

# By number, as gRPC orders them. OK is no failure, and a comment names UNKNOWN only to
# say it is never answered.
_CODES = {
    code.name: code.value[0] for code in grpc.StatusCode if code.name not in {"OK", "UNKNOWN"}
}
_CODE_WORD = re.compile(r"\b[A-Z][A-Z_]+[A-Z]\b")
_THOSE_OF = re.compile(r"those of (\w+)")  # "Status codes: those of Submit"


def comments_of(file: FileDescriptorProto) -> Comments:
    """Each element's leading comment, by its SourceCodeInfo path, without `//` spaces."""
    return {
        tuple(location.path): _dedent(location.leading_comments)
        for location in file.source_code_info.location
        if location.leading_comments
    }


def _dedent(comment: str) -> str:
    lines = comment.rstrip("\n").split("\n")
    return "\n".join(line.removeprefix(" ") for line in lines)


def _elements(file: FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every service, RPC, message, field, oneof, enum and enum value: name and path."""
    package = file.package
    for index, service in enumerate(file.service):
        yield f"{package}.{service.name}", (FILE_SERVICE, index)
        for number, method in enumerate(service.method):
            path = (FILE_SERVICE, index, SERVICE_METHOD, number)
            yield f"{package}.{service.name}.{method.name}", path
    for index, message in enumerate(file.message_type):
        yield from _message_elements(message, f"{package}.{message.name}", (FILE_MESSAGE, index))
    for index, enum in enumerate(file.enum_type):
        yield from _enum_elements(enum, f"{package}.{enum.name}", (FILE_ENUM, index))


def _message_elements(
    message: DescriptorProto, name: str, path: tuple[int, ...]
) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield name, path
    for index, field in enumerate(message.field):
        yield f"{name}.{field.name}", (*path, MESSAGE_FIELD, index)
    for index, oneof in enumerate(message.oneof_decl):
        if not synthetic(message, index):
            yield f"{name}.{oneof.name}", (*path, MESSAGE_ONEOF, index)
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            nested_path = (*path, MESSAGE_NESTED, index)
            yield from _message_elements(nested, f"{name}.{nested.name}", nested_path)
    for index, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, f"{name}.{enum.name}", (*path, MESSAGE_ENUM, index))


def _enum_elements(
    enum: EnumDescriptorProto, name: str, path: tuple[int, ...]
) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield name, path
    for index, value in enumerate(enum.value):
        yield f"{name}.{value.name}", (*path, ENUM_VALUE, index)


def synthetic(message: DescriptorProto, oneof_index: int) -> bool:
    """True for the oneof protoc makes for a proto3 `optional` field."""
    members = [field for field in message.field if field.HasField("oneof_index")]
    return any(f.proto3_optional for f in members if f.oneof_index == oneof_index)


def undocumented(files: FileDescriptorSet) -> list[str]:
    """The full names of the elements that have no leading comment."""
    missing = []
    for file in files.file:
        comments = comments_of(file)
        missing += [name for name, path in _elements(file) if not comments.get(path)]
    return missing


def status_codes(comment: str, others: dict[str, list[str]]) -> list[str]:
    """The status codes a comment names, by number; "those of X" adds X's codes."""
    named = [word for word in _CODE_WORD.findall(comment) if word in _CODES]
    for rpc in _THOSE_OF.findall(comment):
        named += others.get(rpc, [])
    return sorted(set(named), key=_CODES.__getitem__)
