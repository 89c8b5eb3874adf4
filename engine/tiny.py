"""The tiny profile: random-weight components in the real repos' folder layout, built offline.

Everything is saved with `save_pretrained` / safetensors and loaded back through exactly the
same `from_pretrained` / `load_ip_adapter` calls as the real model ids; only the paths differ.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .hub import quiet_libraries
from .rules.controlnets import CONTROLS, DEFAULT_CONTROL
from .tokenizer import tiny_tokenizer

log = logging.getLogger(__name__)

TINY_VERSION = 10
MARKER = "tiny-profile.json"
CROSS_DIM = 32
IMAGE_EMBED_DIM = 32


def _token_ids(tok) -> dict[str, int]:
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def random_ip_adapter_weights(unet, image_embed_dim: int, num_tokens: int = 4) -> dict[str, torch.Tensor]:
    """IP-Adapter weights shaped for `unet`, keyed as h94/IP-Adapter's ip-adapter_sd15.safetensors."""
    cad = unet.config.cross_attention_dim
    channels = list(unet.config.block_out_channels)
    sd: dict[str, torch.Tensor] = {
        "image_proj.proj.weight": torch.randn(num_tokens * cad, image_embed_dim) * 0.02,
        "image_proj.proj.bias": torch.zeros(num_tokens * cad),
        "image_proj.norm.weight": torch.ones(cad),
        "image_proj.norm.bias": torch.zeros(cad),
    }
    key_id = 1  # the real checkpoint numbers cross-attention layers 1, 3, 5, ...
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        sd[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cad) * 0.02
        sd[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cad) * 0.02
        key_id += 2
    return sd


def save_ip_adapter(unet, image_encoder, root: Path, image_embed_dim: int, dtype=torch.float32) -> None:
    """h94/IP-Adapter layout: models/ip-adapter_sd15.safetensors + models/image_encoder/."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype).contiguous() for k, v in random_ip_adapter_weights(unet, image_embed_dim).items()}
    save_file(weights, str(models / "ip-adapter_sd15.safetensors"))
    image_encoder.save_pretrained(models / "image_encoder", safe_serialization=True)


# The modules latent-consistency/lcm-lora-sdv1-5 adapts (its adapter_config / kohya keys): attention, feed-forward,
# the resnets' convolutions and time projections, and the resamplers.
LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip
LORA_FILE = "pytorch_lora_weights.safetensors"


def save_fast_lora(unet, folder: Path, rank: int, dtype=torch.float32, scale: float = 0.02) -> Path:
    """A random-weight few-step LoRA for `unet` in diffusers' format (`unet.<module>.lora_A/B.weight`), shaped as
    LCM-LoRA SD1.5 is (rank 64 on the full-size UNet): loaded by `load_lora_weights` exactly as the real one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(2)
    weights: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in LORA_TARGETS) or "processor" in name:
            continue
        if isinstance(module, torch.nn.Linear):
            a = torch.randn(rank, module.in_features, generator=gen) * scale
            b = torch.randn(module.out_features, rank, generator=gen) * scale
        elif isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            a = torch.randn(rank, module.in_channels, kh, kw, generator=gen) * scale
            b = torch.randn(module.out_channels, rank, 1, 1, generator=gen) * scale
        else:
            continue
        weights[f"unet.{name}.lora_A.weight"] = a.to(dtype).contiguous()
        weights[f"unet.{name}.lora_B.weight"] = b.to(dtype).contiguous()
    path = folder / LORA_FILE
    save_file(weights, str(path), metadata={"format": "pt"})
    return path


