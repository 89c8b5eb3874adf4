"""The designer's models on the engine against careless or hostile callers (issue 30, findings 6, 13, 15, 17):
parallel uploads under one name store one whole file, a FLUX LoRA on SD 1.5 is one line, not-found errors name no
engine folder, and a checkpoint name never makes the engine fetch a repository or open a folder it was not given."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save

from engine.errors import BadInput, ModelUnavailable, NotFound
from engine.models import hub_checkpoint
from engine.settings import Settings
from tests.conftest import at_once, make_data_dir, make_engine
from tests.engine.test_measure_later import request


@pytest.fixture(scope="module")
def eng(tmp_path_factory, tiny_models):
    engine = make_engine(make_data_dir(tmp_path_factory.mktemp("stores-models"), tiny_models, warm=True))
    yield engine
    engine.close()


def lora_bytes(seed: int, keys: tuple[str, ...] = ("unet.down_blocks.0.attentions.0.proj_in",)) -> bytes:
    """A small LoRA file in diffusers' key layout (different bytes per seed)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for k in keys:
        tensors[f"{k}.lora_A.weight"] = torch.randn(4, 32, generator=gen)
        tensors[f"{k}.lora_B.weight"] = torch.randn(32, 4, generator=gen)
    return save(tensors)


def loras(engine) -> list[str]:
    return [m["name"] for m in engine.renders.models()["loras"]]


def test_parallel_uploads_of_different_files_under_one_name_store_the_one_reported_added(eng):
    for round_ in range(3):
        name = f"oak {round_}"
        blobs = [lora_bytes(100 * round_ + i) for i in range(8)]
        got = at_once([lambda b=b, name=name: eng.renders.add_model("lora", name, b) for b in blobs])
        added = [i for i, g in enumerate(got) if isinstance(g, dict) and g["added"]]
        assert len(added) == 1, got
        refused = [g for g in got if isinstance(g, Exception)]
        assert len(refused) == 7 and all(isinstance(e, BadInput) for e in refused), refused
        assert all(f"a different lora named '{name}' is already on the engine" in str(e) for e in refused)
        # the file kept is the one reported added: it again is the same file, the others are not
        assert eng.renders.add_model("lora", name, blobs[added[0]])["added"] is False
        with pytest.raises(BadInput, match="a different lora"):
            eng.renders.add_model("lora", name, blobs[(added[0] + 1) % len(blobs)])
    # no temporary file left in the models folder of the data folder the test gave
    assert not [p.name for p in (eng.settings.models_dir / "loras").iterdir() if p.suffix != ".safetensors"]


def test_parallel_uploads_of_the_same_file_add_it_once(eng):
    blob = lora_bytes(7)
    got = at_once([lambda: eng.renders.add_model("lora", "walnut twin", blob) for _ in range(8)])
    assert sorted(g["added"] for g in got) == [False] * 7 + [True]
    assert eng.renders.add_model("lora", "walnut twin", blob)["added"] is False  # kept: the same file again
    assert "walnut twin" in loras(eng)


FLUX_KEYS = {
    "diffusers": ("transformer.single_transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_k"),
    "kohya": ("lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"),
}


@pytest.mark.parametrize("layout", sorted(FLUX_KEYS))
def test_a_flux_lora_on_sd15_fails_the_job_in_one_line(eng, layout):
    keys = FLUX_KEYS[layout]
    blob = save(
        {f"{k}.{part}.weight": torch.zeros(4, 4) for k in keys for part in ("lora_A", "lora_B")}
        if layout == "diffusers"
        else {f"{k}.{part}.weight": torch.zeros(4, 4) for k in keys for part in ("lora_down", "lora_up")}
    )
    assert eng.renders.add_model("lora", f"flux style {layout}", blob)["added"]
    job = eng.renders.submit(request(loras=[{"name": f"flux style {layout}"}]))
    with pytest.raises(ModelUnavailable) as err:
        eng.follow(job)
    line = str(err.value)
    assert line.startswith(f"LoRA 'flux style {layout}' is a FLUX LoRA; it does not fit this SD 1.5 model"), line
    assert "internal error" not in line and "\n" not in line
    assert eng.jobs.get(job.id).error_kind == "ModelUnavailable"
    assert eng.follow(eng.renders.submit(request())).state == "done"  # and the engine renders on


