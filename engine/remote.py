"""`RemoteEngine`: the same interface as `LocalEngine`, over the HTTP server (jobs, so tunnels never time out)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

import httpx
from PIL import Image

from .engine import Engine, ProgressFn
from .errors import BadInput, Busy, Cancelled, EngineError, ModelUnavailable, QueueFull, TooLarge, UnsupportedImage
from .library import StyleInfo
from .schema import GenerateRequest, GenerateResult, Progress, StyleHit

ERRORS = {413: TooLarge, 415: UnsupportedImage, 422: BadInput, 429: QueueFull, 503: Busy}


class RemoteEngine(Engine):
    """Talks to `python -m engine serve`; TLS verification stays on."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, poll: float = 0.25):
        self.url = url.rstrip("/")
        headers = {"ngrok-skip-browser-warning": "true"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=True)
        self.poll = poll

    # ---- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"cannot reach the engine at {self.url} ({type(exc).__name__})",
                fix="check the URL, that the server runs, and the tunnel",
            ) from None
        if resp.status_code == 401:
            raise EngineError("the engine refused the token (401)", fix="paste the token the server printed")
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text[:200]
            raise ERRORS.get(resp.status_code, EngineError)(f"{detail}")
        return resp

    def _json(self, method: str, path: str, **kw) -> Any:
        return self._call(method, path, **kw).json()

    # ---- engine interface -----------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def list_styles(self, include_hidden: bool = False) -> list[StyleInfo]:
        return [StyleInfo(**s) for s in self._json("GET", "/styles", params={"include_hidden": include_hidden})]

    def add_style(self, image: bytes, name: str, description: str = "", tags: list[str] | None = None) -> StyleInfo:
        data = {"name": name, "description": description, "tags": ",".join(tags or [])}
        return StyleInfo(**self._json("POST", "/styles", data=data, files={"file": ("style.png", image)}))

    def remove_style(self, name_or_id: str) -> StyleInfo:
        return StyleInfo(**self._json("DELETE", f"/styles/{name_or_id}"))

    def hide_style(self, name_or_id: str, hidden: bool = True) -> StyleInfo:
        return StyleInfo(**self._json("POST", f"/styles/{name_or_id}/hide", params={"hidden": hidden}))

    def search_styles(self, text: str | None = None, image: bytes | None = None, k: int = 3) -> list[StyleHit]:
        if image is not None:
            raise BadInput("image search is not offered by the remote engine yet; search by words")
        hits = self._json("GET", "/styles/search", params={"text": text or "", "k": k})
        return [StyleHit(h["id"], h["name"], h["score"], source=h["source"]) for h in hits]

    def style_image(self, name_or_id: str) -> Image.Image:
        return Image.open(io.BytesIO(self._call("GET", f"/styles/{name_or_id}/image").content)).convert("RGB")

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return []  # the history lives with the server; its pages read it there

    def run(self, run_id: str) -> dict[str, Any]:
        raise BadInput("the remote engine's history is on the server")

    def run_sketch(self, run_id: str) -> bytes | None:
        return None

    def segment(self, image: bytes, points=None, labels=None, box=None):
        import numpy as np

        from .regions import Segment

        form = {"mask_format": "png"}
        for key, value in (("points", points), ("labels", labels), ("box", box)):
            if value is not None:
                form[key] = json.dumps([list(p) for p in value] if key == "points" else list(value))
        out = self._json("POST", "/segment", data=form, files={"file": ("image.png", image)})
        with Image.open(io.BytesIO(base64.b64decode(out["mask_png"]))) as im:
            mask = np.asarray(im.convert("L")) > 127
        return Segment(mask, out["score"], out["polygons"])

    def search_runs(self, text=None, like=None, k: int = 12) -> list[dict[str, Any]]:
        return []

    def generate(
        self, request: GenerateRequest, on_progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> GenerateResult:
        """Submit a job, follow it until it ends, fetch its result; cancel is forwarded to the server."""
        options = request.model_dump(mode="json", exclude={"prompt", "sketch"})
        files = {"file": ("sketch.png", request.sketch)} if request.sketch is not None else None
        job = self._json("POST", "/jobs", data={"prompt": request.prompt, "options": json.dumps(options)}, files=files)
        start = time.perf_counter()
        last = None
        cancelled = False
        running_since = first_step = None  # when this client first saw it running, and its first step (time, step)
        while job["state"] not in ("done", "failed", "cancelled"):
            if cancel is not None and cancel.is_set() and not cancelled:
                job = self._json("DELETE", f"/jobs/{job['id']}")
                cancelled = True
            now = time.perf_counter()
            if job["state"] == "running" and running_since is None:
                running_since = now
            key = (job["state"], job["step"], job["position"])
            if on_progress and key != last:
                if job["state"] == "queued":
                    on_progress(Progress("queued", job["position"], 0, now - start))
                elif job["step"]:
                    # the rate from the steps seen here, so time spent queued or uploading never inflates the ETA
                    first_step = first_step or (now, job["step"])
                    done = job["step"] - first_step[1]
                    per_step = (now - first_step[0]) / done if done else None
                    elapsed = now - (running_since or start)
                    on_progress(Progress("denoise", job["step"], job["total"], elapsed, per_step))
                last = key
            time.sleep(self.poll)
            job = self._json("GET", f"/jobs/{job['id']}")
        if job["state"] == "cancelled":
            raise Cancelled(job["error"] or "cancelled")
        if job["state"] == "failed":
            raise EngineError(job["error"] or "the job failed")
        if on_progress and job["total"]:
            on_progress(Progress("denoise", job["total"], job["total"], time.perf_counter() - start))
        payload = self._json("GET", f"/jobs/{job['id']}/result")
        meta = payload["metadata"]
        files = [base64.b64decode(b) for b in payload["images"]]
        images = [Image.open(io.BytesIO(f)).convert("RGB") for f in files]
        styles = [
            StyleHit(s["id"], s["name"], s["score"], source=s["source"], weight=s["weight"], used=s["used"])
            for s in meta["styles"]
        ]
        return GenerateResult(
            images=images,
            seeds=meta["seeds"],
            metadata=meta,
            styles=styles,
            run_id=payload["run_id"],
            png=files,
            regions=meta.get("regions", []),
        )
