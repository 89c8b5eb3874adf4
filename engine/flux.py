"""FLUX.1 text-to-image: load a FLUX pipeline by model id (optionally with a LoRA) and render with the same
`Params` / `Output` as the SD 1.5 generator; plus a tiny random-weight FLUX.1-schnell, built offline, for tests.

FLUX.1-schnell is distilled for ~4 steps with guidance 0; the caller picks both. It takes no sketch and no style
reference here: sketch-guided and style-referenced renders stay on SD 1.5, the default model.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .errors import BadInput, Busy, Cancelled, ModelUnavailable
from .generator import Output, Params, StepClock
from .hub import PICKLE_SUFFIXES, quiet_libraries, safetensors_kw, unavailable
from .render.capabilities import TEXT_ONLY
from .schema import Progress

log = logging.getLogger(__name__)

DEFAULT_FLUX_MODEL = "black-forest-labs/FLUX.1-schnell"
DEFAULT_FLUX_LORA = "aihpi/flux-fashion-lora"
MODEL_SETTING = "DESIGN_STUDIO_FLUX_MODEL"
LORA_SETTING = "DESIGN_STUDIO_FLUX_LORA"
# FLUX.1-schnell was distilled with 256 T5 tokens (dev: 512); the T5 prompt is always padded to this length.
SCHNELL_MAX_SEQUENCE_LENGTH = 256
LORA_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' own LoRA loader looks for first


def _settings_for(settings, allow_pickle: bool):
    from .settings import Settings

    # Without settings, the fixes name the hub download (not the tiny profile's prepare step).
    base = settings if settings is not None else Settings(profile="default")
    return base.model_copy(update={"allow_pickle": allow_pickle})


def _one_line(exc: Exception, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _resolve_lora(lora: str, settings) -> tuple[str, str | None]:
    """(folder or hub id, weight file name or None), refusing what cannot load before the base model is loaded."""
    from diffusers.utils import USE_PEFT_BACKEND
    from diffusers.utils.constants import MIN_PEFT_VERSION
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    if lora.endswith(PICKLE_SUFFIXES) and not settings.allow_pickle:
        raise ModelUnavailable(
            f"LoRA '{lora}' is a pickled checkpoint, which can run code when loaded",
            fix="use a .safetensors LoRA, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    if not USE_PEFT_BACKEND:  # diffusers applies LoRAs through peft; without it load_lora_weights is a ValueError
        raise ModelUnavailable(
            f"loading the LoRA '{lora}' needs the peft package",
            fix=f"pip install -U peft (diffusers needs peft {MIN_PEFT_VERSION} or newer)",
        )
    path = Path(lora).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), None
    try:
        # Offline, diffusers cannot guess the weight file of a hub id ("you must specify a `weight_name`"),
        # but it can pick it from the cached snapshot's folder.
        return snapshot_download(lora, local_files_only=True), None
    except HFValidationError as exc:  # neither a local path nor a hub id
        raise unavailable(lora, LORA_SETTING, settings, exc) from None
    except OSError as exc:
        if constants.HF_HUB_OFFLINE:
            raise unavailable(lora, LORA_SETTING, settings, exc) from None
        return lora, None  # not cached yet: diffusers downloads it


def load_flux(model_id: str, lora: str | None, device: str, dtype, allow_pickle: bool = False, settings=None):
    """A `diffusers.FluxPipeline` from `model_id` (hub id or folder), with the LoRA `lora` (hub id, folder or
    .safetensors file) applied when given, on `device` in `dtype`, progress bar off.

    `allow_pickle` decides whether pickled weights (.bin/.pt) may load; `settings` only shapes the fix in error
    messages (default profile when None). Every failure is a one-line `ModelUnavailable` (or `Busy` when the
    GPU cannot hold the model).
    """
    from diffusers import FluxPipeline
    from safetensors import SafetensorError

    quiet_libraries()
    model_id, lora = str(model_id), str(lora) if lora else None
    cfg = _settings_for(settings, allow_pickle)
    source = _resolve_lora(lora, cfg) if lora else None
    kw = safetensors_kw(cfg)
    try:
        pipe = FluxPipeline.from_pretrained(model_id, dtype=dtype, **kw)
    except (OSError, ValueError) as exc:
        raise unavailable(model_id, MODEL_SETTING, cfg, exc) from None
    if source is not None:
        where, weight_name = source
        try:
            pipe.load_lora_weights(where, weight_name=weight_name, **kw)
        except (OSError, SafetensorError) as exc:
            raise unavailable(lora, LORA_SETTING, cfg, exc) from None
        except ValueError as exc:
            log.debug("applying the LoRA %s failed", lora, exc_info=exc)
            raise ModelUnavailable(
                f"LoRA '{lora}' does not fit the FLUX model '{model_id}': {_one_line(exc)}",
                fix=f"use a LoRA trained for this FLUX model, or set {LORA_SETTING} to another one",
            ) from None
    try:
        pipe.to(device)
    except torch.cuda.OutOfMemoryError:
        del pipe
        torch.cuda.empty_cache()
        raise Busy(
            f"the GPU cannot hold the FLUX model '{model_id}' in {str(dtype).removeprefix('torch.')}",
            fix="use the SD 1.5 model on this GPU, or close other GPU programs (FLUX.1 needs about 34 GB in bf16)",
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


class FluxGenerator:
    """Text-to-image with a loaded `FluxPipeline`; callers serialise through the engine's GPU queue.

    Uses from `Params`: prompt, seeds, width, height, steps and guidance (0.0 for schnell, which has no guidance
    embedding and ignores it; dev embeds it). FLUX reads a negative prompt only with true CFG (off here) and has
    only its flow-matching scheduler, so `negative_prompt` and `scheduler` are ignored; structure/style strengths
    do not apply (no sketch, no references).
    """

    def __init__(self, pipe, max_sequence_length: int = SCHNELL_MAX_SEQUENCE_LENGTH):
        self.pipe = pipe
        self.device = pipe.device
        self.max_sequence_length = max_sequence_length
        # The VAE downsamples by vae_scale_factor and the transformer packs 2×2 latent patches: 16 px for FLUX.1.
        self.multiple = pipe.vae_scale_factor * 2

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) rounded down to multiples of `self.multiple` (16 px for FLUX.1), as FLUX renders them:
        the images come back at that size. Smaller than one multiple is a `BadInput`."""
        m = self.multiple
        if width < m or height < m:
            raise BadInput(f"FLUX needs at least {m}×{m} pixels, got {width}×{height}")
        return width // m * m, height // m * m

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor, width: int, height: int):
        pipe, vae = self.pipe, self.pipe.vae
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")

    def run(
        self,
        p: Params,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Output:
        """`len(p.seeds)` images, one per seed, at `size(p.width, p.height)`; raises `BadInput` for a sketch or
        style references, `Cancelled` when `cancel` is set between steps, `Busy` when the GPU runs out of memory."""
        if p.control is not None or p.references:
            raise BadInput(TEXT_ONLY)
        width, height = self.size(p.width, p.height)
        timings: dict[str, float | list[float]] = {"style_encode": 0.0}
        try:
            clock = StepClock(p.steps, self._sync, on_progress, cancel)
            on_step_end = clock.on_step_end

            latents = self.pipe(
                prompt=p.prompt,
                height=height,
                width=width,
                num_inference_steps=p.steps,
                guidance_scale=p.guidance,
                num_images_per_prompt=len(p.seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in p.seeds],
                max_sequence_length=self.max_sequence_length,
                output_type="latent",
                callback_on_step_end=on_step_end,
            ).images
            timings["denoise"] = time.perf_counter() - clock.start
            timings["steps"] = clock.steps
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {len(clock.steps)} of {p.steps} steps")

            t0 = time.perf_counter()
            images = self._decode(latents, width, height)
            self._sync()
            timings["vae_decode"] = time.perf_counter() - t0
            return Output(images=images, timings=timings)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise Busy(
                f"the GPU ran out of memory for {len(p.seeds)} image(s) at {width}×{height}",
                fix="lower the size or the number of variations, or close other GPU programs",
            ) from None


# ----------------------------------------------------------------------------------------------------------------
# The tiny FLUX: random weights in black-forest-labs/FLUX.1-schnell's layout, loaded by the same from_pretrained.

# Product-photo prompts: the T5 SentencePiece model is trained on these (every letter, digit and common sign).
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

    from .tokenizer import tiny_tokenizer

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
