"""Random (version 4) UUIDs as text, for task ids and delivery tags."""

import os


def random_uuid() -> str:
    """What `str(uuid.uuid4())` gives, at less than half its cost (0.8 against 1.9 µs
    here): every SubmitBatch item takes two, a task id and a delivery tag."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]  # RFC 4122: the top two bits are 10
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