def save_taesd(folder: Path, config: dict, dtype=torch.float32, device: str = "cpu") -> None:
    """The tiny autoencoder (madebyollin/taesd's layout: one AutoencoderTiny folder) with random weights."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(3)
    with torch.device(device):
        AutoencoderTiny(**config).to(dtype).save_pretrained(folder, safe_serialization=True)


def build_fast_parts(target: Path, spec: dict, dtype=torch.float32, device: str = "cpu", unet=None) -> None:
    """The few-step modes' parts: the LoRA (shaped for the spec's UNet) and the tiny autoencoder."""
    if unet is None:
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):  # only the module names and shapes are needed
            unet = UNet2DConditionModel(**spec["unet"])
    save_fast_lora(unet, target / "lcm-lora-sdv1-5", spec.get("fast_lora", {}).get("rank", 64), dtype)
    save_taesd(target / "taesd", spec.get("taesd", {}), dtype, device)


# The tiny profile in the same shape as configs/full-size.json. Attention sits at 1/2 of the latent
# resolution (cheap on a CPU) and `up_blocks.1` is the first cross-attention up block, the style
# block, as in SD1.5.
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 4,
}
TINY_SPEC: dict = {
    "unet": {
        "block_out_channels": [4, 8, 8],
        "layers_per_block": 1,
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": CROSS_DIM,
        "attention_head_dim": 2,
        "norm_num_groups": 1,
    },
    "controlnet": {
        "block_out_channels": [4, 8, 8],
        "layers_per_block": 1,
        "in_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "cross_attention_dim": CROSS_DIM,
        # three stride-2 stages: the control image is downsampled 8×, like the real VAE's latents
        "conditioning_embedding_out_channels": [8, 8, 8, 8],
        "attention_head_dim": 2,
        "norm_num_groups": 1,
    },
    # Four blocks give the real 8× latent scale, so a 512² image means 64² latents here too
    # (at 2× the UNet's self-attention would see 65k tokens and crawl).
    "vae": {
        "block_out_channels": [4, 8, 8, 8],
        "layers_per_block": 1,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4,
        "norm_num_groups": 2,
    },
    "text_encoder": {
        "hidden_size": CROSS_DIM,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 5,
        "max_position_embeddings": 77,
    },
    "image_encoder": {**TINY_VISION, "projection_dim": IMAGE_EMBED_DIM},
    "feature_extractor": {"size": 32, "crop_size": 32},
    "fast_lora": {"rank": 4},
    "taesd": {
        "encoder_block_out_channels": [8, 8, 8, 8],
        "decoder_block_out_channels": [8, 8, 8, 8],
        "num_encoder_blocks": [1, 1, 1, 1],
        "num_decoder_blocks": [1, 1, 1, 1],
    },
    "scheduler": {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "steps_offset": 1,
    },
    "clip": {
        "projection_dim": 32,
        "text": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 5, "num_attention_heads": 4},
        "vision": TINY_VISION,
    },
}
# Depth Anything V2 (depth-anything/Depth-Anything-V2-Small-hf's architecture: a DINOv2 backbone, a DPT neck and a
# relative-depth head) at toy width, fed 56-pixel images instead of 518
TINY_DEPTH: dict = {
    "backbone": {
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "patch_size": 14,
        "image_size": 56,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
        "reshape_hidden_states": False,
    },
    "reassemble_hidden_size": 32,
    "patch_size": 14,
    "neck_hidden_sizes": [8, 16, 32, 32],
    "fusion_hidden_size": 16,
    "head_hidden_size": 8,
    "depth_estimation_type": "relative",
    "image_size": 56,  # the processor's: the short side the estimator sees, in multiples of the patch
}
FULL_SIZE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "full-size.json"


def full_size_spec() -> dict:
    return json.loads(FULL_SIZE_CONFIG.read_text())


def _trained_like(controlnet):
    """A fresh ControlNet's output convs are zero, so it changes nothing and its scale is a no-op; a trained
    one's are not. Give them small random weights (as diffusers' multi-ControlNet fast tests do) so the
    tiny profile reacts to the sketch and to structure strength as the real model does."""
    blocks = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in blocks:
            torch.nn.init.normal_(conv.weight, std=0.05)
            conv.bias.fill_(0.01)
    return controlnet


def _seeded(build: Callable[[], Any], seed: int, dtype, device: str):
    """`build()` right after seeding torch's generator with `seed`, on `device` (full-size random init is much faster
    on a GPU), in `dtype`: a part's weights depend on its seed alone, not on what was built before it."""
    torch.manual_seed(seed)
    with torch.device(device):
        return build().to(dtype)


def sd15_builders(
    spec: dict, tokenizer, seed: int = 0, dtype=torch.float32, device: str = "cpu"
) -> dict[str, Callable[[], Any]]:
    """How each random-weight SD 1.5 model of `spec` is made (unet, vae, text_encoder, the default ControlNet,
    image_encoder), each under `seed`: the tiny profile saves what they build, the unit tests keep it in memory."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    text = {"vocab_size": len(tokenizer), **spec["text_encoder"], **_token_ids(tokenizer)}
    builds: dict[str, Callable[[], Any]] = {
        "unet": lambda: UNet2DConditionModel(**spec["unet"]),
        "vae": lambda: AutoencoderKL(**spec["vae"]),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**text)),
        "controlnet": lambda: _trained_like(ControlNetModel(**spec["controlnet"])),
        "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**spec["image_encoder"])),
    }
    return {name: partial(_seeded, build, seed, dtype, device) for name, build in builds.items()}


def feature_extractor(spec: dict):
    """The image processor the IP-Adapter's image encoder (and the retrieval CLIP) is fed by."""
    from transformers import CLIPImageProcessor

    fe = spec["feature_extractor"]
    return CLIPImageProcessor(
        size={"shortest_edge": fe["size"]}, crop_size={"height": fe["crop_size"], "width": fe["crop_size"]}
    )


