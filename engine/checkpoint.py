"""SD 1.5 checkpoints as designers share them: ONE `.safetensors` file in the original (LDM / CompVis / A1111) key
layout, loaded through diffusers' own `from_single_file`, offline.

The key mapping is the inverse of diffusers' `convert_ldm_*_checkpoint` (diffusers/loaders/single_file_utils.py),
with block indices derived from the folder's config instead of the 4 blocks × 2 layers that diffusers'
`scripts/convert_diffusers_to_original_stable_diffusion.py` hard-codes: so the tiny profile round-trips exactly as
the full-size model does. The same mapping, applied to the config's empty (meta) models, tells before loading
whether a file fits the config; diffusers would otherwise leave missing weights on the meta device, or quietly take
a text encoder the file lacks from the config folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import BadInput, ModelUnavailable
from .hub import PICKLE_SUFFIXES

# Where each part lives in the single file (diffusers' LDM_UNET_KEY, LDM_VAE_KEYS[0], LDM_CLIP_PREFIX_TO_REMOVE[0]).
PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}
WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
PERTURB_SCALE = 0.05  # noise std, relative to each tensor's mean magnitude: a different model, still a sane one
FIX_ARCH = "use an SD 1.5 checkpoint (.safetensors, original layout), or the config folder of the family it belongs to"

# ---------------------------------------------------------------------------------------------------------------
# diffusers key → original key


_RESNET = {  # a UNet resnet's modules (update_unet_resnet_ldm_to_diffusers, inverted)
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {"encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.", "quant_conv.",
            "post_quant_conv."}  # fmt: skip


def _resnet(rest: str) -> str:
    module, param = rest.rsplit(".", 1)
    return f"{_RESNET[module]}.{param}"


def unet_key(key: str, config: dict) -> str:
    """A UNet2DConditionModel key's name in `model.diffusion_model.*`. The original numbers the down path's
    layers flat (`input_blocks.0` is conv_in, then each block's layers_per_block layers and its downsampler) and
    the up path likewise (`output_blocks`, layers_per_block + 1 layers per block, the upsampler inside the last)."""
    per = config["layers_per_block"]
    if not isinstance(per, int):
        raise ValueError(f"layers_per_block={per!r}: an SD 1.5 UNet has one count for all blocks")
    with_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        index = 1 + int(m[1]) * (per + 1) + int(m[3])
        return f"input_blocks.{index}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"input_blocks.{index}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (per + 1) + per}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):  # resnet, attention, resnet
        if m[1] == "resnets":
            return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
        return f"middle_block.{2 * int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        index = int(m[1]) * (per + 1) + int(m[3])
        return f"output_blocks.{index}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{index}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        return f"output_blocks.{block * (per + 1) + per}.{2 if with_attention[block] else 1}.conv.{m[2]}"
    for new, old in _UNET_TOP.items():
        if key.startswith(new):
            return old + key.removeprefix(new)
    raise ValueError(f"UNet tensor '{key}' has no place in the SD 1.5 layout")


def vae_key(key: str, config: dict) -> str:
    """An AutoencoderKL key's name in `first_stage_model.*`: the decoder's up blocks count the other way round."""
    last = len(config["up_block_types"]) - 1
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{last - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{last - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if any(key.startswith(top) for top in _VAE_TOP):
        return key
    raise ValueError(f"VAE tensor '{key}' has no place in the SD 1.5 layout")


def text_encoder_key(key: str) -> str:
    """transformers ≥ 5.6 saves CLIPTextModel without its `text_model.` level; the original always has it."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def to_original(state_dicts: dict[str, dict[str, torch.Tensor]], configs: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The three diffusers state dicts ('unet', 'vae', 'text_encoder') as one original-layout state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dicts["unet"].items():
        out[PREFIXES["unet"] + unet_key(key, configs["unet"])] = value
    for key, value in state_dicts["vae"].items():
        new = vae_key(key, configs["vae"])
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original's attention projections are 1×1 convolutions
        out[PREFIXES["vae"] + new] = value
    for key, value in state_dicts["text_encoder"].items():
        out[PREFIXES["text_encoder"] + text_encoder_key(key)] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# writing


def _read_config(folder: Path, part: str) -> dict:
    try:
        return json.loads((folder / part / "config.json").read_text())
    except (OSError, ValueError):
        raise ModelUnavailable(
            f"'{folder}' is not an SD 1.5 model folder: no readable {part}/config.json",
            fix="point at a diffusers-format folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, ...)",
        ) from None


def _perturbed(state_dict: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator("cpu").manual_seed(seed)
    out = {}
    for key in sorted(state_dict):
        value = state_dict[key]
        if value.is_floating_point():
            as32 = value.float()
            noise = torch.randn(as32.shape, generator=gen) * (PERTURB_SCALE * as32.abs().mean())
            value = (as32 + noise).to(value.dtype)
        out[key] = value
    return out


def save_single_file(base_folder: Path, out_path: Path, perturb_seed: int | None = None) -> Path:
    """Write a diffusers-format SD 1.5 folder's UNet, VAE and text encoder as one original-layout `.safetensors`
    file, tensors in their stored dtype. `perturb_seed`: add small seeded noise to the UNet, so the file is a
    different model than the folder (a fine-tune stand-in for tests)."""
    base_folder, out_path = Path(base_folder), Path(out_path)
    if out_path.suffix != ".safetensors":
        raise BadInput(f"'{out_path.name}' does not end in .safetensors", fix="name the checkpoint <name>.safetensors")
    configs, state_dicts = {}, {}
    for part, weights in WEIGHT_FILES.items():
        configs[part] = _read_config(base_folder, part)
        try:
            state_dicts[part] = load_file(str(base_folder / part / weights))
        except (OSError, SafetensorError):
            raise ModelUnavailable(
                f"'{base_folder}' has no readable {part}/{weights}",
                fix="save the model with save_pretrained(..., safe_serialization=True)",
            ) from None
    if perturb_seed is not None:
        state_dicts["unet"] = _perturbed(state_dicts["unet"], perturb_seed)
    weights = {k: v.contiguous() for k, v in to_original(state_dicts, configs).items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_path), metadata={"format": "pt"})
    return out_path


# ---------------------------------------------------------------------------------------------------------------
# reading


def _not_a_checkpoint(path: Path, why: str, fix: str = FIX_ARCH) -> ModelUnavailable:
    return ModelUnavailable(f"'{path.name}' is not an SD 1.5 checkpoint: {why}", fix=fix)


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape. A `.safetensors` header is read without loading any weight; a pickle (only
    on opt-in) has to be loaded, with torch's weights-only unpickler as diffusers does."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (a safe_open handle is no dict)
        except (OSError, SafetensorError) as exc:
            raise _not_a_checkpoint(path, f"not a readable safetensors file ({exc})") from None
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    try:
        checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _not_a_checkpoint(path, f"not a readable checkpoint ({str(exc).splitlines()[0]})") from None
    return {k: tuple(v.shape) for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def expected_shapes(config_folder: Path) -> dict[str, tuple[int, ...]]:
    """The original-layout tensors a checkpoint must hold for the folder's config, with their shapes: the config's
    models built empty on the meta device (no memory, no weights) and mapped like a real save."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = {part: _read_config(config_folder, part) for part in WEIGHT_FILES}
    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config_folder / "text_encoder")),
        }
    original = to_original({part: model.state_dict() for part, model in models.items()}, configs)
    return {k: tuple(v.shape) for k, v in original.items()}


def check_fits(path: Path, config_folder: Path) -> None:
    """Refuse, in one line, a file that is not an SD 1.5 checkpoint of the config's architecture (SDXL, SD 2.x, a
    lone diffusers UNet, another block layout) before diffusers half-loads it."""
    found = _file_shapes(path)
    if any(k.startswith("conditioner.embedders.") for k in found):
        raise _not_a_checkpoint(path, "it is an SDXL checkpoint")
    if any(k.startswith("cond_stage_model.model.") for k in found):
        raise _not_a_checkpoint(path, "it is an SD 2.x checkpoint (OpenCLIP text encoder)")
    names = {"unet": "UNet", "vae": "VAE", "text_encoder": "CLIP text encoder"}
    absent = [
        f"{names[p]} ({prefix}*)" for p, prefix in PREFIXES.items() if not any(k.startswith(prefix) for k in found)
    ]
    if absent:
        raise _not_a_checkpoint(path, "it holds no " + ", no ".join(absent))
    expected = expected_shapes(config_folder)
    missing = [k for k in expected if k not in found]
    if missing:
        raise _not_a_checkpoint(
            path,
            f"it lacks {len(missing)} of the {len(expected)} tensors '{config_folder.name}' needs, e.g. {missing[0]}",
        )

    def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:  # a 1×1 conv and a linear layer hold the same weight
        while shape and shape[-1] == 1:
            shape = shape[:-1]
        return shape

    for key, shape in expected.items():
        if squeezed(found[key]) != squeezed(shape):
            raise _not_a_checkpoint(
                path, f"{key} is {list(found[key])}, '{config_folder.name}' needs {list(shape)} (another architecture)"
            )


def load_single_file(
    path: Path | str,
    config_folder: Path | str,
    controlnet,
    *,
    dtype: torch.dtype,
    pipeline_class=None,
    allow_pickle: bool = False,
):
    """A pipeline (by default StableDiffusionControlNetPipeline) whose UNet, VAE and text encoder come from one
    original-layout checkpoint file, and whose configs, tokenizer, scheduler and feature extractor come from
    `config_folder` (a diffusers-format SD 1.5 folder): nothing is fetched from the hub."""
    path, config_folder = Path(path), Path(config_folder)
    if path.suffix != ".safetensors" and not allow_pickle:
        pickled = path.suffix in PICKLE_SUFFIXES
        raise ModelUnavailable(
            f"'{path.name}' is a pickled checkpoint, which can run code when loaded"
            if pickled
            else f"'{path.name}' is not a .safetensors file",
            fix="convert it to .safetensors, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    if not path.is_file():
        raise ModelUnavailable(  # the file's name only: the message may reach a client, the folder is the engine's
            f"checkpoint '{path.name}' not found on the engine", fix="upload it again, or copy the file back"
        )
    if not (config_folder / "model_index.json").is_file():
        raise ModelUnavailable(
            f"'{config_folder}' is not a diffusers model folder (no model_index.json)",
            fix="point at an SD 1.5 folder such as stable-diffusion-v1-5 (configs, tokenizer, scheduler)",
        )
    check_fits(path, config_folder)

    from diffusers.loaders.single_file_utils import SingleFileComponentError

    if pipeline_class is None:
        from diffusers import StableDiffusionControlNetPipeline as pipeline_class
    try:
        pipe = pipeline_class.from_single_file(
            str(path),
            config=str(config_folder),
            controlnet=controlnet,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=True,
            dtype=dtype,
        )
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as exc:
        raise _not_a_checkpoint(path, str(exc).strip().splitlines()[0]) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe
