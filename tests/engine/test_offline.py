"""A first run without the weights and without a network: the CLI and the app say so in seconds, each with the fix in
its own words; weights already cached load offline without the hub client's retries. "No network" is a closed port
on loopback in HF_ENDPOINT (the hub's address), so the outside world being up or down changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, free_port, make_data_dir

HUB_NOISE = ("Retrying", "Could not reach", "Couldn't connect", "Traceback", "thrown while requesting")
# The hub ids of the default profile that a render loads, and the tiny profile's folder in the same layout.
RENDER_MODELS = {
    "openai/clip-vit-base-patch32": "clip-vit-base-patch32",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "stable-diffusion-v1-5",
    "lllyasviel/sd-controlnet-canny": "sd-controlnet-canny",
    "h94/IP-Adapter": "IP-Adapter",
    "madebyollin/taesd": "taesd",
}


def offline_env(tmp_path: Path) -> dict[str, str]:
    """The default profile, an empty hub cache, a data folder of its own, and a hub that does not answer."""
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.pop("DESIGN_STUDIO_PROFILE", None)
    env.update(
        PYTHONPATH=str(REPO),
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # nobody listens there
        DESIGN_STUDIO_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def generate(env: dict[str, str], *extra: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "engine", "generate", "--prompt", "a chair", "--size", "64", "--steps", "2", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    return proc, time.perf_counter() - start


def test_the_cli_without_weights_or_network_says_so_in_seconds(tmp_path):
    proc, seconds = generate(offline_env(tmp_path), timeout=40)
    assert proc.returncode == 2, proc.stderr
    assert seconds <= 15
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, lines
    said = proc.stderr
    assert not any(noise in said for noise in HUB_NOISE), said
    assert "openai/clip-vit-base-patch32" in said and "not in the local cache" in said and "unreachable" in said
    assert "add --profile tiny" in said  # the CLI's own words for the demo profile
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing half-built


def test_cached_weights_load_offline_quietly(tmp_path, tiny_models):
    """The hub unreachable and the weights in its cache: the process works offline from the start (no retries, no
    revision look-ups) and renders. The tiny profile's folders stand in for the real snapshots, in the same layout.
    With -v (warnings and library notices shown, as the app's terminal shows them) the render prints none of the
    notices nobody can act on: transformers' torchvision fallback, huggingface_hub's deprecated argument."""
    commit = "0" * 40
    for repo, folder in RENDER_MODELS.items():
        root = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(commit)
        (root / "snapshots").mkdir()
        (root / "snapshots" / commit).symlink_to(tiny_models / folder, target_is_directory=True)
    env = offline_env(tmp_path)
    make_data_dir(Path(env["DESIGN_STUDIO_DATA_DIR"]), tiny_models, warm=True)  # the styles already indexed
    proc, seconds = generate(env, "--no-style", "-v", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not any(noise in proc.stderr for noise in HUB_NOISE), proc.stderr
    assert "torchvision" not in proc.stderr and "local_dir_use_symlinks" not in proc.stderr, proc.stderr
    assert '"profile": "default"' in proc.stdout
    assert seconds <= 60


@pytest.fixture
def offline_app(tmp_path, monkeypatch):
    for name, value in offline_env(tmp_path).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


def test_the_app_without_weights_or_network_says_how_to_try_it_at_once(offline_app):
    for attempt in ("first load", "reload"):  # a failed start is not paid again on every page load
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        start = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - start
        assert not at.exception, at.exception[0].message
        assert not at.error and "not on this machine yet" in at.warning[0].value  # the doctor's page, not a crash
        said = " ".join(c.value for c in at.caption)
        assert "openai/clip-vit-base-patch32" in said and "unreachable" in said
        assert "`DESIGN_STUDIO_PROFILE=tiny make run`" in said and "--profile" not in said
        assert [b.label for b in at.button if b.label == "Try the demo models"]
        assert seconds < (15 if attempt == "first load" else 5), f"{attempt}: {seconds:.1f} s"
    assert not (offline_app / "data").exists()