def build_clip(spec: dict, tokenizer, seed: int = 1):
    """The retrieval CLIP of `spec` (openai/clip-vit-base-patch32's architecture), random weights under `seed`."""
    from transformers import CLIPConfig, CLIPModel

    c = spec["clip"]
    torch.manual_seed(seed)
    return CLIPModel(
        CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "max_position_embeddings": 77,
                **c["text"],
                **_token_ids(tokenizer),
            },
            vision_config=c["vision"],
            projection_dim=c["projection_dim"],
        )
    )


def build_components(spec: dict = TINY_SPEC, seed: int = 0) -> dict[str, Any]:
    """The SD 1.5 + ControlNet + IP-Adapter parts of `spec`, in memory and written nowhere, fp32 on the CPU, as
    diffusers' pipeline tests make theirs (`get_dummy_components`): unet, controlnet, vae, text_encoder, tokenizer,
    scheduler, feature_extractor, image_encoder and ip_adapter (the IP-Adapter's weights as h94's file keys them).
    Under seed 0 every weight is the tiny profile's own (the same builders and seeds write it)."""
    from diffusers import PNDMScheduler

    from .tokenizer import memory_tokenizer

    quiet_libraries()
    tokenizer = memory_tokenizer()
    parts: dict[str, Any] = {name: build() for name, build in sd15_builders(spec, tokenizer, seed).items()}
    torch.manual_seed(seed)
    parts["ip_adapter"] = random_ip_adapter_weights(parts["unet"], spec["image_encoder"]["projection_dim"])
    # The scheduler as the profile's pipeline loads it: every setting explicit. A fresh one marks the settings it took
    # by default, and a scheduler made from its config (the Generator's UniPC) would drop them and take its own
    # defaults (UniPC: "linspace" timesteps instead of "leading"): other pixels.
    fresh = PNDMScheduler(**spec["scheduler"]).config
    scheduler = PNDMScheduler.from_config({k: v for k, v in fresh.items() if k != "_use_default_values"})
    parts.update(tokenizer=tokenizer, scheduler=scheduler, feature_extractor=feature_extractor(spec))
    return parts


def build_profile(target: Path, spec: dict, dtype=torch.float32, clip: bool = True, device: str = "cpu") -> None:
    """Random-weight models from `spec`, saved where the real repos keep them (built on `device`)."""
    from diffusers import ControlNetModel, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPProcessor

    quiet_libraries()
    target.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(target / "_tokenizer")
    fe = feature_extractor(spec)
    build = sd15_builders(spec, tok, 0, dtype, device)
    unet = build["unet"]()
    sd = StableDiffusionPipeline(
        vae=build["vae"](),
        text_encoder=build["text_encoder"](),
        tokenizer=tok,
        unet=unet,
        scheduler=PNDMScheduler(**spec["scheduler"]),
        safety_checker=None,
        feature_extractor=fe,
        image_encoder=None,
        requires_safety_checker=False,
    )
    sd.save_pretrained(target / "stable-diffusion-v1-5", safe_serialization=True)
    del sd
    build_fast_parts(target, spec, dtype, device, unet)
    build["controlnet"]().save_pretrained(target / CONTROLS[DEFAULT_CONTROL].tiny_folder, safe_serialization=True)
    # the registry's other ControlNets: the same architecture, each its own random weights
    others = [c for c in CONTROLS.values() if c.name != DEFAULT_CONTROL]
    for i, control in enumerate(others, start=1):
        controlnet = _seeded(lambda: _trained_like(ControlNetModel(**spec["controlnet"])), 100 + i, dtype, device)
        controlnet.save_pretrained(target / control.tiny_folder, safe_serialization=True)
    image_encoder = build["image_encoder"]()
    torch.manual_seed(0)
    save_ip_adapter(unet, image_encoder, target / "IP-Adapter", spec["image_encoder"]["projection_dim"], dtype)

    if clip:  # retrieval CLIP in openai/clip-vit-base-patch32's layout: model + tokenizer + processor
        clip_dir = target / "clip-vit-base-patch32"
        build_clip(spec, tok).save_pretrained(clip_dir, safe_serialization=True)
        CLIPProcessor(image_processor=fe, tokenizer=tok).save_pretrained(clip_dir)
    shutil.rmtree(target / "_tokenizer")


