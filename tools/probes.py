"""Held-out checks for issue 30: the outside review's probes, re-run against a LIVE engine server over HTTP.

    .venv/bin/python tools/probes.py --url http://127.0.0.1:PORT --token TOKEN --data-dir DIR [--pid SERVER_PID]
                                     [--only 3,5] [--server-log FILE] [--lock-seconds 36]

Everything here is what an attacker or a careless client can do from outside: requests over loopback, files made
on the spot, and (for findings 1, 2 and 9) a look at the server's data folder and /proc, as an operator would. It
reads no engine code and imports nothing from the engine. Each probe prints one line:

    PASS|FAIL|SKIP  <finding><sub>  <what was tried>  <what was measured>

and the run exits 1 if any probe failed. Every loop is bounded (tries, seconds); the whole run takes a few minutes
on 2 cores with the tiny profile. The server should be fresh and used by nothing else while this runs: the probes
fill its queue, lock its job store for half a minute and measure its memory.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import re
import sqlite3
import statistics
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import requests
from PIL import Image, ImageDraw

TERMINAL = {"done", "failed", "cancelled"}
TRACEBACK = ("Traceback", 'File "')
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:tmp|home|root|work|usr|opt|var|srv|mnt|data)/")
RUN = "probe-" + "".join(random.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(6))  # this run's names


# ---------------------------------------------------------------------------------------------------------------
# The client: every request goes through `Server.call`, which never raises and notes every refusal's body
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int  # 0: no answer (a timeout or a dropped connection: `text` says which)
    text: str
    seconds: float
    size: int
    path: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return 400 <= self.status < 500

    @property
    def message(self) -> str:
        """What the reply says: its `detail` (or `error`) when it is JSON, else its text."""
        body = self.json()
        if isinstance(body, dict):
            return str(body.get("detail") or body.get("error") or self.text)
        return self.text

    def __str__(self) -> str:
        return f"{self.status} in {self.seconds:.2f}s"


class Server:
    def __init__(self, url: str, token: str, data_dir: Path, pid: int | None, log: Path | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.data_dir = data_dir
        self.pid = pid
        self.log = log
        self._local = threading.local()
        self._lock = threading.Lock()
        self.refusals: list[Reply] = []  # every non-2xx reply, for the hygiene probe
        self.jobs: set[str] = set()  # every job a probe submitted, cancelled at the end
        self._run_id: str | None = None
        self.reference_job = ""
        self._openapi: dict | None = None

    # -- plumbing ------------------------------------------------------------------------------------------
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        files: Any = None,
        headers: dict | None = None,
        auth: bool | str = True,
        timeout: float = 60.0,
    ) -> Reply:
        head = dict(headers or {})
        if auth is True:
            head["Authorization"] = f"Bearer {self.token}"
        elif isinstance(auth, str):
            head["Authorization"] = auth
        start = time.monotonic()
        try:
            r = self.session().request(
                method, self.url + path, json=json_body, data=data, files=files, headers=head, timeout=timeout
            )
            reply = Reply(r.status_code, r.text, time.monotonic() - start, len(r.content), path)
        except requests.RequestException as exc:
            reply = Reply(0, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - start, 0, path)
        if not reply.ok:
            with self._lock:
                self.refusals.append(reply)
        return reply

    def api(self, op: str, args: dict | None = None, *, client: str | None = None, timeout: float = 60.0) -> Reply:
        """POST /api/{service}/{op} with the arguments as JSON."""
        headers = {"X-Client-Id": client} if client else None
        return self.call("POST", f"/api/{op}", json_body=args or {}, headers=headers, timeout=timeout)

    def form(self, op: str, args: dict | str, files: dict, *, timeout: float = 60.0) -> Reply:
        """POST /api/{service}/{op} as a multipart form: `args` JSON and file parts."""
        text = args if isinstance(args, str) else json.dumps(args)
        return self.call("POST", f"/api/{op}", data={"args": text}, files=files, timeout=timeout)

    def openapi(self) -> dict:
        if self._openapi is None:
            r = self.call("GET", "/openapi.json")
            if not r.ok:
                raise RuntimeError(f"/openapi.json: {r.status} {r.text[:200]}")
            self._openapi = r.json()
        return self._openapi

    def routes(self) -> list[tuple[str, str, dict]]:
        """(method, path with its parameters filled, operation) for every route of the OpenAPI."""
        out = []
        for path, item in self.openapi()["paths"].items():
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    out.append((method.upper(), re.sub(r"\{[^}]+\}", "probe-nothing", path), op))
        return out

    # -- jobs -----------------------------------------------------------------------------------------------
    def submit(self, request: dict, client: str | None = None, timeout: float = 60.0) -> Reply:
        r = self.api("renders/submit", {"request": request}, client=client, timeout=timeout)
        if r.ok and isinstance(r.json(), dict):
            self.jobs.add(r.json()["id"])
        return r

    # The job calls below fall back on the seed API (GET/DELETE /jobs/{id}) when /api/jobs/* refuses them with 429:
    # a probe must still be able to clean up after itself. Probe 16c checks that no such refusal happens.
    def job(self, job_id: str) -> dict:
        r = self.api("jobs/get", {"job_id": job_id})
        if r.status == 429:
            r = self.call("GET", f"/jobs/{job_id}")
        return {"id": job_id, **r.json()} if r.ok else {"state": "?", "error": r.text}

    def cancel(self, job_id: str) -> Reply:
        r = self.api("jobs/cancel", {"job_id": job_id})
        return self.call("DELETE", f"/jobs/{job_id}") if r.status == 429 else r

    def wait_end(self, job_id: str, limit: float = 60.0) -> dict:
        """The job once it ends, or as it is after `limit` seconds."""
        deadline = time.monotonic() + limit
        info: dict = {"id": job_id, "state": "?"}
        while time.monotonic() < deadline:
            r = self.api("jobs/wait", {"job_id": job_id, "timeout": max(0.5, min(10.0, deadline - time.monotonic()))})
            if r.ok:
                info = r.json()
            else:
                time.sleep(0.5)
                if r.status != 429:
                    continue
                info = self.job(job_id)
            if info["state"] in TERMINAL:
                return info
        return info

    def wait_all(self, ids: list[str], limit: float = 30.0) -> list[dict]:
        """Each job once it ends, or as it is when `limit` seconds (for all of them together) have passed."""
        deadline = time.monotonic() + limit
        return [self.wait_end(i, max(0.5, deadline - time.monotonic())) for i in ids]

    def reference_run(self) -> str:
        """The id of one finished, kept render (made once, on first use)."""
        if self._run_id is None:
            r = self.submit({"prompt": "probe reference chair", "size": 128, "steps": 2, "seed": 7})
            if not r.ok:
                raise RuntimeError(f"cannot render a reference run: {r.status} {r.text[:200]}")
            info = self.wait_end(r.json()["id"], 120)
            if info["state"] != "done":
                raise RuntimeError(f"the reference render ended {info['state']}: {info.get('error')}")
            self._run_id = info["result"]["run_id"]
            self.reference_job = info["id"]
        return self._run_id

    def cleanup_jobs(self) -> int:
        """Cancels this run's jobs that are still queued or running (between probes, so that one probe's leftovers
        never fill the queue for the next); how many there were."""
        r = self.api("jobs/list", {"active": True, "limit": 1000})
        active = [j["id"] for j in r.json()] if r.ok else [i for i in self.jobs if self.job(i)["state"] not in TERMINAL]
        left = [i for i in active if i in self.jobs]
        for job_id in left:
            self.cancel(job_id)
        return len(left)

    # -- the machine ------------------------------------------------------------------------------------------
    def rss_mb(self) -> float | None:
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def jobs_db(self) -> Path | None:
        found = sorted(self.data_dir.rglob("jobs.sqlite"))
        return found[0] if found else None

    def log_tracebacks(self) -> int | None:
        if self.log is None or not self.log.exists():
            return None
        return self.log.read_text(errors="replace").count("Traceback")


def problems_of(reply: Reply, data_dir: Path) -> list[str]:
    """What is wrong with a refusal's body: more than one line, 500+ characters, a traceback, the data folder."""
    out = []
    if reply.status == 0:
        return [f"no answer on {reply.path} ({reply.text[:80]})"]
    msg = reply.message
    if "\n" in msg.strip() or len(msg) >= 500:
        out.append(f"{reply.path} {reply.status}: a message of {len(msg)} chars / {msg.count(chr(10)) + 1} lines")
    if any(t in reply.text for t in TRACEBACK):
        out.append(f"{reply.path} {reply.status}: a traceback in the body")
    for root in {str(data_dir), str(data_dir.resolve())}:
        if root in reply.text:
            out.append(f"{reply.path} {reply.status}: names the data folder")
    if not isinstance(reply.json(), dict) and reply.status != 0:
        out.append(f"{reply.path} {reply.status}: not a JSON object ({reply.text[:60]!r})")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Probes: a registry, a result object, and the runner
# ---------------------------------------------------------------------------------------------------------------


class Skip(Exception):
    pass


@dataclass
class Check:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class Probe:
    finding: str  # "11"
    sub: str  # "a"
    title: str
    run: Callable[[Server, Check], None]


PROBES: list[Probe] = []


def probe(finding: int, sub: str, title: str):
    def register(fn: Callable[[Server, Check], None]):
        PROBES.append(Probe(str(finding), sub, title, fn))
        return fn

    return register


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    out = fn()
    return out, time.monotonic() - start


def parallel(calls: list[Callable[[], Any]], workers: int | None = None) -> list[Any]:
    """Run the calls in threads released together (a barrier), results in order."""
    barrier = threading.Barrier(len(calls))

    def one(fn):
        with suppress(threading.BrokenBarrierError):
            barrier.wait(10)
        return fn()

    with ThreadPoolExecutor(workers or len(calls)) as pool:
        return list(pool.map(one, calls))


