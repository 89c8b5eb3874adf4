"""Loading weights: the real path, offline failures in one line, pickles only on opt-in."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import ModelUnavailable
from engine.models import load_clip, load_pipeline
from engine.settings import Settings
from engine.tiny import is_built, prepare_tiny


def test_prepare_tiny_is_idempotent_and_in_the_real_layout(tiny_models):
    assert is_built(tiny_models)
    assert prepare_tiny(tiny_models) == tiny_models  # no rebuild
    for rel in (
        "stable-diffusion-v1-5/model_index.json",
        "stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors",
        "sd-controlnet-canny/diffusion_pytorch_model.safetensors",
        "IP-Adapter/models/ip-adapter_sd15.safetensors",
        "IP-Adapter/models/image_encoder/model.safetensors",
        "clip-vit-base-patch32/model.safetensors",
    ):
        assert (tiny_models / rel).is_file(), rel
    weights = load_file(tiny_models / "IP-Adapter/models/ip-adapter_sd15.safetensors")
    assert {k.split(".")[0] for k in weights} == {"image_proj", "ip_adapter"}


def test_the_in_memory_components_are_the_tiny_profiles_own(tiny_models):
    """The render unit tests' dummy components (engine/tiny.py `build_components`, seed 0, written nowhere) are the
    tiny profile's weights, scheduler and tokenizer, so the pixels those tests pin are the tiny profile's."""
    from diffusers import PNDMScheduler, UniPCMultistepScheduler
    from transformers import CLIPTokenizer

    from engine.tiny import build_components

    parts = build_components()
    files = {
        "unet": "stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors",
        "vae": "stable-diffusion-v1-5/vae/diffusion_pytorch_model.safetensors",
        "text_encoder": "stable-diffusion-v1-5/text_encoder/model.safetensors",
        "controlnet": "sd-controlnet-canny/diffusion_pytorch_model.safetensors",
        "image_encoder": "IP-Adapter/models/image_encoder/model.safetensors",
    }
    for name, rel in files.items():
        on_disk, in_memory = load_file(tiny_models / rel), parts[name].state_dict()
        assert on_disk.keys() <= in_memory.keys(), name
        assert all(torch.equal(on_disk[k], in_memory[k]) for k in on_disk), name
    ip_adapter = load_file(tiny_models / "IP-Adapter/models/ip-adapter_sd15.safetensors")
    assert ip_adapter.keys() == parts["ip_adapter"].keys()
    assert all(torch.equal(ip_adapter[k], parts["ip_adapter"][k]) for k in ip_adapter)
    # the Generator makes its schedulers from the pipeline's config: the same settings either way
    saved = PNDMScheduler.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="scheduler")

    def unipc(scheduler) -> dict:
        made = UniPCMultistepScheduler.from_config(scheduler.config).config
        return {k: v for k, v in made.items() if not k.startswith("_")}

    assert unipc(saved) == unipc(parts["scheduler"])
    tokenizer = CLIPTokenizer.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="tokenizer")
    text = "a timber cabin at dusk, Grün 100%"
    assert tokenizer(text).input_ids == parts["tokenizer"](text).input_ids


def test_missing_weights_offline_name_the_model_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    settings = Settings(data_dir=tmp_path, controlnet_model="nobody/not-cached-controlnet")
    with pytest.raises(ModelUnavailable) as err:
        load_pipeline(settings, "cpu", torch.float32)
    text = str(err.value)
    assert "model 'nobody/not-cached-controlnet' cannot be loaded" in text
    assert "hf download nobody/not-cached-controlnet" in text and "DESIGN_STUDIO_CONTROLNET_MODEL" in text
    assert "\n" not in text

    with pytest.raises(ModelUnavailable, match="openai/clip-vit-base-patch32"):
        load_clip(Settings(data_dir=tmp_path), "cpu")


def _tiny_settings(tmp_path, tiny_models, **kw) -> Settings:
    (tmp_path / "models").mkdir(exist_ok=True)
    shutil.copytree(tiny_models, tmp_path / "models" / "tiny")
    return Settings(profile="tiny", data_dir=tmp_path, **kw)


def test_pickled_ip_adapter_is_refused_unless_the_user_opts_in(tmp_path, tiny_models):
    settings = _tiny_settings(tmp_path, tiny_models)
    models = settings.tiny_dir / "IP-Adapter" / "models"
    flat = load_file(models / "ip-adapter_sd15.safetensors")
    nested = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        top, rest = key.split(".", 1)
        nested[top][rest] = value
    torch.save(nested, models / "ip-adapter_sd15.bin")

    with pytest.raises(ModelUnavailable, match="pickled checkpoint.*DESIGN_STUDIO_ALLOW_PICKLE"):
        load_pipeline(settings.model_copy(update={"ip_adapter_weight": "ip-adapter_sd15.bin"}), "cpu", torch.float32)
    opted_in = settings.model_copy(update={"ip_adapter_weight": "ip-adapter_sd15.bin", "allow_pickle": True})
    pipe = load_pipeline(opted_in, "cpu", torch.float32)
    assert pipe.image_encoder is not None


def test_settings_from_environment_and_a_toml_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "d"))
    toml = tmp_path / "studio.toml"
    toml.write_text('base_model = "/models/my-sd15"\ndevice = "cpu"\nprofile = "default"\n')
    monkeypatch.setenv("DESIGN_STUDIO_SETTINGS_FILE", str(toml))
    s = Settings()
    assert s.profile == "tiny"  # the environment wins over the file
    assert s.base_model == "/models/my-sd15" and s.device == "cpu"
    assert s.models().base == str(tmp_path / "d" / "models" / "tiny" / "stable-diffusion-v1-5")
    assert Settings(profile="default").models().base == "/models/my-sd15"


def test_defaults_are_the_real_model_ids_and_cpu_gets_fp32(monkeypatch):
    for var in ("DESIGN_STUDIO_PROFILE", "DESIGN_STUDIO_SETTINGS_FILE"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    ids = s.models()
    assert ids.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert ids.controlnet == "lllyasviel/sd-controlnet-canny"
    assert (ids.ip_adapter, ids.ip_adapter_subfolder, ids.ip_adapter_weight) == (
        "h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors")  # fmt: skip
    assert ids.ip_adapter_image_encoder == "models/image_encoder"
    assert ids.clip == "openai/clip-vit-base-patch32"
    assert Settings(device="cpu", dtype="auto").resolve_dtype("cuda") == torch.float16