def depth_components(spec: dict = TINY_DEPTH, seed: int = 4):
    """A random-weight Depth Anything V2 of `spec` and its image processor, in memory (the unit tests' depth
    estimator; under the default seed the tiny profile's own weights)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    head = {k: v for k, v in spec.items() if k not in ("backbone", "image_size")}
    config = DepthAnythingConfig(backbone_config=Dinov2Config(**spec["backbone"]), **head)
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    side = spec["image_size"]
    processor = DPTImageProcessor(  # Depth-Anything-V2-Small-hf's preprocessor_config.json, at the tiny size
        do_resize=True, size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_rescale=True, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225], do_pad=False,
    )  # fmt: skip
    return model, processor


def build_tiny_depth(folder: Path, spec: dict = TINY_DEPTH, seed: int = 4) -> Path:
    """A random-weight Depth Anything V2 in the hub repo's layout (config.json, model.safetensors,
    preprocessor_config.json), loaded by `AutoModelForDepthEstimation` / `AutoImageProcessor.from_pretrained` as the
    real one (engine/models.py `load_depth`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = depth_components(spec, seed)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def build_tiny_upscaler(root: Path) -> Path:
    """The tiny profile's upscaler: a random-weight RRDBNet ×4 (8 filters, 1 block) in RealESRGAN_x4plus's key
    layout, as safetensors, where `Settings.upscaler_paths` looks for it. Built with the profile."""
    from .settings import TINY_UPSCALER
    from .upscaler import save_tiny_upscaler

    path = Path(root) / "real-esrgan" / TINY_UPSCALER
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        save_tiny_upscaler(tmp)
        tmp.replace(path)
    return path


def is_built(root: Path) -> bool:
    marker = root / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("version") == TINY_VERSION
    except (OSError, ValueError):
        return False


def prepare_tiny(root: Path, force: bool = False) -> Path:
    """Build the tiny profile into `root` once (atomically: a half-built folder never counts)."""
    root = Path(root)
    if is_built(root) and not force:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root.parent))
    try:
        build_profile(tmp, TINY_SPEC)
        # the catalog's models, in the layout of Helsinki-NLP/opus-mt-de-en and microsoft/Phi-3-mini-4k-instruct
        from .catalog.llm import build_tiny_causal_lm
        from .catalog.translate import build_tiny_marian

        build_tiny_marian(tmp / "opus-mt-de-en")
        build_tiny_flux(tmp / "FLUX.1-schnell")
        build_tiny_flux_lora(tmp / "flux-lora", TINY_FLUX_SPEC["transformer"])
        build_tiny_causal_lm(tmp / "Phi-3-mini-4k-instruct")
        from .regions import build_tiny_sam2

        build_tiny_sam2(tmp / "sam2.1-hiera-tiny")
        build_tiny_depth(tmp / "Depth-Anything-V2-Small-hf")

        build_tiny_upscaler(tmp)
        (tmp / MARKER).write_text(json.dumps({"version": TINY_VERSION}))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("tiny profile written to %s", root)
    return root


# ---- FLUX.1-schnell -----------------------------------------------------------------------------------------------
_T5_CORPUS = (
    "studio product photo of a red cotton t-shirt with crew neck, white background",
    "black leather jacket for men, soft light, high detail",
    "blue jeans with straight leg, folded, flat lay",
    "white linen shirt, long-sleeved, on a hanger",
    "green knitted sweater with cable pattern, close-up of the fabric",
    "yellow summer dress with floral print, full body, model standing",
    "dark grey wool hat for winter, product shot",
    "brown boots made of genuine leather, side view",
    "lightweight running shoes for women, 3/4 view",
    "pink cashmere scarf; waterproof rain jacket with zipper & hood",
    "slim silk tie, gold buckles, size XL (EU 42-44): 49.99 EUR",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789",
    'a photo of a cat. "quoted" text, 100% cotton! what? #tag @home + = * _ [ ] { } < > / \\ | ~ ^ `',
)

