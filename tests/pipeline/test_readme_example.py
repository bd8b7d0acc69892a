"""The README's quick-start example delivers whenever it is run: its requests, read from the
README itself, go to the real api, scheduler, sender and stub, and the stub gets the message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.pipeline.conftest import Pipeline

pytestmark = pytest.mark.pipeline

README = Path(__file__).resolve().parents[2] / "README.md"
API = "http://127.0.0.1:8000/api/v1"


def quick_start_posts() -> list[tuple[str, dict[str, object]]]:
    """The (path, body) of each POST in the README's first block that uses the admin token."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "TOKEN=$(grep API_TOKENS" in b)
    commands = re.split(r"\n(?=\S)", block.replace("\\\n", " "))
    posts = []
    for command in commands:
        body = re.search(r"-d '(\{.*?\})'", command, flags=re.S)
        url = re.search(re.escape(API) + r"(/\S+)", command)
        if body and url:
            posts.append((url.group(1), json.loads(body.group(1))))
    return posts


def test_the_readme_example_is_found() -> None:
    assert [path for path, _ in quick_start_posts()] == ["/clients", "/mailings"]


async def test_the_readme_example_delivers_now(pipeline: Pipeline) -> None:
    await pipeline.start()
    (client_path, client), (mailing_path, mailing) = quick_start_posts()
    # A send window would hold the message for its hours in the client's zone: run at night,
    # the example would deliver nothing until morning.
    assert "send_window" not in mailing

    assert (await pipeline.api.post(client_path, json=client)).status_code == 201
    created = await pipeline.api.post(mailing_path, json=mailing)
    assert created.status_code == 201, created.text

    mailing_id = created.json()["id"]
    assert await pipeline.wait_terminal(mailing_id, 1) == {"sent": 1}
    [message] = pipeline.deliveries().values()
    assert message["phone"] == int(str(client["phone"]))
    assert message["text"] == mailing["text"]
    stats = (await pipeline.api.get(f"/mailings/{mailing_id}/stats")).json()
    assert stats["counts"]["sent"] == 1