def test_not_found_models_name_no_engine_folder(eng):
    root = str(eng.settings.data_dir)
    for kw, said in (
        ({"loras": [{"name": "teak"}]}, "no lora 'teak' on the engine"),
        ({"checkpoint": "dreamy"}, "no checkpoint 'dreamy' on the engine"),
    ):
        with pytest.raises(NotFound) as err:
            eng.renders.submit(request(**kw))
        line = str(err.value)
        assert said in line and root not in line and "in the engine's models folder" in line and "\n" not in line
    with pytest.raises(BadInput) as err:
        eng.renders.add_model("lora", "big", b"x" * (eng.settings.max_model_bytes + 1))
    assert root not in str(err.value)


def test_a_hub_id_a_request_names_is_refused_before_anything_loads(eng):
    for name in ("someone/some-model", "stable-diffusion-v1-5/stable-diffusion-v1-5"):  # tiny profile: no hub ids
        with pytest.raises(BadInput) as err:
            eng.renders.submit(request(checkpoint=name))
        assert str(err.value).startswith(f"checkpoint '{name}' is not one this engine offers")
        assert "DESIGN_STUDIO_ALLOWED_MODELS" in str(err.value) and "\n" not in str(err.value)
    assert eng.capabilities().loaded["checkpoint"] is False


def test_a_relative_folder_named_by_a_request_is_never_opened(eng, tiny_models, tmp_path, monkeypatch):
    """An SD 1.5 folder at ./a/b in the engine's working directory: naming `a/b` neither loads it at submit nor, were
    the id allowed, at load (it is looked up in the hub cache only)."""
    shutil.copytree(tiny_models / "stable-diffusion-v1-5", tmp_path / "a" / "b")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="is not one this engine offers"):
        eng.renders.submit(request(checkpoint="a/b"))
    assert eng.capabilities().loaded["checkpoint"] is False
    allowed = Settings(profile="tiny", data_dir=tmp_path / "data", allowed_models="a/b")
    assert "a/b" in allowed.allowed_checkpoints()
    with pytest.raises(ModelUnavailable, match="'a/b' is not in this engine's model cache") as err:
        hub_checkpoint(allowed, "a/b")
    assert "DESIGN_STUDIO_ALLOW_MODEL_DOWNLOADS" in str(err.value)
    with pytest.raises(ModelUnavailable, match="is not one this engine offers"):
        hub_checkpoint(Settings(profile="tiny", data_dir=tmp_path / "data"), "a/b")


def test_the_allow_list_is_the_base_model_and_what_the_operator_adds(monkeypatch, tmp_path):
    monkeypatch.setenv("DESIGN_STUDIO_ALLOWED_MODELS", " owner/model-a , owner/model-b,not a hub id,")
    settings = Settings(data_dir=tmp_path)
    assert settings.allowed_checkpoints() == {settings.base_model, "owner/model-a", "owner/model-b"}
    assert settings.allow_model_downloads is False
    assert Settings(profile="tiny", data_dir=tmp_path).allowed_checkpoints() == {"owner/model-a", "owner/model-b"}


def test_an_allowed_hub_id_resolves_as_itself_and_others_in_one_line(tmp_path):
    from engine.model_files import ModelFiles

    files = ModelFiles(tmp_path / "models", 1 << 20, allowed={"owner/model-a"})
    assert files.resolve("checkpoint", "owner/model-a") == "owner/model-a"
    with pytest.raises(BadInput, match="'owner/model-b' is not one this engine offers"):
        files.resolve("checkpoint", "owner/model-b")
    with pytest.raises(BadInput, match="characters that are not allowed"):  # a LoRA is never a hub id
        files.resolve("lora", "owner/model-a")


def test_a_safetensors_file_cut_short_is_refused_at_upload(fresh_engine):
    """Issue 30 review (held-out probe 6d): a LoRA whose header is whole but whose tensors are cut short was stored and
    reported added, then failed every render. It is refused at upload, in one line, and nothing is stored."""
    from tools.fuzz_hooks import lora_bytes

    whole = lora_bytes(2, 7)
    with pytest.raises(BadInput, match="is not a whole .safetensors file"):
        fresh_engine.renders.add_model("lora", "half", whole[: len(whole) // 2])
    assert "half" not in loras(fresh_engine)
    assert not (fresh_engine.settings.models_dir / "loras" / "half.safetensors").exists()
    assert fresh_engine.renders.add_model("lora", "whole", whole)["added"] is True


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", "a\\b"])
def test_a_model_name_with_a_folder_in_it_is_refused_not_cut_short(fresh_engine, name):
    """A name is a plain name: one naming a folder is refused in one line, never stored under its last part."""
    from tools.fuzz_hooks import lora_bytes

    with pytest.raises(BadInput, match="has characters that are not allowed"):
        fresh_engine.renders.add_model("lora", name, lora_bytes(1, 3))
    assert loras(fresh_engine) == []