# Shapes: the real model's structure at toy width. The VAE keeps the real 8× downsampling (4 blocks), so sizes
# round to 16 px as with FLUX.1; the transformer takes 2×2-packed latents (in_channels = 4 × latent channels),
# T5's width is the transformer's joint_attention_dim and CLIP's the pooled_projection_dim, as in the real one.
TINY_FLUX_SPEC: dict = {
    "transformer": {
        "patch_size": 1,
        "in_channels": 16,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "guidance_embeds": False,  # schnell (dev has a guidance embedding)
        "axes_dims_rope": (4, 6, 6),  # sums to attention_head_dim, like (16, 56, 56) for 128
    },
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [4, 8, 8, 8],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 2,
        "sample_size": 64,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "shift_factor": 0.1159,
        "scaling_factor": 0.3611,
    },
    "text_encoder": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "projection_dim": 32,
    },
    "text_encoder_2": {
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "gated-gelu",  # T5 v1.1, as google/t5-v1_1-xxl
        "tie_word_embeddings": False,
    },
    # FLUX.1-schnell's scheduler_config.json (dev: use_dynamic_shifting true, shift 3.0)
    "scheduler": {
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    },
}


def _tiny_t5_tokenizer(folder: Path):
    """A T5 tokenizer from a SentencePiece unigram model trained on `_T5_CORPUS`, with T5's ids
    (<pad>=0, </s>=1, <unk>=2, no <s>); writes spiece.model into `folder` as the real repo has it."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_T5_CORPUS),
        model_writer=buf,
        model_type="unigram",
        vocab_size=200,
        hard_vocab_limit=False,  # a small corpus may offer fewer pieces than asked for
        character_coverage=1.0,
        normalization_rule_name="identity",  # as the tokenizer.json built below: no normalizer
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    proto = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = [(sp.IdToPiece(i), sp.GetScore(i)) for i in range(sp.GetPieceSize())]
    # transformers 5: T5TokenizerFast is T5Tokenizer, built from (piece, score) pairs rather than the .model file.
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def build_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """A random-weight FLUX.1-schnell in the hub repo's layout, built offline in about a second, loadable by
    `FluxPipeline.from_pretrained(folder)` (i.e. `load_flux(folder, ...)`).

    Writes model_index.json and scheduler/ (scheduler_config.json), transformer/ and vae/ (config.json +
    diffusion_pytorch_model.safetensors), text_encoder/ (CLIPTextModel) and text_encoder_2/ (T5EncoderModel)
    (config.json + model.safetensors), tokenizer/ (CLIPTokenizer: tokenizer.json, tokenizer_config.json) and
    tokenizer_2/ (T5TokenizerFast: spiece.model, tokenizer.json, tokenizer_config.json). transformers 5 saves
    tokenizers as tokenizer.json only, so model_index.json names T5Tokenizer (T5TokenizerFast is its alias).
    """
    import tempfile

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    quiet_libraries()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = TINY_FLUX_SPEC

    def seeded(build):
        torch.manual_seed(seed)
        return build().eval()

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(Path(tmp) / "clip")  # CLIP's byte-level BPE vocabulary, characters only
        tokenizer_2 = _tiny_t5_tokenizer(folder / "tokenizer_2")
    text_encoder = seeded(
        lambda: CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **spec["text_encoder"],
            )
        )
    )
    text_encoder_2 = seeded(
        lambda: T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
                **spec["text_encoder_2"],
            )
        )
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**spec["scheduler"]),
        vae=seeded(lambda: AutoencoderKL(**spec["vae"])),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=seeded(lambda: FluxTransformer2DModel(**spec["transformer"])),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _lora_targets(transformer_config: Mapping) -> dict[str, tuple[int, int]]:
    """Attention projections of the first double- and single-stream blocks: module name → (in, out)."""
    inner = transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"]
    names = [f"transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v", "add_q_proj", "add_v_proj")]
    if transformer_config["num_single_layers"]:
        names += [f"single_transformer_blocks.0.attn.{p}" for p in ("to_q", "to_v")]
    return {name: (inner, inner) for name in names}


def build_tiny_flux_lora(folder: Path, transformer_config: Mapping, rank: int = 4, seed: int = 0) -> Path:
    """A random LoRA for the tiny transformer (`pipe.transformer.config`), in diffusers' LoRA format:
    `folder/pytorch_lora_weights.safetensors` with `transformer.<module>.lora_A.weight` (rank × in) and
    `lora_B.weight` (out × rank) for a few attention projections. Both are random (a trained LoRA's B is not
    zero), so the LoRA changes the pixels. Returns the file's path. Writing it needs no peft; loading it does.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in _lora_targets(transformer_config).items():
        weights[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) * 0.2
        weights[f"transformer.{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) * 0.2
    path = folder / LORA_FILE
    save_file(weights, str(path), metadata={"format": "pt"})
    return path
