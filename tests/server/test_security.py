"""The server as an outsider probes it: tokens, foreign hosts and origins, streamed and hostile uploads, malformed
parameters. Each attack gets its 4xx and one line, and the server keeps answering others meanwhile."""

from __future__ import annotations

import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import REPO, TOKEN, Server, free_port, line_sketch, make_data_dir, png

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def open_server(server_engine):
    """No token: loopback only."""
    with Server(server_engine, token=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


# ---- tokens, hosts and origins -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Host": "localhost:8000"}, 200),
        ({"Origin": "http://127.0.0.1:8501"}, 200),  # the Studio on this machine
        ({"Host": "evil.example:8000"}, 403),  # DNS rebinding: a foreign name that resolves to 127.0.0.1
        ({"Origin": "https://evil.example"}, 403),  # a web page the designer visits, calling the engine
        ({"Origin": "null"}, 403),
    ],
)
def test_without_a_token_only_this_machine_is_answered(open_server, headers, status):
    resp = httpx.get(f"{open_server.url}/health", headers=headers)
    assert resp.status_code == status, resp.text
    if status == 403:
        assert resp.json()["error"] == "Forbidden" and "is not this machine" in resp.json()["detail"]
        assert (
            httpx.post(f"{open_server.url}/api/styles/list", json={}, headers=headers).status_code == 403
        )  # every route, not only /health


def test_an_empty_or_blank_bearer_is_refused(server):
    for value in ("Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}"):
        assert httpx.get(f"{server.url}/health", headers={"Authorization": value}).status_code == 401, value


def serve(args: list[str], env_extra: dict | None = None, data_dir=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("DESIGN_STUDIO_API_TOKEN", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "engine", "serve", "--profile", "tiny", "--device", "cpu"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return subprocess.Popen(cmd + args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--token", ""], {}), (["--token", "short"], {}), ([], {"DESIGN_STUDIO_API_TOKEN": ""})],
    ids=["empty flag", "short flag", "empty variable"],
)
def test_an_empty_or_short_token_is_refused_at_start(tmp_path, args, env):
    proc = serve([*args, "--port", str(free_port())], env, tmp_path / "data")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) <= 2, err
    assert "the API token is too short" in err


def test_serving_on_every_interface_without_a_token_prints_one_and_requires_it(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models)
    port = free_port()
    proc = serve(["--host", "0.0.0.0", "--port", str(port)], data_dir=data)
    try:
        token = None
        deadline = time.time() + 120
        while time.time() < deadline and token is None:
            line = proc.stdout.readline()
            if line.startswith("API token"):
                token = line.rsplit(":", 1)[1].strip()
            elif not line and proc.poll() is not None:
                break
        assert token and len(token) >= 16, proc.stderr.read() if proc.poll() is not None else "no token printed"
        # then what the engine computes in, for whoever starts it on a GPU box or a Colab
        banner = proc.stdout.readline()  # "fp32", or "fp32 (bf16 units unused: AMX)" on a CPU that has them
        assert banner.startswith("Engine: device cpu · fp32") and banner.rstrip().endswith("· profile tiny"), banner
        url = f"http://127.0.0.1:{port}/health"
        while time.time() < deadline:
            try:
                first = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert first.status_code == 200
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- bodies and uploads ----------------------------------------------------------------------------------------
def test_a_chunked_upload_with_no_length_is_stopped_at_the_limit(server, server_engine):
    """A raw socket, so the test sees when the server answers: it must refuse while the body is still coming."""
    limit = server_engine.settings.max_upload_bytes
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    head = (
        "POST /api/renders/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=zzz\r\n\r\n"
    )
    part = b'--zzz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    sent, answer, began = 0, b"", time.monotonic()
    try:
        sock.sendall(head.encode() + chunk(part))
        block = chunk(b"x" * 65536)
        while sent < 96 * 1024 * 1024 and not answer:  # 96 MB unless the server answers first
            try:
                sock.sendall(block)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading
            sent += 65536
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error":"TooLarge"' in answer
    # what the kernel's socket buffers hold on loopback (a few MB) is all that gets through, not the 96 MB
    assert sent < 24 * 1024 * 1024, f"the server took {sent / 1e6:.0f} MB of a body over a {limit / 1e6:.1f} MB limit"
    assert time.monotonic() - began < 10
    assert httpx.get(f"{server.url}/health", headers=AUTH).status_code == 200


def sixteen_bit_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("I;16", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_health_answers_within_a_second_while_a_hostile_image_is_decoded(tmp_path, tiny_models):
    from tests.conftest import make_engine

    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True), max_upload_bytes=2_000_000)
    engine.load()
    hostile = sixteen_bit_png(8000)  # ~100 KB on the wire, 64 megapixels of 16-bit grey once decoded
    assert len(hostile) < 1_000_000
    with Server(engine) as srv:
        answers: list[httpx.Response] = []

        def analyze():
            answers.append(
                httpx.post(
                    f"{srv.url}/analyze",
                    headers=AUTH,
                    files={"file": ("big.png", hostile, "image/png")},
                    data={"segment": "false"},
                    timeout=300,
                )  # fmt: skip
            )

        worker = threading.Thread(target=analyze)
        worker.start()
        waits = []
        while worker.is_alive() and len(waits) < 200:
            t0 = time.monotonic()
            assert httpx.get(f"{srv.url}/health", headers=AUTH, timeout=10).status_code == 200
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)
        worker.join(timeout=300)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    assert len(waits) >= 3, "the decode should take long enough to probe"
    assert max(waits) < 1.0, f"/health waited {max(waits):.2f} s while the image was decoded"


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset this process's peak resident set size
        f.write("5")


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


