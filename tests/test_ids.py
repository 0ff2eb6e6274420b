"""Task ids and delivery tags are random version-4 UUIDs, as Celery's own are."""

import uuid

from taskgate.server.ids import random_uuid


def test_random_uuids_read_back_as_version_4_uuids_and_differ() -> None:
    made = [random_uuid() for _ in range(10_000)]
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text
    assert len(set(made)) == len(made)
    # Every variant digit turns up: the two random bits below the variant's are used.
    assert {text[19] for text in made} == set("89ab")
