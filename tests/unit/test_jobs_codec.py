"""A send job's body: what the scheduler encodes the sender decodes, and nothing else passes."""

from __future__ import annotations

import pytest

from shared.messaging import Job, decode_jobs, encode_jobs


def test_a_job_decodes_to_its_messages() -> None:
    body = encode_jobs(7, [(1, 10), (2, 20)])
    assert decode_jobs(body) == [Job(1, 10, 7), Job(2, 20, 7)]


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 1, "token": 10, "mailing_id": 7}',  # one message without "items"
        b'{"items": [[1, 10]]}',
        b'{"mailing_id": 7, "items": "nope"}',
        b'{"mailing_id": 7, "items": [[1]]}',
        b"not json",
    ],
)
def test_anything_else_is_not_a_job(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a send job"):
        decode_jobs(body)