def codes(replies: list[Reply]) -> str:
    return ",".join(f"{k}x{v}" if v > 1 else str(k) for k, v in sorted(Counter(r.status for r in replies).items()))


# -- things to send ------------------------------------------------------------------------------------------


def png(width: int = 64, height: int = 64, colour: tuple = (180, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def noise_png(width: int, height: int, seed: int) -> bytes:
    """Random pixels: a PNG about 3 bytes per pixel (it does not compress)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def drawing_png(size: int, seed: int) -> bytes:
    """A line drawing on white: a small file that decodes to size×size×3 bytes."""
    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        d.line([(rng.randrange(size), rng.randrange(size)) for _ in range(3)], fill="black", width=max(2, size // 200))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def mask_png(size: int) -> bytes:
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=255)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side×side blank pixels: ~100 KB of file that claims side² pixels."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def safetensors_bytes(tensors: dict[str, tuple[int, ...]], seed: int = 0) -> bytes:
    """A .safetensors file written by hand (the format is an 8-byte header length, a JSON header, the data)."""
    rng = np.random.default_rng(seed)
    header, blobs, offset = {}, [], 0
    for name, shape in tensors.items():
        data = (rng.standard_normal(shape).astype("<f4") * 0.01).tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


SD15_LORA_KEY = "unet.down_blocks.0.attentions.0.proj_in"  # diffusers layout; the tiny UNet has 32 channels there


def sd15_lora(seed: int, rank: int = 4, channels: int = 32) -> bytes:
    return safetensors_bytes(
        {f"{SD15_LORA_KEY}.lora_A.weight": (rank, channels), f"{SD15_LORA_KEY}.lora_B.weight": (channels, rank)}, seed
    )


def flux_lora(layout: str) -> bytes:
    if layout == "diffusers":
        keys, parts = (
            ("transformer.single_transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_k"),
            ("lora_A", "lora_B"),
        )
    else:  # kohya
        keys, parts = (
            ("lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"),
            ("lora_down", "lora_up"),
        )
    return safetensors_bytes({f"{k}.{p}.weight": (4, 4) for k in keys for p in parts})


TINY = {"size": 64, "steps": 2}


@contextmanager
def blocker(server: Server, c: Check, client: str = "probe-blocker", fill: bool = False) -> Iterator[str]:
    """A long render that holds the engine's one render slot, so what is submitted meanwhile waits. It is cancelled
    on the way out, and waited for.

    A job worker claims a waiting render at once (it is then `running`, waiting for the slot). With `fill`, small
    renders take every free worker too, so that what is submitted next really stays `queued`."""
    r = server.submit({"prompt": "probe blocker", "size": 1024, "steps": 150, "variations": 4, "keep": False}, client)
    if not r.ok:
        raise RuntimeError(f"cannot submit the blocker render: {r.status} {r.text[:200]}")
    held = [r.json()["id"]]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = server.job(held[0])
        if info.get("state") in TERMINAL:
            raise RuntimeError(f"the blocker render ended before it was used: {info.get('error')}")
        if info.get("state") == "running" and info.get("stage") not in ("", "queued"):
            break
        time.sleep(0.3)
    for i in range(8 if fill else 0):  # until one stays queued: every worker is busy
        f = server.submit({**TINY, "prompt": f"probe filler {i}", "keep": False}, client="probe-filler")
        if not f.ok:
            break
        time.sleep(0.5)
        if server.job(f.json()["id"]).get("state") == "queued":
            server.cancel(f.json()["id"])
            break
        held.append(f.json()["id"])
    try:
        yield held[0]
    finally:
        for job_id in reversed(held):
            if server.job(job_id).get("state") not in TERMINAL:
                server.cancel(job_id)
        for job_id in held:
            info = server.wait_end(job_id, 60)
            if info.get("state") not in TERMINAL:
                c.failures.append(f"a blocking job did not end within 60 s of its cancel ({info.get('state')})")


# ---------------------------------------------------------------------------------------------------------------
# 11. Malformed bodies on every route
# ---------------------------------------------------------------------------------------------------------------

NOT_JSON_UTF8 = b"\xff\xfe"
BODY_PROBES = {
    "non-UTF-8 JSON": ("application/json", NOT_JSON_UTF8),
    "text/plain": ("text/plain", b"hello"),
    "application/xml": ("application/xml", b"<a>1</a>"),
    "cut-short JSON": ("application/json", b'{"a":'),
}


def takes_body(op: dict) -> bool:
    return bool(op.get("requestBody"))


def route_sweep(server: Server, c: Check, bodies: dict[str, tuple[dict, bytes]], all_routes: bool) -> list[Reply]:
    """Each body on each route (in 4 threads): a route that takes a body must refuse it (4xx); any route, no 5xx."""
    jobs = []
    for method, path, op in server.routes():
        if not all_routes and not takes_body(op):
            continue
        for name, (headers, body) in bodies.items():
            jobs.append((method, path, op, name, headers, body))

    def send(job):
        method, path, op, name, headers, body = job
        return job, server.call(method, path, data=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, jobs))
    replies = [r for _, r in results]
    five = [(j, r) for j, r in results if r.status >= 500 or r.status == 0]
    not_refused = [(j, r) for j, r in results if takes_body(j[2]) and not r.refused]
    c.note(
        f"{len(results)} calls on {len({(j[0], j[1]) for j, _ in results})} routes: {codes(replies)}; 5xx: {len(five)}"
    )
    c.expect(
        not five,
        f"{len(five)} 5xx/no answer, e.g. "
        + "; ".join(f"{j[0]} {j[1]} [{j[3]}] → {r.status} {r.message[:80]}" for j, r in five[:3]),
    )
    c.expect(
        not not_refused,
        f"{len(not_refused)} body routes not refusing, e.g. "
        + "; ".join(f"{j[0]} {j[1]} [{j[3]}] → {r.status}" for j, r in not_refused[:3]),
    )
    bad = [p for r in replies if not r.ok for p in problems_of(r, server.data_dir)]
    c.expect(not bad, f"{len(bad)} refusals not one clean line, e.g. {bad[:2]}")
    slow = max((r.seconds for r in replies), default=0)
    c.note(f"slowest {slow:.2f}s")
    c.expect(slow < 5, f"a refusal took {slow:.1f}s")
    return replies


@probe(11, "a", "every route: JSON-typed non-UTF-8, text/plain, XML, cut-short JSON → 4xx, never 5xx")
def p11_bodies(server: Server, c: Check) -> None:
    before = server.log_tracebacks()
    replies = route_sweep(server, c, {k: ({"Content-Type": ct}, b) for k, (ct, b) in BODY_PROBES.items()}, True)
    utf8 = [r for r in replies if r.status in (400,)]
    c.note(f"{len(utf8)} answered 400")
    after = server.log_tracebacks()
    if before is not None and after is not None:
        c.note(f"server log: +{after - before} tracebacks")
        c.expect(after == before, f"{after - before} tracebacks in the server log")


def multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "probeBOUNDARY7") -> tuple[dict, bytes]:
    out = b""
    for name, data, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, out + f"--{boundary}--\r\n".encode()


@probe(11, "b", "every body route: 14 more hostile bodies (deep nesting, bad forms, charsets, gzip…) → 4xx")
def p11_hostile_bodies(server: Server, c: Check) -> None:
    invalid = b'{"zz_probe": 1}'  # what any decoding that "works" yields: still not an operation's arguments
    bodies = {
        "JSON array": ({"Content-Type": "application/json"}, b"[]"),
        "JSON string": ({"Content-Type": "application/json"}, b'"x"'),
        "nested 100k deep": ({"Content-Type": "application/json"}, b"[" * 100_000 + b"]" * 100_000),
        "5000-digit number": ({"Content-Type": "application/json"}, b'{"zz_probe": ' + b"9" * 5000 + b"}"),
        "NaN/Infinity": ({"Content-Type": "application/json"}, b'{"zz_probe": NaN, "zz": -Infinity}'),
        "lone surrogate": ({"Content-Type": "application/json"}, b'{"zz_probe": "\\ud800"}'),
        "UTF-16 charset": ({"Content-Type": "application/json; charset=utf-16"}, invalid.decode().encode("utf-16")),
        "gzip encoding": ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"\x1f\x8b\x08garbage"),
        "form, no boundary": ({"Content-Type": "multipart/form-data"}, b"args={}"),
        "form, garbage": ({"Content-Type": "multipart/form-data; boundary=zz"}, b"\xff\xfe not a form at all"),
        "form, args not UTF-8": multipart([("args", b'{"a": "\xff\xfe"}', None)]),
        "form, 60 fields": multipart([(f"f{i}", b"x", None) for i in range(60)]),
        "urlencoded": ({"Content-Type": "application/x-www-form-urlencoded"}, b"args=%7B%7D"),
        "no content type": ({}, NOT_JSON_UTF8),
    }
    route_sweep(server, c, bodies, all_routes=False)


@probe(11, "c", "every route: no token / a wrong token → 401 (with a body: any 4xx); an undeclared method → 4xx")
def p11_auth(server: Server, c: Check) -> None:
    replies, wrong = [], []
    for method, path, _ in server.routes():
        for auth in (False, "Bearer " + "x" * len(server.token), "Basic Zm9vOmJhcg==", f"Bearer {server.token[:-1]}"):
            bare = server.call(method, path, auth=auth)
            body = server.call(
                method, path, auth=auth, data=b'{"zz_probe": 1}', headers={"Content-Type": "application/json"}
            )
            replies += [bare, body]
            if bare.status != 401:
                wrong.append(f"{method} {path} [{str(auth)[:12]}] → {bare.status}")
            if not body.refused:
                wrong.append(f"{method} {path} [{str(auth)[:12]}, a body] → {body.status}")
        r = server.call("PATCH", path, data=b"{}", headers={"Content-Type": "application/json"})
        replies.append(r)
        if not r.refused:
            wrong.append(f"PATCH {path} → {r.status}")
    c.note(f"{len(replies)} calls: {codes(replies)}")
    c.expect(not wrong, f"{len(wrong)} not refused as expected: {wrong[:4]}")


@probe(11, "d", "a 40 MB JSON body and a 21 MB file part (uploads: 20 MB, 28 MB in base64) → 413 at once")
def p11_too_large(server: Server, c: Check) -> None:
    big = b'{"limit": 1, "pad": "' + b"a" * 40_000_000 + b'"}'
    r1 = server.call("POST", "/api/history/rows", data=big, headers={"Content-Type": "application/json"}, timeout=30)
    r2 = server.form(
        "styles/add",
        {"name": f"{RUN} big"},
        {"image": ("big.png", b"\x89PNG" + b"\0" * 21_000_000, "image/png")},
        timeout=30,
    )
    c.note(f"JSON {r1}; form {r2}")
    for r in (r1, r2):
        c.expect(r.status == 413, f"{r.path} answered {r.status}: {r.message[:100]}")
        c.expect(r.seconds < 10, f"{r.path} took {r.seconds:.1f}s")


# ---------------------------------------------------------------------------------------------------------------
# 3. Thumbnails: one image asked for many ways
# ---------------------------------------------------------------------------------------------------------------


def spellings(run_id: str, count: int) -> list[str]:
    indices = [
        "0",
        "00",
        "+0",
        "-0",
        "0_0",
        "00_0",
        " 0",
        "0 ",
        "\t0",
        "0\n",
        "\u0660",
        "\uff10",
        "\U0001d7ce",
        "0.0",
        "0e0",
        "0x0",
        "",
        "#0",
    ]
    indices += ["0" * n for n in range(3, 170)]
    runs = [run_id, run_id.upper(), " " + run_id, run_id + " ", run_id.lower()]
    out = [run_id]
    for r in runs:
        for i in indices:
            ref = f"{r}#{i}"
            if len(ref) <= 200 and ref not in out:
                out.append(ref)
    return out[:count]


@probe(3, "a", "thumbnails: one image spelled 300 ways (RUN#0, RUN#00, RUN#٠, ' RUN#0'…) → a small reply")
def p3_spellings(server: Server, c: Check) -> None:
    run_id = server.reference_run()
    one = server.api("history/thumbnails", {"refs": [f"{run_id}#0"], "px": 256})
    c.expect(one.ok and len(one.json() or {}) == 1, f"one ref: {one.status} {one.text[:120]}")
    refs = spellings(run_id, 300)
    many = server.api("history/thumbnails", {"refs": refs, "px": 256}, timeout=60)
    images = sum(1 for v in (many.json() or {}).values() if v) if many.ok else 0
    c.note(
        f"1 ref: {one.size} B; {len(refs)} spellings ({len(json.dumps(refs)) // 1024} KB asked): "
        f"{many}, {many.size} B, {images} images"
    )
    c.expect(many.ok or many.refused, f"{len(refs)} spellings → {many.status}")
    c.expect(many.size <= 3 * one.size + 4096, f"the reply is {many.size / max(one.size, 1):.0f}× one image's")
    c.expect(many.seconds < 5, f"took {many.seconds:.1f}s")


@probe(3, "b", "thumbnails: 501 refs → 422; 500 unknown refs at px 512 → fast and small; a 201-char ref → 422")
def p3_bounds(server: Server, c: Check) -> None:
    run_id = server.reference_run()
    over = server.api("history/thumbnails", {"refs": [f"{run_id}#{i}" for i in range(501)]})
    unknown = server.api("history/thumbnails", {"refs": [f"nope-{i:05d}#{i}" for i in range(500)], "px": 512})
    long = server.api("history/thumbnails", {"refs": ["x" * 201]})
    mixed = server.api("history/thumbnails", {"refs": [f"{run_id}#0"] * 500, "px": 512})
    c.note(
        f"501 refs {over}; 500 unknown {unknown} {unknown.size} B; 201-char {long}; "
        f"same ref ×500 {mixed} {mixed.size} B"
    )
    c.expect(over.status == 422, f"501 refs → {over.status}")
    c.expect(long.status == 422, f"a 201-char ref → {long.status}")
    c.expect(
        unknown.ok and unknown.size < 20_000 and unknown.seconds < 5, f"500 unknown refs → {unknown} {unknown.size} B"
    )
    c.expect(mixed.ok and mixed.size < 300_000, f"one ref ×500 at 512 px → {mixed.status}, {mixed.size} B")


# ---------------------------------------------------------------------------------------------------------------
# 4. Long polls
# ---------------------------------------------------------------------------------------------------------------


def health_times(server: Server, seconds: float, every: float = 1.0) -> list[Reply]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.append(server.call("GET", "/health", timeout=30))
        time.sleep(every)
    return out


@probe(4, "a", "48 long polls on /api/jobs/wait (a queued job, timeout 20) → /health < 2 s meanwhile")
def p4_waits(server: Server, c: Check) -> None:
    with blocker(server, c):
        queued = server.submit({"prompt": "probe waited-for", **TINY, "keep": False}, client="probe-4")
        job_id = queued.json()["id"]
        stop = time.monotonic() + 14
        held: list[float] = []

        def poll() -> None:  # asks again whenever a wait returns, until `stop`: 48 open at all times
            while time.monotonic() < stop:
                r = server.api("jobs/wait", {"job_id": job_id, "timeout": 20}, timeout=40)
                held.append(r.seconds)
                if not r.ok:
                    time.sleep(0.2)

        threads = [threading.Thread(target=poll, daemon=True) for _ in range(48)]
        for t in threads:
            t.start()
        time.sleep(2)
        health = health_times(server, 8)
        styles = server.api("styles/list")
        for t in threads:
            t.join(45)
        server.cancel(job_id)
    worst = max(h.seconds for h in health)
    long_held = sum(1 for s in held if s > 5)
    c.note(
        f"/health ×{len(health)}: worst {worst:.2f}s ({codes(health)}); styles/list {styles}; "
        f"{len(held)} waits, {long_held} held > 5 s"
    )
    c.expect(all(h.status == 200 for h in health), f"/health answered {codes(health)}")
    c.expect(worst < 2, f"/health took {worst:.1f}s")
    c.expect(styles.ok and styles.seconds < 2, f"styles/list {styles}")
    c.expect(long_held >= 1, "no wait was held open: the probe did not load the server")
    c.expect(not any(t.is_alive() for t in threads), "a poller is still waiting 45 s after the end")


@probe(4, "b", "48 waits + 48 SSE streams (/jobs/{id}/events) held open → /health and a render still answer")
def p4_streams(server: Server, c: Check) -> None:
    with blocker(server, c):
        job_id = server.submit({"prompt": "probe streamed", **TINY, "keep": False}, client="probe-4").json()["id"]
        stop = time.monotonic() + 12
        firsts: list[float] = []
        responses: list[requests.Response] = []
        lock = threading.Lock()

        def stream() -> None:
            s = requests.Session()
            try:
                start = time.monotonic()
                r = s.get(
                    f"{server.url}/jobs/{job_id}/events",
                    headers={"Authorization": f"Bearer {server.token}"},
                    stream=True,
                    timeout=30,
                )
                with lock:
                    responses.append(r)
                for line in r.iter_lines():
                    if line:
                        firsts.append(time.monotonic() - start)
                        break
                while time.monotonic() < stop:  # hold it open (the server may end it: past its bound)
                    time.sleep(0.5)
                r.close()
            except requests.RequestException:
                pass

        def poll() -> None:
            while time.monotonic() < stop:
                server.api("jobs/wait", {"job_id": job_id, "timeout": 20}, timeout=40)

        threads = [threading.Thread(target=f, daemon=True) for f in [stream] * 48 + [poll] * 48]
        for t in threads:
            t.start()
        time.sleep(2)
        health = health_times(server, 6)
        sub, took = timed(
            lambda: server.submit({"prompt": "probe during streams", **TINY, "keep": False}, client="probe-4b")
        )
        for t in threads:
            t.join(40)
        server.cancel(job_id)
        if sub.ok:
            server.cancel(sub.json()["id"])
    worst = max(h.seconds for h in health)
    c.note(
        f"/health worst {worst:.2f}s ({codes(health)}); {len(firsts)}/48 streams sent their first event; a submit {sub}"
    )
    c.expect(worst < 2 and all(h.status == 200 for h in health), f"/health {codes(health)}, worst {worst:.1f}s")
    c.expect(sub.ok and took < 2, f"a submit meanwhile: {sub}")
    c.expect(len(firsts) == 48, f"only {len(firsts)} of 48 streams got an event")


# ---------------------------------------------------------------------------------------------------------------
# 5. Style library races
# ---------------------------------------------------------------------------------------------------------------


def styles_named(server: Server, name: str) -> list[dict]:
    r = server.api("styles/list", {"include_hidden": True})
    return [s for s in (r.json() or []) if s["name"].strip().casefold() == name.strip().casefold()]


@probe(5, "a", "8 parallel style adds under one name (8 images) → exactly one style")
def p5_adds(server: Server, c: Check) -> None:
    for round_ in range(3):
        name = f"{RUN} oak {round_}"
        imgs = [png(64, 64, (20 * i, 200 - 20 * i, 90)) for i in range(8)]
        got = parallel(
            [
                lambda im=im, name=name: server.form(
                    "styles/add", {"name": name}, {"image": ("s.png", im, "image/png")}
                )
                for im in imgs
            ]
        )
        stored = styles_named(server, name)
        c.note(f"round {round_}: {codes(got)} → {len(stored)} stored")
        c.expect(sum(r.ok for r in got) == 1, f"round {round_}: {sum(r.ok for r in got)} adds succeeded")
        c.expect(all(r.ok or r.refused for r in got), f"round {round_}: {codes(got)}")
        c.expect(len(stored) == 1, f"round {round_}: {len(stored)} styles named '{name}'")


@probe(5, "b", "8 parallel adds of one name spelled with spaces/case (' oak', 'OAK ', legacy POST /styles) → one style")
def p5_spellings(server: Server, c: Check) -> None:
    name = f"{RUN} elm"
    forms = [name, f" {name}", f"{name} ", f"  {name}  ", name.upper(), name.title()]

    def legacy(n: str) -> Reply:
        return server.call(
            "POST", "/styles", data={"name": n}, files={"file": ("s.png", png(64, 64, (9, 9, len(n))), "image/png")}
        )

    calls = [
        lambda n=n: server.form(
            "styles/add", {"name": n}, {"image": ("s.png", png(64, 64, (len(n), 9, 9)), "image/png")}
        )
        for n in forms
    ]
    calls += [lambda: legacy(name), lambda: legacy(f" {name} ")]
    got = parallel(calls)
    stored = styles_named(server, name)
    exact = [s["name"] for s in stored]
    c.note(f"{codes(got)} → stored {exact}")
    c.expect(all(r.ok or r.refused for r in got), f"{codes(got)}")
    blank = {n.strip() for n in exact}
    c.expect(len(exact) == len(blank), f"names that differ only in surrounding spaces stored apart: {exact}")
    c.expect(all(n == n.strip() for n in exact), f"a stored name keeps its surrounding spaces: {exact}")
    if len(exact) > 1:
        c.note("case kept apart (not asserted)")


@probe(5, "c", "hide/unhide one style from 8 threads, 5 rounds (+ legacy /styles/{id}/hide) → it survives")
def p5_hide(server: Server, c: Check) -> None:
    name = f"{RUN} ash"
    added = server.form("styles/add", {"name": name}, {"image": ("s.png", png(64, 64, (1, 99, 1)), "image/png")})
    if not c.expect(added.ok, f"cannot add the style: {added}"):
        return
    sid = added.json()["id"]
    lost = []
    replies: list[Reply] = []
    for round_ in range(5):
        calls = [
            lambda h=(i % 2 == 0), n=(sid if i % 3 else name): server.api("styles/hide", {"name_or_id": n, "hidden": h})
            for i in range(8)
        ]
        calls += [
            lambda: server.call("POST", f"/styles/{sid}/hide?hidden=true"),
            lambda: server.call("POST", f"/styles/{sid}/hide?hidden=false"),
        ]
        replies += parallel(calls)
        if len(styles_named(server, name)) != 1:
            lost.append(round_)
    image = server.call("GET", f"/styles/{sid}/image")
    c.note(f"{len(replies)} calls {codes(replies)}; lost in rounds {lost or 'none'}; image {image}")
    c.expect(not lost, f"the style was gone (or doubled) after rounds {lost}")
    c.expect(all(r.ok for r in replies), f"hide/unhide answered {codes(replies)}")
    c.expect(image.ok, f"its image: {image.status}")


@probe(5, "d", "parallel remove + hide + add of one name → no 5xx, at most one style left")
def p5_mixed(server: Server, c: Check) -> None:
    name = f"{RUN} yew"
    server.form("styles/add", {"name": name}, {"image": ("s.png", png(64, 64, (5, 5, 200)), "image/png")})
    replies: list[Reply] = []
    for round_ in range(3):
        calls = [
            lambda: server.api("styles/remove", {"name_or_id": name}),
            lambda: server.api("styles/hide", {"name_or_id": name, "hidden": True}),
            lambda: server.api("styles/hide", {"name_or_id": name, "hidden": False}),
            lambda r=round_: server.form(
                "styles/add", {"name": name}, {"image": ("s.png", png(64, 64, (r, 5, 5)), "image/png")}
            ),
            lambda r=round_: server.form(
                "styles/add", {"name": name}, {"image": ("s.png", png(64, 64, (5, r, 5)), "image/png")}
            ),
            lambda: server.call("DELETE", f"/styles/{name}"),
        ]
        replies += parallel(calls)
    left = styles_named(server, name)
    c.note(f"{codes(replies)}; {len(left)} left")
    c.expect(all(r.ok or r.refused for r in replies), f"answered {codes(replies)}")
    c.expect(len(left) <= 1, f"{len(left)} styles named '{name}'")


def cleanup_styles(server: Server) -> None:
    for s in server.api("styles/list", {"include_hidden": True}).json() or []:
        if s["name"].strip().casefold().startswith(RUN):
            server.api("styles/remove", {"name_or_id": s["id"]})


# ---------------------------------------------------------------------------------------------------------------
# 6. Model uploads
# ---------------------------------------------------------------------------------------------------------------


def upload(server: Server, kind: str, name: str, data: bytes) -> Reply:
    return server.form(
        "renders/add_model",
        {"kind": kind, "name": name},
        {"data": ("m.safetensors", data, "application/vnd.safetensors")},
    )


def added(r: Reply) -> bool:
    return r.ok and bool((r.json() or {}).get("added"))


@probe(6, "a", "8 parallel uploads of 8 different LoRAs under one name → one added, the stored file is its")
def p6_different(server: Server, c: Check) -> None:
    for round_ in range(2):
        name = f"{RUN} walnut {round_}"
        blobs = [sd15_lora(100 * round_ + i) for i in range(8)]
        got = parallel([lambda b=b, name=name: upload(server, "lora", name, b) for b in blobs])
        winners = [i for i, r in enumerate(got) if added(r)]
        c.note(f"round {round_}: {codes(got)}, {len(winners)} added")
        c.expect(all(r.ok or r.refused for r in got), f"round {round_}: {codes(got)}")
        if not c.expect(len(winners) == 1, f"round {round_}: {len(winners)} reported added"):
            continue
        # the stored file is the winner's: sending its bytes again is "already there", a loser's is refused
        same = upload(server, "lora", name, blobs[winners[0]])
        other = upload(server, "lora", name, blobs[(winners[0] + 1) % 8])
        c.expect(
            same.ok and not added(same), f"round {round_}: the winner's bytes again → {same.status} {same.text[:100]}"
        )
        c.expect(other.refused, f"round {round_}: a loser's bytes again → {other.status} {other.text[:100]}")


@probe(6, "b", "8 parallel uploads of one identical file; and 'X' with 'X.part' at once → no 5xx, both whole")
def p6_same(server: Server, c: Check) -> None:
    name = f"{RUN} maple"
    blob = sd15_lora(7)
    got = parallel([lambda: upload(server, "lora", name, blob) for _ in range(8)])
    c.note(f"identical ×8: {codes(got)}, {sum(added(r) for r in got)} added")
    c.expect(
        all(r.ok for r in got) and sum(added(r) for r in got) == 1,
        f"identical ×8: {codes(got)}, {sum(added(r) for r in got)} added",
    )
    base, part = f"{RUN} cedar", f"{RUN} cedar.part"
    a, b = sd15_lora(11), sd15_lora(12)
    got = parallel([lambda: upload(server, "lora", base, a), lambda: upload(server, "lora", part, b)] * 3)
    again = [upload(server, "lora", base, a), upload(server, "lora", part, b)]
    c.note(f"'X' and 'X.part' ×3: {codes(got)}; again {codes(again)}")
    c.expect(all(r.ok or r.refused for r in got), f"'X' and 'X.part': {codes(got)}")
    c.expect(
        all(r.ok and not added(r) for r in again) or all(r.refused for r in again[1:]),
        f"stored files not whole: {[r.text[:80] for r in again]}",
    )


@probe(6, "c", "hostile uploads: a header bomb, a pickle, a zip, traversal names, a bad kind → 4xx in < 1 s")
def p6_hostile(server: Server, c: Check) -> None:
    good = sd15_lora(3)
    cases = {
        "header bomb": ("lora", f"{RUN} t2", struct.pack("<Q", 2**62) + b"{}"),
        "header over its file": ("lora", f"{RUN} t3", struct.pack("<Q", 10_000_000) + b'{"a":1}'),
        "pickle": ("checkpoint", f"{RUN} t4", b"\x80\x04\x95" + b"cos\nsystem\n(S'true'\ntR." + b"\0" * 64),
        "zip": ("lora", f"{RUN} t5", b"PK\x03\x04" + b"\0" * 100),
        "name ../x": ("lora", "../x", good),
        "name /etc/x": ("lora", "/etc/x", good),
        "name a/b": ("lora", "a/b", good),
        "name NUL": ("lora", "a\u0000b", good),
        "kind other": ("vae", f"{RUN} t6", good),
    }
    bad = []
    replies = []
    for what, (kind, name, data) in cases.items():
        r = upload(server, kind, name, data)
        replies.append(r)
        if not (r.refused and r.seconds < 1):
            bad.append(f"{what} → {r} {r.message[:80]}")
    c.note(f"{len(cases)} uploads: {codes(replies)}, slowest {max(r.seconds for r in replies):.2f}s")
    c.expect(not bad, "; ".join(bad))


@probe(6, "d", "a cut-off upload (header whole, tensor data cut short) → refused at upload, not stored as added")
def p6_truncated(server: Server, c: Check) -> None:
    good = sd15_lora(4)
    lines = []
    for cut in (len(good) // 2, len(good) - 4):
        r = upload(server, "lora", f"{RUN} cut {cut}", good[:cut])
        lines.append(f"{cut}/{len(good)} B → {r.status} {r.message[:70]}")
        c.expect(r.refused, f"a file cut to {cut} of {len(good)} bytes → {r.status} {r.text[:90]}")
        if added(r):  # what a render with it says
            job = server.submit(
                {**TINY, "prompt": "probe cut lora", "keep": False, "loras": [{"name": f"{RUN} cut {cut}"}]}
            )
            info = server.wait_end(job.json()["id"], 60) if job.ok else {}
            lines.append(f"its render: {info.get('state')}: {str(info.get('error'))[:90]}")
    c.note("; ".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# 7. Remeasure
# ---------------------------------------------------------------------------------------------------------------


@probe(7, "a", "6 parallel remeasures of one run → no 5xx, every one ends done")
def p7_parallel(server: Server, c: Check) -> None:
    run_id = server.reference_run()
    got = parallel([lambda: server.api("history/remeasure", {"run_ids": [run_id]}) for _ in range(6)])
    c.expect(all(r.ok for r in got), f"submits {codes(got)}: {[r.message[:80] for r in got if not r.ok]}")
    ends = [
        server.wait_end(r.json()["id"], 60) for r in got if r.ok and isinstance(r.json(), dict) and "id" in r.json()
    ]
    states = Counter(e["state"] for e in ends)
    c.note(f"submits {codes(got)}; jobs {dict(states)}")
    c.expect(
        states.get("done", 0) == len(ends),
        f"jobs ended {dict(states)}: {[e.get('error') for e in ends if e['state'] != 'done']}",
    )
    row = server.api("history/get", {"run_id": run_id})
    c.expect(row.ok, f"the run after: {row}")


@probe(7, "b", "remeasure: 20000 ids → 4xx fast; [id]×3 → one run; 10000 unknown ids → a job, cancellable")
def p7_lists(server: Server, c: Check) -> None:
    run_id = server.reference_run()
    huge = server.api("history/remeasure", {"run_ids": [f"r{i}" for i in range(20000)]})
    c.expect(huge.refused and huge.seconds < 2, f"20000 ids → {huge}")
    dup = server.api("history/remeasure", {"run_ids": [run_id, run_id, run_id]})
    info = server.wait_end(dup.json()["id"], 60) if dup.ok else {}
    c.expect(dup.ok and info.get("state") == "done", f"[id]×3 → {dup} {info.get('state')} {info.get('error')}")
    c.expect(
        info.get("total") == 1 or " 1 run" in info.get("title", ""),
        f"[id]×3 measured as {info.get('total')} runs ({info.get('title')})",
    )
    same = server.api("history/remeasure", {"run_ids": [run_id] * 10000})
    once = server.wait_end(same.json()["id"], 60) if same.ok else {}
    c.expect(
        same.ok and same.seconds < 2 and once.get("total") == 1,
        f"[id]×10000 → {same}, measured {once.get('total')} runs",
    )
    many = server.api("history/remeasure", {"run_ids": [f"probe-unknown-{i:05d}" for i in range(10000)]})
    c.expect(many.ok or many.refused, f"10000 unknown ids → {many}")
    c.expect(many.seconds < 3, f"10000 unknown ids took {many.seconds:.1f}s inside the request")
    end = {}
    if many.ok and "id" in (many.json() or {}):
        server.cancel(many.json()["id"])
        end = server.wait_end(many.json()["id"], 20)
        c.expect(end.get("state") in TERMINAL, f"10000 ids: still {end.get('state')} 20 s after its cancel")
    c.note(
        f"20000 → {huge}; [id]×3 → {info.get('state')}, total {info.get('total')}; "
        f"[id]×10000 → {same}, total {once.get('total')}; 10000 unknown → {many}, then {end.get('state', '-')}"
    )


# ---------------------------------------------------------------------------------------------------------------
# 8. Segment
# ---------------------------------------------------------------------------------------------------------------

SEGMENT_BAD = {
    "points a string": '{"points": "10,10"}',
    "points of strings": '{"points": [["a", "b"]]}',
    "NaN point": '{"points": [[NaN, 1]]}',
    "Infinity point": '{"points": [[Infinity, 1]]}',
    "1e400 point": '{"points": [[1e400, 1]]}',
    "negative point": '{"points": [[-1, -5]]}',
    "nested point": '{"points": [[[1, 2]]]}',
    "3-number point": '{"points": [[1, 2, 3]]}',
    "null in point": '{"points": [[null, 1]]}',
    "flat points": '{"points": [1, 2]}',
    "65 points": json.dumps({"points": [[1, 1]] * 65}),
    "100k points": json.dumps({"points": [[i % 60, i % 50] for i in range(100_000)]}),
    "labels 2": '{"points": [[1, 1]], "labels": [2]}',
    "labels mismatch": '{"points": [[1, 1]], "labels": [1, 0, 1]}',
    "box a string": '{"box": "1,2,3,4"}',
    "box of 3": '{"box": [1, 2, 3]}',
    "box NaN": '{"box": [NaN, 0, 10, 10]}',
    "box nested": '{"box": [[1, 2], [3, 4]]}',
    "box negative": '{"box": [-10, -10, -1, -1]}',
    "box inverted": '{"box": [40, 40, 2, 2]}',
    "box empty": '{"box": [5, 5, 5, 5]}',
    "nothing": "{}",
    "args a list": "[]",
}


@probe(8, "a", "/api/renders/segment: 23 malformed boxes/points (NaN, nested, 100k points…) → 4xx in < 2 s")
def p8_segment(server: Server, c: Check) -> None:
    image = png(64, 64, (120, 120, 120))
    warm = server.form(
        "renders/segment", {"box": [4, 4, 40, 40]}, {"image": ("i.png", image, "image/png")}, timeout=120
    )
    c.expect(warm.ok, f"a valid box: {warm} {warm.message[:100]}")
    bad = []
    slowest = 0.0
    replies = []
    for what, args in SEGMENT_BAD.items():
        r = server.form("renders/segment", args, {"image": ("i.png", image, "image/png")})
        replies.append(r)
        slowest = max(slowest, r.seconds)
        if not (r.refused and r.seconds < 2):
            bad.append(f"{what} → {r} {r.message[:80]}")
    c.note(f"valid {warm}; {len(SEGMENT_BAD)} malformed: {codes(replies)}, slowest {slowest:.2f}s")
    c.expect(not bad, "; ".join(bad[:5]))


@probe(8, "b", "legacy /segment: the same malformed fields, and a 30000² PNG bomb on both routes → 4xx fast")
def p8_legacy_and_bomb(server: Server, c: Check) -> None:
    image = png(64, 64, (120, 120, 120))
    fields = {
        "points NaN": {"points": "[[NaN, 1]]"},
        "100k points": {"points": json.dumps([[i % 60, i % 50] for i in range(100_000)])},
        "points nested": {"points": "[[[1,2]]]"},
        "box strings": {"box": '["a","b","c","d"]'},
        "box 1e400": {"box": "[0, 0, 1e400, 10]"},
        "labels no points": {"labels": "[1]"},
        "mask_format gif": {"box": "[1,1,30,30]", "mask_format": "gif"},
    }
    bad, replies = [], []
    for what, data in fields.items():
        r = server.call("POST", "/segment", data=data, files={"file": ("i.png", image, "image/png")})
        replies.append(r)
        if not (r.refused and r.seconds < 2):
            bad.append(f"/segment {what} → {r} {r.message[:80]}")
    bomb = bomb_png(30000)
    rss0 = server.rss_mb()
    b1 = server.form("renders/segment", {"box": [1, 1, 30, 30]}, {"image": ("b.png", bomb, "image/png")})
    b2 = server.call("POST", "/segment", data={"box": "[1,1,30,30]"}, files={"file": ("b.png", bomb, "image/png")})
    b3 = server.submit({"prompt": "probe bomb", **TINY, "keep": False, "sketch": b64(bomb)})
    if b3.ok:
        server.cancel(b3.json()["id"])
    rss1 = server.rss_mb()
    for r, what in ((b1, "segment"), (b2, "/segment"), (b3, "render sketch")):
        if not (r.refused and r.seconds < 5):
            bad.append(f"bomb ({len(bomb) // 1024} KB) on {what} → {r} {r.message[:80]}")
    grown = f", RSS {rss1 - rss0:+.0f} MB" if rss0 and rss1 else ""
    c.note(f"{len(fields)} fields {codes(replies)}; bomb {b1}/{b2}/{b3}{grown}")
    c.expect(not bad, "; ".join(bad[:5]))


# ---------------------------------------------------------------------------------------------------------------
# 9 and 2. What cancelled and unkept work leaves behind: the job store on disk, the server's memory
# ---------------------------------------------------------------------------------------------------------------


def live_storm(server: Server, frames: int, request: dict, client: str) -> list[str]:
    """Live-canvas frames: each submit cancels the frame before it (superseded). Every id, all ended at the end."""
    ids: list[str] = []
    for i in range(frames):
        r = server.submit({**request, "prompt": f"probe live frame {i}", "seed": i}, client=client)
        if r.ok:
            ids.append(r.json()["id"])
        if len(ids) >= 2:
            server.cancel(ids[-2])
    if ids:
        server.cancel(ids[-1])
    return ids


def size_mb(path: Path | None) -> float:
    if path is None:
        return 0.0
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file()) / 1e6


@probe(9, "a", "30 keep:false live frames, each a 1.5 MB init image, cancelled while queued → jobs.sqlite < +5 MB")
def p9_store(server: Server, c: Check) -> None:
    db = server.jobs_db()
    if db is None:
        raise Skip(f"no jobs.sqlite under {server.data_dir}")
    init = noise_png(700, 700, 1)
    request = {**TINY, "keep": False, "mode": "live", "init_image": b64(init), "strength": 0.5}
    before = size_mb(db)
    with blocker(server, c, fill=True):
        ids = live_storm(server, 30, request, client="probe-9")
        ends = [e["state"] for e in server.wait_all(ids, 30)]
    after = size_mb(db)
    c.note(
        f"init {len(init) / 1e6:.1f} MB ×{len(ids)}: {dict(Counter(ends))}; jobs.sqlite {before:.2f} → {after:.2f} MB"
    )
    c.expect(len(ids) == 30, f"only {len(ids)} of 30 frames accepted")
    c.expect(after - before < 5, f"jobs.sqlite grew {after - before:.1f} MB")


@probe(9, "b", "24 keep:false renders queued from 24 client ids, then all cancelled → jobs.sqlite < +5 MB")
def p9_store_bulk(server: Server, c: Check) -> None:
    db = server.jobs_db()
    if db is None:
        raise Skip(f"no jobs.sqlite under {server.data_dir}")
    init = noise_png(700, 700, 2)
    request = {**TINY, "keep": False, "init_image": b64(init), "strength": 0.5}
    before = size_mb(db)
    with blocker(server, c):
        got = [server.submit({**request, "prompt": f"probe bulk {i}"}, client=f"probe-bulk-{i}") for i in range(24)]
        ids = [r.json()["id"] for r in got if r.ok]
        peak = size_mb(db)
        for i in ids:
            server.cancel(i)
        server.wait_all(ids, 15)
    ends = [e["state"] for e in server.wait_all(ids, 30)]  # all ended (a lost cancel renders once the slot is free)
    after = size_mb(db)
    c.note(f"{codes(got)}; {dict(Counter(ends))}; jobs.sqlite {before:.2f} → {peak:.2f} (queued) → {after:.2f} MB")
    c.expect(after - before < 5, f"jobs.sqlite grew {after - before:.1f} MB and kept it")
    if "done" in ends:
        c.note("(a cancelled job that ended done: a lost cancel, see 2b)")


def data_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@probe(9, "c", "a finished keep:false render → no new file, no history row, its init image not in jobs.sqlite")
def p9_unkept(server: Server, c: Check) -> None:
    db = server.jobs_db()
    init = noise_png(300, 300, 3)
    rows0 = server.api("history/rows", {"limit": 100000}).json() or []
    files0 = data_files(server.data_dir)
    r = server.submit({**TINY, "prompt": "probe unkept", "keep": False, "init_image": b64(init), "strength": 0.6})
    info = server.wait_end(r.json()["id"], 60) if r.ok else {}
    time.sleep(1.5)  # a measure job or a late write, if any
    rows1 = server.api("history/rows", {"limit": 100000}).json() or []
    files1 = data_files(server.data_dir)
    new = sorted(f for f in files1 if f not in files0 and "jobs.sqlite" not in f and not f.startswith("chroma"))
    mark = base64.urlsafe_b64encode(init[len(init) // 2 : len(init) // 2 + 48])  # 48 raw bytes → 64 chars, any alphabet
    std = base64.b64encode(init[len(init) // 2 : len(init) // 2 + 48])
    raw = init[len(init) // 2 : len(init) // 2 + 48]
    blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*")) if db else b""
    b64_all, b64_std = b64(init).encode(), base64.b64encode(init)
    found = [w for w, m in (("raw", raw), ("base64url", mark), ("base64", std)) if m in blob]
    found += [
        w for w, s in (("base64url@", b64_all), ("base64@", b64_std)) if s[len(s) // 2 : len(s) // 2 + 64] in blob
    ]
    c.note(
        f"render {info.get('state')}; history rows {len(rows0)} → {len(rows1)}; new files {new or 'none'}; "
        f"init image in jobs.sqlite: {found or 'no'}"
    )
    c.expect(info.get("state") == "done", f"the render ended {info.get('state')}: {info.get('error')}")
    c.expect(len(rows1) == len(rows0), f"history rows {len(rows0)} → {len(rows1)}")
    c.expect(not new, f"new files in the data folder: {new[:5]}")
    c.expect(not found, f"the init image's bytes are still in jobs.sqlite ({found})")


@probe(2, "a", "2 storms of 60 live frames (2000² sketch, then sketch+init+mask) cancelled queued → RSS < +50 MB")
def p2_memory(server: Server, c: Check) -> None:
    if server.rss_mb() is None:
        raise Skip("needs --pid (the server's process id, to read /proc/PID/status)")
    sketch = b64(drawing_png(2000, 1))
    storms = [
        {**TINY, "keep": False, "mode": "live", "sketch": sketch},
        {
            **TINY,
            "keep": False,
            "mode": "live",
            "sketch": sketch,
            "init_image": b64(drawing_png(2000, 2)),
            "mask": b64(mask_png(2000)),
            "strength": 0.6,
        },
    ]

    def settled() -> float:
        time.sleep(2)
        return statistics.median(server.rss_mb() or 0 for _ in range(3) if time.sleep(0.3) is None)

    with blocker(server, c, fill=True):
        for req in storms:  # warm-up: what the first frames of each kind load once (decoders, allocator arenas)
            server.wait_all(live_storm(server, 6, req, client="probe-2"), 20)
        base = settled()
        seen = [base]
        for req in storms:
            ids = live_storm(server, 60, req, client="probe-2")
            ends = Counter(e["state"] for e in server.wait_all(ids, 30))
            seen.append(settled())
            c.expect(len(ids) == 60, f"only {len(ids)} of 60 frames accepted")
            if set(ends) - {"cancelled"}:  # a lost cancel (2b) holds a frame's inputs until it renders: noted here
                c.note(f"frames ended {dict(ends)} (see 2b)")
    c.note("RSS " + " → ".join(f"{m:.0f}" for m in seen) + " MB")
    c.expect(seen[-1] - base < 50, f"RSS grew {seen[-1] - base:.0f} MB over two storms")


@probe(2, "b", "5 rounds: 16 queued jobs cancelled while workers claim them → every cancel holds (none renders)")
def p2_cancel_race(server: Server, c: Check) -> None:
    lost: list[str] = []
    answers, ends_all = Counter(), Counter()
    with blocker(server, c):
        for round_ in range(5):
            got = [
                server.submit({**TINY, "prompt": f"probe race {round_}.{i}", "keep": False}, client=f"probe-race-{i}")
                for i in range(16)
            ]
            ids = [r.json()["id"] for r in got if r.ok]
            answers.update((server.cancel(i).json() or {}).get("state", "?") for i in ids)
            ends = server.wait_all(ids, 8)
            ends_all.update(e["state"] for e in ends)
            lost += [e["id"] for e in ends if e["state"] != "cancelled"]
    finally_ = Counter(f"{e['state']}" for e in server.wait_all(lost, 60))  # once the blocker is gone
    c.note(
        f"cancel answered {dict(answers)}; 8 s later (blocker still rendering) {dict(ends_all)}"
        + (f"; the {len(lost)} not cancelled then ended {dict(finally_)}" if lost else "")
    )
    c.expect(not lost, f"{len(lost)} cancelled jobs did not end cancelled (then: {dict(finally_)})")


# ---------------------------------------------------------------------------------------------------------------
# 10, 12, 14: not from here
# ---------------------------------------------------------------------------------------------------------------


@probe(10, "", "a full disk → one line that says so (507)")
def p10(server: Server, c: Check) -> None:
    raise Skip("needs the data folder on a full filesystem (a small tmpfs filled up): not done against a live server")


@probe(12, "", "Streamlit's upload endpoint behind the Studio gate")
def p12(server: Server, c: Check) -> None:
    raise Skip("the Studio (Streamlit), not the engine: covered by the browser tests")


@probe(14, "", "the engine token never sent to a browser")
def p14(server: Server, c: Check) -> None:
    raise Skip("the Studio (Streamlit), not the engine: covered by the browser tests")


# ---------------------------------------------------------------------------------------------------------------
# 13. Misfit LoRAs
# ---------------------------------------------------------------------------------------------------------------


def use_lora(server: Server, c: Check, name: str, blob: bytes, what: str) -> str:
    """Upload, then render with it: the one line the client sees (at upload, submit or as the job's error)."""
    up = upload(server, "lora", name, blob)
    if up.refused:
        return f"upload {up.status}: {up.message}"
    if not up.ok:
        c.failures.append(f"{what}: upload → {up.status} {up.message[:100]}")
        return up.message
    r = server.submit({**TINY, "prompt": "probe misfit lora", "keep": False, "loras": [{"name": name}]})
    if r.refused:
        return f"submit {r.status}: {r.message}"
    if not r.ok:
        c.failures.append(f"{what}: submit → {r.status} {r.message[:100]}")
        return r.message
    info = server.wait_end(r.json()["id"], 90)
    if info["state"] == "done":
        c.failures.append(f"{what}: the render with it ended done")
    return f"job {info['state']} ({info.get('error_kind')}): {info.get('error') or ''}"


@probe(13, "a", "FLUX LoRAs (diffusers and kohya names) on SD 1.5 → one 'does not fit' line, no 'internal error'")
def p13_flux(server: Server, c: Check) -> None:
    lines = {}
    for layout in ("diffusers", "kohya"):
        lines[layout] = use_lora(server, c, f"{RUN} flux {layout}", flux_lora(layout), f"FLUX {layout}")
    for layout, line in lines.items():
        c.expect("internal error" not in line.lower() and "\n" not in line.strip(), f"{layout}: {line[:160]}")
        c.expect("flux" in line.lower() or "does not fit" in line.lower(), f"{layout}: does not say why: {line[:160]}")
    after = server.submit({**TINY, "prompt": "probe after misfit", "keep": False})
    end = server.wait_end(after.json()["id"], 60) if after.ok else {}
    c.note(" | ".join(f"{k}: {v[:90]}" for k, v in lines.items()) + f" | next render {end.get('state')}")
    c.expect(end.get("state") == "done", f"a plain render after them ended {end.get('state')}")


@probe(13, "b", "misfit SD LoRAs (wrong shapes, unknown keys) and a LoRA sent as a checkpoint → one line")
def p13_other(server: Server, c: Check) -> None:
    cases = {
        "wrong shape": sd15_lora(5, rank=4, channels=7),
        "unknown keys": safetensors_bytes({"foo.bar.lora_A.weight": (4, 8), "foo.bar.lora_B.weight": (8, 4)}),
        "no tensors": safetensors_bytes({}),
    }
    lines = {what: use_lora(server, c, f"{RUN} misfit {i}", blob, what) for i, (what, blob) in enumerate(cases.items())}
    ck = upload(server, "checkpoint", f"{RUN} lora as ckpt", sd15_lora(9))
    if ck.ok:
        r = server.submit(
            {**TINY, "prompt": "probe lora as checkpoint", "keep": False, "checkpoint": f"{RUN} lora as ckpt"}
        )
        lines["LoRA as checkpoint"] = (
            f"submit {r.status}: {r.message}"
            if not r.ok
            else (lambda i: f"job {i['state']}: {i.get('error')}")(server.wait_end(r.json()["id"], 90))
        )
    else:
        lines["LoRA as checkpoint"] = f"upload {ck.status}: {ck.message}"
    for what, line in lines.items():
        c.expect("internal error" not in line.lower() and "\n" not in line.strip(), f"{what}: {line[:160]}")
    c.note(" | ".join(f"{k}: {v[:70]}" for k, v in lines.items()))


# ---------------------------------------------------------------------------------------------------------------
# 15. No server paths in what a client reads
# ---------------------------------------------------------------------------------------------------------------


def paths_in(text: str, data_dir: Path) -> list[str]:
    found = [m.group(0) for m in ABSOLUTE.finditer(text)]
    return found + [str(d) for d in {data_dir, data_dir.resolve()} if str(d) in text]


@probe(15, "a", "missing LoRA / checkpoint / style / run / job names → errors with no absolute path")
def p15_missing(server: Server, c: Check) -> None:
    tries = {
        "missing lora": lambda: server.submit(
            {**TINY, "prompt": "p", "keep": False, "loras": [{"name": f"{RUN}-teak"}]}
        ),
        "missing checkpoint": lambda: server.submit(
            {**TINY, "prompt": "p", "keep": False, "checkpoint": f"{RUN}-dreamy"}
        ),
        "missing checkpoint .safetensors": lambda: server.submit(
            {**TINY, "prompt": "p", "keep": False, "checkpoint": f"{RUN}.safetensors"}
        ),
        "missing style": lambda: server.submit({**TINY, "prompt": "p", "keep": False, "style": f"{RUN}-nostyle"}),
        "missing run": lambda: server.api("history/get", {"run_id": f"{RUN}-norun"}),
        "missing image": lambda: server.api("history/image", {"ref": f"{RUN}-norun#0"}),
        "missing job": lambda: server.api("jobs/get", {"job_id": f"{RUN}-nojob"}),
        "missing style image": lambda: server.call("GET", f"/styles/{RUN}-nostyle/image"),
        "missing sweep": lambda: server.api("sweeps/get", {"batch": f"{RUN}-nosweep"}),
    }
    seen, bad = {}, []
    for what, fn in tries.items():
        r = fn()
        line = r.message
        if r.ok and isinstance(r.json(), dict) and r.json().get("id"):  # accepted as a job: its failure line counts
            info = server.wait_end(r.json()["id"], 60)
            line = f"job {info['state']}: {info.get('error')}"
        seen[what] = f"{r.status}"
        if paths_in(r.text + line, server.data_dir):
            bad.append(f"{what}: {line[:140]}")
    c.note(", ".join(f"{k} {v}" for k, v in seen.items()))
    c.expect(not bad, "; ".join(bad))


@probe(
    15, "b", "/health, /openapi.json, history rows/get/list, jobs list, a render's result, styles → no data-folder path"
)
def p15_reads(server: Server, c: Check) -> None:
    run_id = server.reference_run()
    # One field names server paths on purpose, and is noted rather than failed (finding 15 is about errors):
    # renders/models `folders` (the sidebar's "copy large files into …" hint). Everything else a client reads must
    # not (a result's `files` are relative to the data folder).
    on_purpose = {"renders/models": "folders"}
    reads = {
        "/health": server.call("GET", "/health"),
        "/openapi.json": server.call("GET", "/openapi.json"),
        "history/rows": server.api("history/rows", {"limit": 50}),
        "history/get": server.api("history/get", {"run_id": run_id}),
        "history/list": server.api("history/list", {}),
        "jobs/list": server.api("jobs/list", {"active": False, "limit": 200}),
        "renders/models": server.api("renders/models", {}),
        "styles/list": server.api("styles/list", {"include_hidden": True}),
        "GET /styles": server.call("GET", "/styles?include_hidden=true"),
        "renders/result": server.api("renders/result", {"job_id": server.reference_job}),
        "GET /jobs/{id}/result": server.call("GET", f"/jobs/{server.reference_job}/result"),
    }
    bad, noted = {}, []
    for what, r in reads.items():
        body = r.json()
        text = r.text
        if (
            what in on_purpose
            and isinstance(body, dict)
            and paths_in(json.dumps(body.get(on_purpose[what])), server.data_dir)
        ):
            noted.append(f"{what} '{on_purpose[what]}'")
            text = json.dumps({**body, on_purpose[what]: None})
        if paths_in(text, server.data_dir):
            bad[what] = paths_in(text, server.data_dir)[:2]
    c.note(", ".join(f"{k} {r.status}" for k, r in reads.items()))
    if noted:
        c.note(f"absolute paths on purpose (not failed): {', '.join(noted)}")
    c.expect(
        all(r.ok or r.status in (404, 409, 410, 422) for r in reads.values()),
        f"{ {k: r.status for k, r in reads.items()} }",
    )
    c.expect(not bad, f"paths in {bad}")


# ---------------------------------------------------------------------------------------------------------------
# 16. A fair queue
# ---------------------------------------------------------------------------------------------------------------


@probe(16, "a", "client a submits until 429; then client b is accepted; a's legacy POST /jobs is 429 too")
def p16_fair(server: Server, c: Check) -> None:
    mine: list[str] = []
    with blocker(server, c):
        full = None
        for i in range(40):
            r = server.submit({**TINY, "prompt": f"probe fill {i}", "keep": False}, client="a")
            if r.status == 429:
                full = r
                break
            if not c.expect(r.ok, f"submit {i} from a → {r.status} {r.message[:80]}"):
                break
            mine.append(r.json()["id"])
        other = server.submit({**TINY, "prompt": "probe other client", "keep": False}, client="b")
        legacy = server.call(
            "POST",
            "/jobs",
            data={"prompt": "probe legacy", "options": json.dumps({**TINY, "keep": False})},
            headers={"X-Client-Id": "a"},
        )
        extra = [r.json()["id"] for r in (other, legacy) if r.ok and isinstance(r.json(), dict)]
        server.jobs.update(extra)
        for job_id in mine + extra:
            server.cancel(job_id)
    c.note(
        f"a: {len(mine)} accepted then {full.status if full else 'never 429'} ({full.message[:60] if full else ''}); "
        f"b: {other.status}; a via /jobs: {legacy.status}"
    )
    c.expect(full is not None, "client a never got 429 in 40 submits")
    c.expect(full is None or ("\n" not in full.message and len(full.message) < 500), "the 429 is not one line")
    c.expect(other.status in (200, 201, 202), f"client b → {other.status} {other.message[:100]}")
    c.expect(legacy.status == 429, f"client a on legacy POST /jobs → {legacy.status}")


@probe(16, "b", "a client that changes its X-Client-Id (or sends a malformed one) every call → the global bound, 429")
def p16_rotating(server: Server, c: Check) -> None:
    ids: list[str] = []
    full = None
    with blocker(server, c):
        for i in range(48):
            client = f"rot-{i}" if i % 4 else f"bad id/{i}"  # a malformed id counts as the peer's address
            r = server.submit({**TINY, "prompt": f"probe rotate {i}", "keep": False}, client=client)
            if r.status == 429:
                full = r
                break
            if not c.expect(r.ok, f"submit {i} → {r.status} {r.message[:80]}"):
                break
            ids.append(r.json()["id"])
        for job_id in ids:
            server.cancel(job_id)
    c.note(f"{len(ids)} accepted then {full.status if full else 'never 429'}: {full.message[:80] if full else ''}")
    c.expect(full is not None, "no 429 in 48 submits from rotating ids")


@probe(16, "c", "at its own bound, and with the whole queue full, a client can still get, wait for and cancel jobs")
def p16_cancel_when_full(server: Server, c: Check) -> None:
    def job_calls(job_id: str, client: str) -> dict[str, Reply]:
        return {
            "get": server.api("jobs/get", {"job_id": job_id}, client=client),
            "wait": server.api("jobs/wait", {"job_id": job_id, "timeout": 0}, client=client),
            "list": server.api("jobs/list", {}, client=client),
            "cancel": server.api("jobs/cancel", {"job_id": job_id}, client=client),
        }

    mine: list[str] = []
    rotating: list[str] = []
    own: dict[str, Reply] = {}
    other: dict[str, Reply] = {}
    with blocker(server, c):
        for i in range(12):  # one client up to its bound
            r = server.submit({**TINY, "prompt": f"probe own bound {i}", "keep": False}, client="probe-16c")
            if not r.ok:
                break
            mine.append(r.json()["id"])
        if mine:
            own = job_calls(mine[-1], "probe-16c")
        for i in range(40):  # then the whole queue, from ids that change every call
            r = server.submit({**TINY, "prompt": f"probe full queue {i}", "keep": False}, client=f"probe-16c-{i}")
            if not r.ok:
                break
            rotating.append(r.json()["id"])
        if rotating:
            other = job_calls(rotating[-1], "probe-16c-other")
        for job_id in mine + rotating:
            server.cancel(job_id)
    c.note(
        f"own bound after {len(mine)}: " + ", ".join(f"{k} {r.status}" for k, r in own.items())
        + f"; queue full after {len(rotating)} more: " + ", ".join(f"{k} {r.status}" for k, r in other.items())
    )  # fmt: skip
    for who, calls in (("at its own bound", own), ("with the queue full", other)):
        bad = {k: f"{r.status} {r.message[:70]}" for k, r in calls.items() if not r.ok}
        c.expect(not bad, f"{who}: {bad}")


# ---------------------------------------------------------------------------------------------------------------
# 17. No hub fetch or foreign folder a client can name
# ---------------------------------------------------------------------------------------------------------------

FOREIGN = [
    "someone/some-repo",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "./models",
    "a/b/c",
    "~root/x",
    "%2e%2e/x",
    "file:///etc/passwd",
    "https://evil.example/x.safetensors",
    "C:\\Windows\\x",
    "x\u0000y",
    "models/tiny/stable-diffusion-v1-5",
    "tiny/stable-diffusion-v1-5",
    " someone/some-repo",
]


@probe(17, "a", f"{len(FOREIGN)} foreign checkpoint names (hub ids, traversal, URLs) → 4xx one line at submit, < 2 s")
def p17_checkpoints(server: Server, c: Check) -> None:
    bad, replies = [], []
    for name in FOREIGN:
        r = server.submit({**TINY, "prompt": "probe foreign checkpoint", "keep": False, "checkpoint": name})
        replies.append(r)
        if r.ok:
            server.cancel(r.json()["id"])
        if not (r.refused and r.status != 429 and r.seconds < 2 and "\n" not in r.message.strip()):
            bad.append(f"{name!r} → {r} {r.message[:80]}")
    c.note(f"{codes(replies)}, slowest {max(r.seconds for r in replies):.2f}s; e.g. {replies[0].message[:90]!r}")
    c.expect(not bad, "; ".join(bad[:5]))


@probe(17, "b", "the same names as LoRAs, and as a legacy POST /jobs option → 4xx at submit")
def p17_loras(server: Server, c: Check) -> None:
    bad, replies = [], []
    for name in FOREIGN:
        r = server.submit({**TINY, "prompt": "probe foreign lora", "keep": False, "loras": [{"name": name}]})
        replies.append(r)
        if r.ok:
            server.cancel(r.json()["id"])
            bad.append(f"lora {name!r} accepted")
    for name in FOREIGN[:5]:
        r = server.call("POST", "/jobs", data={"prompt": "probe", "options": json.dumps({**TINY, "checkpoint": name})})
        replies.append(r)
        if r.ok:
            server.cancel(r.json()["id"])
            bad.append(f"/jobs checkpoint {name!r} accepted")
    c.note(f"{codes(replies)}")
    c.expect(all(r.refused and r.status != 429 for r in replies), f"{codes(replies)}; " + "; ".join(bad[:4]))


# ---------------------------------------------------------------------------------------------------------------
# 1. The job store locked from outside
# ---------------------------------------------------------------------------------------------------------------

LOCK_SECONDS = 36.0  # over the store's 30 s wait for a lock: what used to end every worker (--lock-seconds)
STORE_WAIT = 30.0  # how long the engine's writes wait for a lock before the store counts as failing


@probe(1, "a", "jobs.sqlite held EXCLUSIVE from outside → /health 503 degraded, then 200; jobs run after")
def p1_locked(server: Server, c: Check) -> None:
    db = server.jobs_db()
    if db is None:
        raise Skip(f"no jobs.sqlite under {server.data_dir}")
    conn = sqlite3.connect(db, timeout=15, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise Skip(f"cannot lock jobs.sqlite from outside: {exc}") from None
    locked_at = time.monotonic()
    during: list[Reply] = []
    submitted: list[Reply] = []
    sub_thread = threading.Thread(
        target=lambda: submitted.append(
            server.submit({**TINY, "prompt": "probe during lock", "keep": False}, timeout=90)
        ),
        daemon=True,
    )
    try:
        time.sleep(1)
        sub_thread.start()
        while time.monotonic() - locked_at < LOCK_SECONDS:
            during.append(server.call("GET", "/health", timeout=30))
            time.sleep(2)
    finally:
        conn.rollback()
        conn.close()
    released = time.monotonic()
    after = None
    while time.monotonic() - released < 20:
        after = server.call("GET", "/health", timeout=30)
        if after.status == 200:
            break
        time.sleep(1)
    back_in = time.monotonic() - released
    sub_thread.join(90)
    sub = submitted[0] if submitted else None
    if sub is not None and not sub.ok:  # refused while locked (503): the client tries again
        sub = server.submit({**TINY, "prompt": "probe after lock", "keep": False})
    first = server.wait_end(sub.json()["id"], 90) if sub is not None and sub.ok else {}
    fresh = server.submit({**TINY, "prompt": "probe after lock 2", "keep": False})
    second = server.wait_end(fresh.json()["id"], 90) if fresh.ok else {}
    degraded = [r for r in during if r.status == 503]
    said = degraded[0].json() if degraded else {}
    c.note(
        f"locked {LOCK_SECONDS:.0f}s: /health {codes(during)} (worst {max(r.seconds for r in during):.1f}s); "
        f"200 again {back_in:.1f}s after; submit during: {submitted[0] if submitted else '-'}; "
        f"jobs after: {first.get('state')}, {second.get('state')}"
    )
    if LOCK_SECONDS > STORE_WAIT + 2:  # shorter locks only delay writes (WAL: reads go on): 200 throughout is right
        c.expect(bool(degraded), f"/health never said degraded while the store was locked ({codes(during)})")
    c.expect(not [r for r in during if r.status not in (200, 503)], f"/health during the lock: {codes(during)}")
    c.expect(not said or said.get("status") == "degraded", f"the 503 body: {str(said)[:120]}")
    c.expect(max(r.seconds for r in during) < 5, "/health hung while the store was locked")
    c.expect(after is not None and after.status == 200, f"/health 20 s after the release: {after}")
    c.expect(
        bool(submitted) and submitted[0].status in (200, 202, 503),
        f"a submit during the lock: {submitted[0] if submitted else 'no answer'}",
    )
    c.expect(
        first.get("state") == "done",
        f"the job submitted during the lock ended {first.get('state')}: {first.get('error')}",
    )
    c.expect(second.get("state") == "done", f"a job after the lock ended {second.get('state')}: the workers died?")


# ---------------------------------------------------------------------------------------------------------------
# Every refusal seen in this run
# ---------------------------------------------------------------------------------------------------------------


@probe(0, "", "every non-2xx reply of this run: one line, < 500 chars, JSON, no traceback, no data folder")
def p_hygiene(server: Server, c: Check) -> None:
    bad = [p for r in server.refusals for p in problems_of(r, server.data_dir)]
    c.note(f"{len(server.refusals)} refusals: {codes(server.refusals)}")
    c.expect(not bad, f"{len(bad)} problems, e.g. {bad[:3]}")


# ---------------------------------------------------------------------------------------------------------------

ORDER = ["11", "3", "4", "5", "6", "7", "8", "9", "2", "13", "15", "16", "17", "1", "10", "12", "14", "0"]


def main(argv: list[str] | None = None) -> int:
    global LOCK_SECONDS
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", required=True, help="the engine server, on loopback: http://127.0.0.1:PORT")
    ap.add_argument("--token", required=True)
    ap.add_argument("--data-dir", required=True, type=Path, help="the server's data folder (DESIGN_STUDIO_DATA_DIR)")
    ap.add_argument("--pid", type=int, help="the server's process id: its RSS is measured (finding 2)")
    ap.add_argument("--only", help="findings to run, e.g. 3,5 (or sub-probes: 11a,9c; 'all': the refusals check)")
    ap.add_argument("--server-log", type=Path, help="the server's log: tracebacks in it are counted (finding 11)")
    ap.add_argument("--lock-seconds", type=float, default=LOCK_SECONDS, help="how long finding 1 locks jobs.sqlite")
    args = ap.parse_args(argv)
    host = urlparse(args.url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loopback only: --url must be http://127.0.0.1:PORT")
    LOCK_SECONDS = args.lock_seconds
    server = Server(args.url, args.token, args.data_dir, args.pid, args.server_log)
    health = server.call("GET", "/health", timeout=30)
    if health.status != 200:
        print(f"the server does not answer /health with 200: {health.status} {health.text[:200]}")
        return 2
    wanted = {w.strip() for w in args.only.split(",")} if args.only else None
    chosen = [p for f in ORDER for p in PROBES if p.finding == f]
    if wanted:
        wanted |= {"0"} if "all" in wanted else set()  # the hygiene probe, labelled "all"
        chosen = [p for p in chosen if p.finding in wanted or f"{p.finding}{p.sub}" in wanted]
    print(f"{len(chosen)} probes against {args.url} (data {args.data_dir}, pid {args.pid or '-'}; names '{RUN}…')")
    failed = 0
    started = time.monotonic()
    for p in chosen:
        c = Check()
        t0 = time.monotonic()
        try:
            p.run(server, c)
            status = "FAIL" if c.failures else "PASS"
        except Skip as why:
            status, c.notes = "SKIP", [str(why)]
        except Exception as exc:  # a probe that cannot run is a failure, said in one line
            status = "FAIL"
            c.failures.append(f"the probe broke: {type(exc).__name__}: {exc}")
        failed += status == "FAIL"
        server.cleanup_jobs()
        label = f"{p.finding}{p.sub}" if p.finding != "0" else "all"
        line = f"{status:<4}  {label:<4} {p.title}  [{time.monotonic() - t0:.0f}s] {'; '.join(c.notes)}"
        if c.failures:
            line += "  !! " + " || ".join(c.failures)
        print(line, flush=True)
    if any(p.finding == "5" for p in chosen):
        cleanup_styles(server)
    left = server.cleanup_jobs()
    print(
        f"{failed} failed of {len(chosen)} in {time.monotonic() - started:.0f}s"
        + (f"; cancelled {left} jobs left running" if left else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
