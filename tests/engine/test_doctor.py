"""The model doctor as a user meets it: `python -m engine doctor` names what is missing and how to fetch it, exits 0
only when the models every render needs are here; `models pull` plans offline and says in one line when it cannot
download. The hub cache (HF_HOME) and the data folder are temporary, so nothing depends on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from tests.conftest import REPO, free_port, make_data_dir, make_engine
from tests.engine.test_offline import RENDER_MODELS

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    """The default profile over an empty hub cache and an empty data folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DESIGN_STUDIO_PROFILE", raising=False)
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cache_snapshot(hf_home: Path, repo: str, folder: Path) -> Path:
    """`repo` in the hub cache's layout (refs/main → a snapshot), its files those of `folder`."""
    commit = "0" * 40
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit, symlinks=False)
    return root / "snapshots" / commit


def test_without_weights_the_doctor_fails_naming_sd15_and_its_command(tmp_path):
    """A fresh process on a fresh machine: exit non-zero, the SD 1.5 id, the one command and the hub's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DESIGN_STUDIO_PROFILE",)}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), DESIGN_STUDIO_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "engine", "doctor"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert SD15 in out and "missing" in out
    assert "python -m engine models pull" in out  # everything at once
    base = next(line for line in out.splitlines() if line.strip().startswith("base: "))
    assert f"hf download {SD15} --include" in base and '"unet/diffusion_pytorch_model.safetensors"' in base
    assert ".bin" not in base  # safetensors only
    assert not (tmp_path / "hf").exists()  # it only looked


def test_doctor_json_has_an_entry_per_model(capsys, no_weights):
    code, out, _ = run_cli(capsys, "doctor", "--json")
    assert code == 2
    report = json.loads(out)
    names = [m["name"] for m in report["models"]]
    assert names[:2] == ["base", "controlnet-canny"]
    assert {"controlnet-lineart", "ip-adapter", "image-encoder", "clip", "sam2", "taesd", "fast-lora", "flux"} <= set(
        names
    )
    base = report["models"][0]
    assert base["model"] == SD15 and base["status"] == "missing" and base["needed"] is True
    assert base["fetch"] == "python -m engine models pull base" and base["download_size"] > 1e9
    assert "base" in report["missing"] and report["ok"] is False
    assert report["fetch_all"] == "python -m engine models pull"
    flux = next(m for m in report["models"] if m["name"] == "flux")
    assert flux["needed"] is False and "flux" not in report["missing"]  # optional: it loads on first use


def test_doctor_on_the_tiny_profile_exits_0_built_or_not(capsys, tmp_path, tiny_models):
    code, out, _ = run_cli(capsys, "doctor", "--profile", "tiny", "--data-dir", str(tmp_path / "fresh"))
    assert code == 0, out
    assert "built on first use" in out or "to build" in out
    code, out, _ = run_cli(capsys, "doctor", "--profile", "tiny", "--data-dir", str(make_data_dir(tmp_path / "d",
                           tiny_models)), "--json")  # fmt: skip
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["summary"] == "models: all present"
    assert all(m["status"] == "present" and m["format"] == "safetensors" and m["size"] > 0 for m in report["models"])
    assert not any(str(tmp_path) in m["model"] for m in report["models"])  # folders as callers see them


def test_cached_models_count_as_present_and_pickles_are_flagged(capsys, no_weights, tiny_models):
    hf = no_weights / "hf"
    for repo, folder in RENDER_MODELS.items():
        cache_snapshot(hf, repo, tiny_models / folder)
    code, out, _ = run_cli(capsys, "doctor", "--json")
    report = json.loads(out)
    assert code == 0, report["missing"]
    base = next(m for m in report["models"] if m["name"] == "base")
    assert base["status"] == "present" and base["format"] == "safetensors" and base["size"] > 100_000
    assert report["summary"].startswith("models: all needed present")  # the optional ones are missing

    # the same ControlNet, pickled: present on disk, refused by the loader, so the doctor fails
    snap = next((hf / "hub" / "models--lllyasviel--sd-controlnet-canny" / "snapshots").iterdir())
    weights = snap / "diffusion_pytorch_model.safetensors"
    weights.rename(snap / "diffusion_pytorch_model.bin")
    code, out, _ = run_cli(capsys, "doctor", "--json")
    canny = next(m for m in json.loads(out)["models"] if m["name"] == "controlnet-canny")
    assert code == 2 and canny["status"] == "pickle-only" and canny["format"] == "pickle"
    assert "DESIGN_STUDIO_ALLOW_PICKLE" in canny["note"]


def test_pull_dry_run_prints_the_plan_offline(capsys, no_weights):
    code, out, _ = run_cli(capsys, "models", "pull", "--dry-run")
    assert code == 0
    assert SD15 in out and "would download 6 models" in out and "GB" in out
    code, out, _ = run_cli(capsys, "models", "pull", "base", "sam2", "--dry-run", "--json")
    plan = json.loads(out)
    assert [s["name"] for s in plan["steps"]] == ["base", "sam2"]
    base = plan["steps"][0]
    assert base["action"] == "download" and base["model"] == SD15
    assert all(".bin" not in p and not p.endswith(".ckpt") for p in base["include"])
    assert "unet/diffusion_pytorch_model.safetensors" in base["include"]
    code, _, err = run_cli(capsys, "models", "pull", "sdxl", "--dry-run")
    assert code == 2 and err.startswith("error: no model named sdxl") and len(err.strip().splitlines()) == 1
    assert not (no_weights / "hf").exists()


def test_pull_without_the_hub_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "DESIGN_STUDIO_PROFILE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), DESIGN_STUDIO_DATA_DIR=str(tmp_path / "data"),
               HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "engine", "models", "pull", "taesd"], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot download: the hub") and "unreachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_model_pulled_as_its_fp16_variant_only_loads(tmp_path, tiny_models):
    """What `models pull` fetches on a GPU (diffusers' fp16 variant files alone) is what the loader reads."""
    data = tmp_path / "data"
    tiny = data / "models" / "tiny"
    shutil.copytree(tiny_models, tiny)
    for folder in ("stable-diffusion-v1-5/unet", "stable-diffusion-v1-5/vae", "sd-controlnet-canny"):
        f = tiny / folder / "diffusion_pytorch_model.safetensors"
        f.rename(f.with_name("diffusion_pytorch_model.fp16.safetensors"))
    te = tiny / "stable-diffusion-v1-5" / "text_encoder" / "model.safetensors"
    te.rename(te.with_name("model.fp16.safetensors"))
    report = {m.name: m for m in make_engine(data).about.doctor().models}
    assert report["base"].status == "present" and report["base"].variant == "fp16"
    engine = make_engine(data)
    engine.load()  # SD 1.5 + the canny ControlNet, from the fp16 files
    assert engine.capabilities().loaded["pipeline"]
    engine.close()


def test_a_folder_that_is_not_there_names_its_setting(capsys, no_weights, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_TAESD_MODEL", str(no_weights / "nowhere"))
    code, out, _ = run_cli(capsys, "doctor", "--json")
    taesd = next(m for m in json.loads(out)["models"] if m["name"] == "taesd")
    assert taesd["source"] == "folder" and taesd["status"] == "missing"
    assert "DESIGN_STUDIO_TAESD_MODEL" in taesd["note"] and not taesd["fetch"] and not taesd["download"]
