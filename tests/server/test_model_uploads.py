"""Big model files onto a remote engine in parts (issue 32): a real uvicorn on 127.0.0.1 whose requests stop at
20 MB, a LoRA of 60 MB sent through `send_model` (the sidebar's and the CLI's way), the same file again, an upload
cut short and resumed, refusals in one line, and the CLI's `--lora FILE --remote`."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file, save_file

from engine.errors import TooLarge
from engine.remote import RemoteEngine
from engine.uploads import PART, send_model
from tests.conftest import TOKEN, Server, make_data_dir, make_engine

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUEST_LIMIT = 20_000_000
MODEL_LIMIT = 100_000_000
MB = 1_000_000


@pytest.fixture(scope="module")
def big_engine(tmp_path_factory, tiny_models):
    """An engine whose request limit is 20 MB (the default) and whose model limit is 100 MB."""
    engine = make_engine(
        make_data_dir(tmp_path_factory.mktemp("uploads-data"), tiny_models, warm=True),
        max_upload_bytes=REQUEST_LIMIT,
        max_model_bytes=MODEL_LIMIT,
    )
    yield engine
    engine.jobs.stop()


@pytest.fixture(scope="module")
def server(big_engine):
    with Server(big_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def lora_maker(tmp_path_factory, tiny_models):
    """LoRAs shaped for the tiny UNet (they load and render), padded in their metadata to `mb` MB."""
    from diffusers import UNet2DConditionModel

    from engine.tiny import save_fast_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    folder = tmp_path_factory.mktemp("loras")
    tensors = load_file(save_fast_lora(unet, folder / "base", rank=4, scale=0.5))

    def make(name: str, mb: int) -> Path:
        path = folder / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"format": "pt", "padding": name})
        pad = mb * MB - path.stat().st_size
        save_file(tensors, str(path), metadata={"format": "pt", "padding": name + "." * pad})
        return path

    return make


class Counted:
    """The requests a remote engine makes: (path, bytes in the body)."""

    def __init__(self, remote: RemoteEngine):
        self.calls: list[tuple[str, int]] = []
        remote.transport.http.event_hooks["request"].append(self.seen)

    def seen(self, request: httpx.Request) -> None:
        self.calls.append((request.url.path, int(request.headers.get("content-length", 0))))

    def to(self, op: str) -> list[int]:
        return [n for path, n in self.calls if path == f"/api/renders/{op}"]


def one_line_4xx(resp: httpx.Response, status: int, says: str) -> None:
    assert resp.status_code == status, resp.text[:300]
    detail = resp.json()["detail"]
    assert says in detail and "\n" not in detail and "Traceback" not in detail, detail


def post(server, op: str, files: dict | None = None, **args) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        if files:
            parts = {k: (k, v, "application/octet-stream") for k, v in files.items()}
            return client.post(f"/api/renders/{op}", data={"args": json.dumps(args)}, files=parts)
        return client.post(f"/api/renders/{op}", json=args)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_60_mb_lora_reaches_an_engine_whose_requests_stop_at_20_mb_and_is_kept_once(server, big_engine, lora_maker):
    path = lora_maker("cedar", 60)
    size = path.stat().st_size
    remote = RemoteEngine(server.url, TOKEN)
    with pytest.raises(TooLarge, match="20 MB limit"):  # in one request it cannot go
        remote.renders.add_model("lora", "cedar", path.read_bytes())
    counted = Counted(remote)
    seen: list[int] = []
    added = send_model(remote, "lora", "cedar", path, lambda held, total: seen.append(held))
    assert added == {"name": "cedar", "kind": "lora", "added": True, "sent": size}
    parts = counted.to("upload_part")
    assert len(parts) == math.ceil(size / PART) and max(n for _, n in counted.calls) < PART + 64 * 1024
    assert seen[0] == 0 and seen[-1] == size and seen == sorted(seen)
    assert {"name": "cedar", "mb": round(size / MB, 1)} in remote.renders.models()["loras"]
    kept = big_engine.renders.parts.files.path("lora", "cedar")
    assert kept.read_bytes() == path.read_bytes()
    assert not list((big_engine.data_dir / "uploads").iterdir())  # the parts went once the file was placed

    # the same file again: one call, the hash check, and no byte of it
    counted.calls.clear()
    again = send_model(remote, "lora", "cedar", path)
    assert again == {"name": "cedar", "kind": "lora", "added": False, "sent": 0}
    assert [p for p, _ in counted.calls] == ["/api/renders/upload_begin"] and counted.calls[0][1] < 1000
    # … and under another name: added, still nothing sent, one file on the engine's disk
    counted.calls.clear()
    assert send_model(remote, "lora", "cedar copy", path)["sent"] == 0 and len(counted.calls) == 1
    copy = big_engine.renders.parts.files.path("lora", "cedar copy")
    assert copy.stat().st_ino == kept.stat().st_ino


class Cut(Exception):
    """The tunnel dropped (or the designer pressed Ctrl-C)."""


def test_an_upload_cut_after_three_parts_goes_on_where_it_stopped(server, big_engine, lora_maker):
    path = lora_maker("maple", 30)
    size = path.stat().st_size
    remote = RemoteEngine(server.url, TOKEN)
    counted = Counted(remote)

    def cut_after_three(held: int, total: int) -> None:
        if held >= 3 * PART:
            raise Cut

    with pytest.raises(Cut):
        send_model(remote, "lora", "maple", path, cut_after_three)
    assert len(counted.to("upload_part")) == 3 and not counted.to("upload_finish")
    digest = sha(path.read_bytes())
    assert remote.renders.upload_begin("lora", "maple", digest, size).received == 3 * PART
    assert "maple" not in [m["name"] for m in remote.renders.models()["loras"]]

    counted.calls.clear()
    resumed = send_model(remote, "lora", "maple", path)
    assert resumed["added"] is True and resumed["sent"] == size - 3 * PART
    assert len(counted.to("upload_part")) == math.ceil((size - 3 * PART) / PART)
    assert sum(counted.to("upload_part")) < size - 3 * PART + 64 * 1024 * len(counted.to("upload_part"))
    assert big_engine.renders.parts.files.path("lora", "maple").read_bytes() == path.read_bytes()


def test_bad_uploads_are_refused_in_one_line(server, big_engine, lora_maker):
    good = lora_maker("birch", 1).read_bytes()
    # a name, a size, a hash that cannot be: refused before any byte is sent
    one_line_4xx(post(server, "upload_begin", kind="lora", name="birch", sha256=sha(good), size=2 * MODEL_LIMIT),
                 413, "over the 100 MB upload limit")  # fmt: skip
    one_line_4xx(post(server, "upload_begin", kind="lora", name="../birch", sha256=sha(good), size=len(good)),
                 422, "not allowed")  # fmt: skip
    one_line_4xx(post(server, "upload_begin", kind="lora", name="birch", sha256="abc", size=len(good)), 422, "sha256")
    one_line_4xx(post(server, "upload_part", {"chunk": good[:100]}, sha256="0" * 64, offset=0), 404, "upload_begin")

    # a wrong hash: every byte arrives, and the end says so (and drops them)
    wrong = sha(b"something else")
    assert post(server, "upload_begin", kind="lora", name="birch", sha256=wrong, size=len(good)).status_code == 200
    one_line_4xx(post(server, "upload_finish", kind="lora", name="birch", sha256=wrong), 409, "not whole")
    assert post(server, "upload_part", {"chunk": good}, sha256=wrong, offset=0).status_code == 200
    one_line_4xx(post(server, "upload_finish", kind="lora", name="birch", sha256=wrong), 422, "not the")
    one_line_4xx(post(server, "upload_part", {"chunk": good[:10]}, sha256=wrong, offset=0), 404, "no upload")

    # offsets: only where the engine's copy ends; never past the size announced; parts of at most max_part
    digest = sha(good)
    begun = post(server, "upload_begin", kind="lora", name="birch", sha256=digest, size=len(good)).json()
    assert begun["received"] == 0 and begun["max_part"] == 8 * 1024 * 1024 and begun["model"] is None
    assert post(server, "upload_part", {"chunk": good[:1000]}, sha256=digest, offset=0).json()["received"] == 1000
    one_line_4xx(post(server, "upload_part", {"chunk": good[1000:2000]}, sha256=digest, offset=500), 409,
                 "holds 1000 bytes of this upload: the next part starts there, not at 500")  # fmt: skip
    one_line_4xx(post(server, "upload_part", {"chunk": good[1000:] + b"x"}, sha256=digest, offset=1000), 413,
                 "more than the")  # fmt: skip
    one_line_4xx(post(server, "upload_part", {"chunk": bytes(9 * MB)}, sha256=digest, offset=1000), 413,
                 "a part may carry")  # fmt: skip
    assert post(server, "upload_part", {"chunk": good[1000:]}, sha256=digest, offset=1000).status_code == 200
    assert post(server, "upload_finish", kind="lora", name="birch", sha256=digest).json()["added"] is True

    # a file of another kind: refused at its first part, not after the last
    png = b"\x89PNG\r\n\x1a\n" + bytes(5000)
    assert post(server, "upload_begin", kind="lora", name="photo", sha256=sha(png), size=len(png)).status_code == 200
    one_line_4xx(post(server, "upload_part", {"chunk": png[:4096]}, sha256=sha(png), offset=0), 422,
                 "not a .safetensors file")  # fmt: skip
    # … and one whose header lies about its tensors: refused at the end, as add_model refuses it
    short = good[:-100]
    assert (
        post(server, "upload_begin", kind="lora", name="short", sha256=sha(short), size=len(short)).status_code == 200
    )
    one_line_4xx(post(server, "upload_part", {"chunk": short}, sha256=sha(short), offset=0), 422, "not a whole")
    # another file under a taken name: refused at the start, before a byte is sent
    other = lora_maker("alder", 1).read_bytes()
    one_line_4xx(post(server, "upload_begin", kind="lora", name="birch", sha256=sha(other), size=len(other)), 409,
                 "a different lora named 'birch'")  # fmt: skip
    names = [m["name"] for m in big_engine.renders.models()["loras"]]
    assert "birch" in names and "photo" not in names and "short" not in names


def test_parts_nobody_touched_for_a_day_are_removed(big_engine, lora_maker):
    good = lora_maker("rowan", 1).read_bytes()
    parts = big_engine.renders.parts
    parts.begin("lora", "rowan", sha(good), len(good))
    parts.part(sha(good), 0, good[:1000])
    assert parts.sweep() == 0
    import time

    assert parts.sweep(now=time.time() + 25 * 3600) == 1
    assert not (big_engine.data_dir / "uploads" / f"{sha(good)}.part").exists()
    assert big_engine.renders.upload_begin("lora", "rowan", sha(good), len(good)).received == 0


def test_the_cli_sends_a_lora_over_the_request_limit_to_the_remote_engine_and_renders_with_it(
    server, big_engine, lora_maker, tmp_path, capsys
):
    from engine.cli import main

    path = lora_maker("spruce", 25)
    out = tmp_path / "spruce.png"
    code = main(["generate", "--remote", server.url, "--token", TOKEN, "--prompt", "a spruce cabin", "--size", "64",
                 "--steps", "2", "--seed", "5", "--lora", f"{path}:0.7", "--out", str(out)])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert json.loads(stdout)["output"] == str(out)
    assert big_engine.renders.parts.files.path("lora", "spruce").read_bytes() == path.read_bytes()
    from engine.metadata import read_png

    assert read_png(out)["params"]["loras"] == [{"name": "spruce", "weight": 0.7}]