MEMORY_BUDGET = 1_000_000_000  # bytes over the resident set before the request


def test_analyze_on_a_blank_2000px_image_at_the_finest_grid_stays_within_its_memory_budget(tmp_path, tiny_models):
    """The server is in this process (uvicorn in a thread), so the process's peak RSS measures the request."""
    from tests.conftest import make_engine

    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True), max_upload_bytes=2_000_000)
    engine.load()
    blank = png(Image.new("RGB", (2000, 2000), "white"))
    with Server(engine) as srv:
        sketch = {"file": ("s.png", png(line_sketch()), "image/png")}
        warm = httpx.post(f"{srv.url}/analyze", headers=AUTH, files=sketch, data={"grid": "4"}, timeout=300)
        assert warm.status_code == 200
        before = status_kb("VmRSS")
        peak_rss_reset()
        t0 = time.monotonic()
        resp = httpx.post(f"{srv.url}/analyze", headers=AUTH, files={"file": ("blank.png", blank, "image/png")},
                          data={"grid": "32"}, timeout=300)  # fmt: skip
        seconds = time.monotonic() - t0
        grown = status_kb("VmHWM") - before
    assert resp.status_code == 200, resp.text
    seg = resp.json()["segmentation"]
    assert (seg["width"], seg["height"]) == (1024, 1024)  # analysed at ≤ 1024 px a side, as the response says
    assert grown < MEMORY_BUDGET, f"/analyze grew the server by {grown / 1e9:.2f} GB (budget 1 GB)"
    assert seconds < 60


# ---- parameters ------------------------------------------------------------------------------------------------
DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("path", "files", "data", "detail"),
    [
        ("/jobs", None, {"prompt": "x", "options": '{"a": ' + DEEP + "}"}, None),
        ("/jobs", None, {"prompt": "x", "options": json.dumps({"negative_prompt": "n" * 900_000})}, None),
        ("/jobs", None, {"prompt": "x", "options": json.dumps({"negative_prompt": "n" * 2001})}, "negative prompt"),
        ("/segment", "img", {"points": '[["a", "b"]]'}, "points must be a JSON list of [x, y] pairs"),
        ("/segment", "img", {"points": "[[1e999, 5]]"}, None),
        ("/segment", "img", {"box": '["a", 1, 2, 3]'}, "box"),
        ("/segment", "img", {"box": DEEP}, None),
        ("/segment", "img", {"points": "[[10, 10]]", "labels": '["x"]'}, "label"),
    ],
)
def test_malformed_parameters_are_422_with_one_line(server, path, files, data, detail):
    upload = {"file": ("s.png", png(line_sketch(200, 150)), "image/png")} if files else None
    resp = httpx.post(f"{server.url}{path}", headers=AUTH, files=upload, data=data, timeout=60)
    assert resp.status_code in (413, 422), (resp.status_code, resp.text[:300])
    message = resp.json()["detail"]
    assert isinstance(message, str) and "\n" not in message and len(message) < 300, message
    if detail:
        assert detail in message, message


def test_deeply_nested_arguments_to_the_interface_routes_are_422(server):
    resp = httpx.post(f"{server.url}/api/history/list", headers=AUTH, content='{"limit": ' + DEEP + "}")
    assert resp.status_code == 422 and "\n" not in resp.json()["detail"]


# ---- sketches in every format designers export -------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_gif_bmp_and_tiff_sketches_render(server, fmt):
    sketch = line_sketch()
    buf = io.BytesIO()
    if fmt == "GIF":  # an animated GIF: the first frame is the sketch
        sketch.save(buf, format="GIF", save_all=True, append_images=[Image.new("RGB", sketch.size, "black")])
    else:
        sketch.save(buf, format=fmt)
    options = json.dumps({"size": 64, "steps": 1, "seed": 1})
    job = httpx.post(f"{server.url}/jobs", headers=AUTH, files={"file": (f"s.{fmt.lower()}", buf.getvalue())},
                     data={"prompt": "a pavilion", "options": options})  # fmt: skip
    assert job.status_code == 202, job.text
    deadline = time.time() + 120
    while time.time() < deadline:
        state = httpx.get(f"{server.url}/jobs/{job.json()['id']}", headers=AUTH).json()
        if state["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert state["state"] == "done", state
