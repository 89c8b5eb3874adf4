"""The sidebar's model uploader (issue 32): a LoRA over the engine's 20 MB request limit is added in parts, in Local
and Remote mode alike, and offered at once; the same file again is "already there"; a file of another kind is one
error line."""

from __future__ import annotations

from safetensors.torch import load_file, save

from engine.tiny import save_fast_lora
from tests.pages.conftest import ok

MB = 1_000_000


def padded_lora(tmp_path, tiny_models, mb: int) -> bytes:
    """A LoRA shaped for the tiny UNet, padded in its metadata to `mb` MB."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    tensors = load_file(save_fast_lora(unet, tmp_path / "lora", rank=4, scale=0.5))
    small = len(save(tensors, metadata={"padding": ""}))
    return save(tensors, metadata={"padding": "." * (mb * MB - small)})


def test_a_lora_over_the_request_limit_added_from_the_sidebar(app_env, tmp_path, tiny_models):
    blob = padded_lora(tmp_path, tiny_models, 24)  # over the server's 20 MB request limit
    assert len(blob) > 21 * MB
    at = ok(app_env.app().run())
    at.file_uploader(key="model_upload").set_value(("pine cone.safetensors", blob, "application/octet-stream"))
    at = ok(at.run())
    assert at.sidebar.multiselect(key="loras").options == ["pine cone"]
    assert at.session_state["loras"] == ["pine cone"]  # picked at once
    assert "Added lora **pine cone**" in [c.value for c in at.sidebar.caption]
    kept = app_env.data / "models" / "loras" / "pine cone.safetensors"
    assert kept.read_bytes() == blob
    assert not list((app_env.data / "uploads").iterdir())

    # another file under that name: refused before a byte of it is sent
    at.file_uploader(key="model_upload").set_value(("pine cone.safetensors", b"not a model at all", "text/plain"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [
        "a different lora named 'pine cone' is already on the engine (rename the file)"
    ]
    # a file of another kind: refused at its first part, nothing of it kept
    at.file_uploader(key="model_upload").set_value(("notes.safetensors", b"not a model at all", "text/plain"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [
        "'notes' is not a .safetensors file (export the model as .safetensors)"
    ]
    assert not list((app_env.data / "uploads").iterdir())
    assert at.sidebar.multiselect(key="loras").options == ["pine cone"]
