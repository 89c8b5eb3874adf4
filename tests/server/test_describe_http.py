"""`styles.describe` over HTTP: a served tiny engine writes the same prompt as in process (through `RemoteEngine`,
the generated route and `python -m engine describe --remote`), and a bad or oversized file is a 4xx with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from PIL import Image

from engine.errors import BadInput
from engine.remote import RemoteEngine
from tests.conftest import REPO, TOKEN, Server, line_sketch, png

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


def test_a_remote_engine_gets_the_description_the_engine_writes(server, server_engine, tmp_path):
    sketch = png(line_sketch())
    here = server_engine.styles.describe(sketch, k=3)
    remote = RemoteEngine(server.url, TOKEN)
    try:
        there = remote.styles.describe(sketch, k=3)
        with pytest.raises(BadInput) as refused:
            remote.styles.describe(b"not a picture")
        assert "is not an image" in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(BadInput, match="k"):
            remote.styles.describe(sketch, k=0)
    finally:
        remote.close()
    assert there.model_dump(exclude={"seconds"}) == here.model_dump(exclude={"seconds"})

    path = tmp_path / "house.png"
    path.write_bytes(sketch)
    cmd = [sys.executable, "-m", "engine", "describe", str(path), "--remote", server.url, "--token", TOKEN]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == here.prompt, done.stderr


def test_the_route_answers_json_and_refuses_bad_files_with_one_line(server):
    url = f"{server.url}/api/styles/describe"
    ok = httpx.post(url, headers=AUTH, timeout=60, files={"image": ("s.png", png(line_sketch()), "image/png")},
                    data={"args": json.dumps({"k": 2})})  # fmt: skip
    assert ok.status_code == 200, ok.text[:300]
    body = ok.json()
    assert body["prompt"] and sorted(body["terms"]) == sorted(["object", "medium", "style", "material", "colour"])
    big = Image.effect_noise((400, 400), 120).convert("RGB")  # noise does not compress: over the server's 300 KB
    for data, status in ((b"GIF89a...", 415), (png(line_sketch())[:200], 415), (png(big), 413)):
        resp = httpx.post(url, headers=AUTH, timeout=60, files={"image": ("x.png", data, "image/png")})
        detail = resp.json()["detail"]
        assert resp.status_code == status and isinstance(detail, str) and "\n" not in detail, (resp.status_code, detail)
    missing = httpx.post(url, headers=AUTH, timeout=60, data={"args": "{}"})
    assert 400 <= missing.status_code < 500 and "\n" not in missing.json()["detail"]
