"""The diffusers call: sketch-guided (ControlNet) or text-only, with IP-Adapter style references."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    LCMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from ..errors import Busy, Cancelled
from ..rules.controlnets import DEFAULT_CONTROL
from ..rules.modes import FAST_ADAPTER, MODES
from ..schema import Progress
from ..style_embeds import StyleEmbeds, encoder_id
from .call import Output, Params

log = logging.getLogger(__name__)

SCHEDULERS = {
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "lcm": LCMScheduler,
    "tcd": TCDScheduler,
}
# A render's task → the diffusers pipeline made for it from the loaded components (`from_pipe`: no second copy)
TASKS = {
    "text": StableDiffusionPipeline,
    "text-img2img": StableDiffusionImg2ImgPipeline,  # a text-only render's hires fix
    "txt2img": StableDiffusionControlNetPipeline,
    "img2img": StableDiffusionControlNetImg2ImgPipeline,
    "inpaint": StableDiffusionControlNetInpaintPipeline,
}
PREVIEW_SIDE = 256  # step previews are decoded at most this size (long side)
PREVIEW_EVERY = 0.4  # seconds between two previews at most
PROMPT_CACHE = 32  # prompt encodings kept (a live canvas re-renders one prompt; a sweep walks a few)


class StepClock:
    """The `callback_on_step_end` every pipeline call uses: time per step (after a device sync), progress
    reports, and cancel between steps (the pipeline stops at its next step)."""

    def __init__(
        self,
        total: int,
        sync: Callable[[], None],
        on_progress=None,
        cancel: threading.Event | None = None,
        previews: Previewer | None = None,
    ):
        self.total, self.sync, self.on_progress, self.cancel = total, sync, on_progress, cancel
        self.steps: list[float] = []
        self.offset = 0  # steps of earlier passes (the hires fix's refine pass counts on from the first)
        self.start = self._last = time.perf_counter()
        self.previews = previews
        self.last: Progress | None = None
        self._report_lock = threading.Lock()
        if previews is not None:
            previews.on_preview = self._preview

    def _report(self, p: Progress) -> None:
        with self._report_lock:
            if self.previews is not None and self.previews.latest is not None:
                p.preview_step, p.preview = self.previews.latest
            self.last = p
            self.on_progress(p)

    def _preview(self) -> None:
        """A preview is ready (on the previewer's thread): the last progress again, with it."""
        if self.last is not None and self.last.step < self.total:
            self._report(replace(self.last))

    def on_step_end(self, pipeline, i, t, kwargs):
        self.sync()
        now = time.perf_counter()
        self.steps.append(now - self._last)
        self._last = now
        if self.on_progress:
            # the first step also pays the prompt encoding and the pipeline's set-up: the rate comes from the rest
            recent = self.steps[1:][-5:]
            per_step = sorted(recent)[len(recent) // 2] if recent else None
            step = self.offset + i + 1
            self._report(Progress("denoise", step, self.total, now - self.start, per_step))
            if self.previews is not None and step < self.total and "latents" in kwargs:
                self.previews.offer(kwargs["latents"], step)
        if self.cancel is not None and self.cancel.is_set():
            pipeline._interrupt = True
        return kwargs


class Previewer:
    """Step previews: the tiny autoencoder decodes the newest latents of the first image, small, as JPEG, on its
    own thread (the render never waits for it; a newer step replaces one not yet decoded; at most one every
    `PREVIEW_EVERY` seconds). `latest` is (step, JPEG bytes)."""

    def __init__(self, taesd):
        self.taesd = taesd
        self.latest: tuple[int, bytes] | None = None
        self.on_preview: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._pending: tuple[torch.Tensor, int] | None = None
        self._busy = False
        self._last_start = 0.0

    def offer(self, latents: torch.Tensor, step: int) -> None:
        with self._lock:
            if time.perf_counter() - self._last_start < PREVIEW_EVERY and self.latest is not None:
                return
            self._pending = (latents[:1].detach().clone(), step)
            if self._busy:
                return
            self._busy = True
            self._last_start = time.perf_counter()
        threading.Thread(target=self._drain, name="step-preview", daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._busy = False
                    return
            try:
                self.latest = (item[1], self.decode(item[0]))
            except Exception:  # a preview is never worth a failed render
                log.exception("step preview failed")
                continue
            if self.on_preview:
                self.on_preview()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> bytes:
        import io

        h, w = latents.shape[-2:]
        scale = PREVIEW_SIDE / (8 * max(h, w))
        if scale < 1:  # decode fewer latents: the preview is small anyway
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            latents = torch.nn.functional.interpolate(latents.float(), size=size, mode="bilinear", antialias=True)
        image = self.taesd.decode(latents.to(self.taesd.dtype), return_dict=False)[0]
        array = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG", quality=75)
        return buf.getvalue()


def style_block(unet) -> str:
    """The UNet block that carries style: the first up block with attention (SD1.5: up_blocks.1)."""
    for i, block in enumerate(unet.up_blocks):
        if hasattr(block, "attentions"):
            return f"block_{i}"
    raise ValueError("this UNet has no cross-attention up block")


def style_store(models) -> StyleEmbeds:
    """The image embeddings a Generator keeps: in memory, and with a ModelStore in its data folder too."""
    if models is None:
        return StyleEmbeds(None, "this pipeline's image encoder")
    settings = models.settings
    return StyleEmbeds(settings.data_dir / "embeds" / "ip-adapter", encoder_id(settings))


class Generator:
    """Owns the loaded pipelines; callers serialise through the engine's GPU queue. Every task (text only, sketch,
    image-to-image, inpainting; any ControlNet type) is a pipeline made from the loaded components."""

    def __init__(self, pipe, models=None):
        self.pipe = pipe  # the default base model's ControlNet pipeline
        self.models = models  # the ModelStore: LoRAs, TAESD, other ControlNets and checkpoints come from it
        self.device = pipe.device
        self._scheduler_config = pipe.scheduler.config
        self._schedulers: dict[str, object] = {}
        self._tasks: dict[tuple[int, str, str], Any] = {}  # (base, task, control type) → pipeline
        self._style_block = style_block(pipe.unet)
        self._adapters: dict[int, dict[str, Any]] = {}  # per base pipeline: loaded / active adapters, fused
        # a reference's image embedding (memory → <data_dir>/embeds → encode); memory only without a ModelStore
        self._image_embeds = style_store(models)
        self._prompts: OrderedDict[tuple, tuple] = OrderedDict()  # prompt encodings, newest last (`prompt_embeds`)

    # ---- models ----------------------------------------------------------------------------------------------
    def base(self, checkpoint: str | None):
        """The pipeline of the base model: the default, or a checkpoint's."""
        if checkpoint is None:
            return self.pipe
        base = self.models.checkpoint(checkpoint)
        current = {id(self.pipe), id(base)}  # an earlier checkpoint's pipelines are let go
        self._tasks = {k: v for k, v in self._tasks.items() if k[0] in current}
        self._adapters = {k: v for k, v in self._adapters.items() if k in current}
        return base

    def task(self, base, task: str, control: str | tuple[str, ...] = DEFAULT_CONTROL):
        """The pipeline for a task on `base`, sharing its modules; another ControlNet type is swapped in, and several
        (a tuple of types) as one MultiControlNetModel over them, in their order."""
        types = control if isinstance(control, tuple) else (control,)
        key = (id(base), task, types)
        if key not in self._tasks:
            # from_pipe casts every shared module to its `dtype` (float32 unless told): the base's own, or an fp16/bf16
            # engine's UNet would silently become fp32 after the first image-to-image or other-ControlNet render
            if task.startswith("text"):
                pipe = TASKS[task].from_pipe(base, dtype=base.dtype)
            elif task == "txt2img" and types == (DEFAULT_CONTROL,):
                pipe = base
            else:
                nets = [base.controlnet if c == DEFAULT_CONTROL else self.models.controlnet(c) for c in types]
                if len(nets) > 1:
                    from diffusers.models import MultiControlNetModel

                    controlnet = MultiControlNetModel(nets)
                else:
                    controlnet = nets[0]
                pipe = TASKS[task].from_pipe(base, controlnet=controlnet, dtype=base.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._tasks[key] = pipe
        return self._tasks[key]

    def _use_adapters(self, base, p: Params) -> None:
        """The LoRAs a render wants active on `base` at their weights: the mode's few-step LoRA and the designer's
        (weight 0: not applied). Each is loaded once; a set of LoRAs is switched, not reloaded. The few-step LoRA
        alone on the default model is fused (W += B·A, plain layers again); back to anything else the base weights
        are read back from its checkpoint, exactly."""
        wanted: dict[str, float] = {}
        if MODES[p.mode].lora:
            wanted[FAST_ADAPTER] = 1.0
        for name, _, weight in p.loras:
            if weight != 0:
                wanted[adapter_name(name)] = weight
        state = self._adapters.setdefault(id(base), {"loaded": set(), "active": {}, "fused": False})
        if state["active"] == wanted:
            return
        if state["fused"]:
            from ..lora import restore_base_weights, unet_weight_files

            base.unfuse_lora(components=["unet"])
            restore_base_weights(base.unet, unet_weight_files(self.models.settings))
            state["fused"] = False
        files = {adapter_name(name): (name, file) for name, file, _ in p.loras}
        for adapter in wanted.keys() - state["loaded"]:
            if adapter == FAST_ADAPTER:
                self.models.fast_lora(base, FAST_ADAPTER)
            else:
                from ..lora import load_user_lora

                load_user_lora(base, *files[adapter], adapter)
            state["loaded"].add(adapter)
        if wanted:
            base.enable_lora()
            base.set_adapters(list(wanted), list(wanted.values()))
            if list(wanted) == [FAST_ADAPTER] and base is self.pipe and self.models.settings.fuse_lora:
                base.fuse_lora(components=["unet"], adapter_names=[FAST_ADAPTER])
                state["fused"] = True
        else:
            base.disable_lora()
        state["active"] = wanted

    def _taesd(self):
        return self.models.taesd if self.models is not None else None

    def _previewer(self) -> Previewer | None:
        if self.models is None or not self.models.settings.previews:
            return None
        return Previewer(self._taesd())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _scheduler(self, name: str):
        if name not in self._schedulers:
            self._schedulers[name] = SCHEDULERS[name].from_config(self._scheduler_config)
        return self._schedulers[name]

    # ---- style -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def style_embeds(self, references: list[tuple[Image.Image, float]], cfg: bool) -> torch.Tensor:
        """Weighted mean of the references' image embeddings, shaped for `ip_adapter_image_embeds`."""
        if references:
            weights = torch.tensor([w for _, w in references], device=self.device, dtype=torch.float32)
            embeds = torch.cat([self._image_embed(img) for img, _ in references])
            mixed = (embeds.float() * weights[:, None]).sum(0) / weights.sum()
            positive = mixed[None, None].to(embeds.dtype)
        else:
            dim = self.pipe.image_encoder.config.projection_dim
            positive = torch.zeros((1, 1, dim), device=self.device, dtype=self.pipe.unet.dtype)
        # Unconditional image embedding is zeros, as diffusers' own encode_image makes it.
        return torch.cat([torch.zeros_like(positive), positive]) if cfg else positive

    def _image_embed(self, image: Image.Image) -> torch.Tensor:
        """One reference's image embedding (1, dim), by its pixels, the image encoder and the dtype it runs in: from
        memory, else from the data folder (a style any earlier process encoded), else encoded and kept in both. The
        same style again (a live canvas, a sweep, a catalog run, another day) costs nothing and gives the same
        numbers."""
        key = self._image_embeds.key(image, self.pipe.image_encoder.dtype, self.device)
        embed = self._image_embeds.get(key, self.device)
        if embed is None:
            embed = self.pipe.encode_image([image], self.device, 1)[0]
            self._image_embeds.put(key, embed)
        return embed

    @torch.inference_mode()
    def region_inputs(self, p: Params, cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings (cfg·1, n, dim) for the global style (if any) and each region, and their masks
        (1, n, H, W) as IP-Adapter attention masks: each region's reference acts only inside its mask (the
        masks do not overlap) and the global reference on the rest of the image."""
        from diffusers.image_processor import IPAdapterMaskProcessor

        masks = [m for m, _ in p.regions]
        embeds = torch.cat([self._image_embed(ref) for _, ref in p.regions])  # (regions, dim)
        parts = [embeds]
        if p.references:
            rest = ~np.logical_or.reduce(masks)
            masks = [rest, *masks]
            parts.insert(0, self.style_embeds(p.references, cfg=False)[0])  # (1, dim)
        positive = torch.cat(parts)[None].to(self.pipe.unet.dtype)
        images = [Image.fromarray(m.astype("uint8") * 255, "L") for m in masks]
        processed = IPAdapterMaskProcessor().preprocess(images, height=p.height, width=p.width)
        mask_tensor = processed.reshape(1, len(images), *processed.shape[-2:])
        return (torch.cat([torch.zeros_like(positive), positive]) if cfg else positive), mask_tensor

    def _set_style_scale(self, pipe, strength: float, style_only: bool, has_refs: bool) -> None:
        if not has_refs:
            pipe.set_ip_adapter_scale(0.0)
        elif style_only:
            pipe.set_ip_adapter_scale({"up": {self._style_block: strength}})
        else:
            pipe.set_ip_adapter_scale(strength)

    # ---- the prompt ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prompt_embeds(self, pipe, base, p: Params) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's and the negative prompt's encodings (1, tokens, dim; the negative one None without guidance)
        by the pipeline's own `encode_prompt`, kept per text encoder, LoRAs active on `base` (in their order: the
        text encoder may carry some), prompt, negative prompt and guidance on/off. The pipeline repeats them per
        image, as it does its own encodings, so the pixels are the same; a re-render encodes no text."""
        cfg = p.guidance > 1.0  # with guidance the negative is encoded even where a pipeline would not use it
        encoder = pipe.text_encoder
        active = tuple(self._adapters.get(id(base), {}).get("active", {}).items())
        key = (id(encoder), active, p.prompt, p.negative_prompt or None, cfg)
        hit = self._prompts.get(key)
        if hit is not None and hit[0]() is encoder:  # (an id is reused once its encoder is gone)
            self._prompts.move_to_end(key)
            return hit[1]
        embeds = pipe.encode_prompt(p.prompt, self.device, 1, cfg, p.negative_prompt or None)
        self._prompts[key] = (weakref.ref(encoder), embeds)
        self._prompts.move_to_end(key)
        while len(self._prompts) > PROMPT_CACHE:
            self._prompts.popitem(last=False)
        return embeds

    # ---- the render --------------------------------------------------------------------------------------------
    def run(
        self,
        p: Params,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Output:
        timings: dict[str, float | list[float]] = {}
        cfg = p.guidance > 1.0
        try:
            t0 = time.perf_counter()
            attention: dict[str, Any] = {}
            if p.regions:
                embeds, masks = self.region_inputs(p, cfg)
                attention["ip_adapter_masks"] = [masks.to(self.device)]
            else:
                embeds = self.style_embeds(p.references, cfg)
            self._sync()
            timings["style_encode"] = time.perf_counter() - t0

            mode = MODES[p.mode]
            base = self.base(p.checkpoint)
            self._use_adapters(base, p)
            self._set_style_scale(base, p.style_strength, p.style_only, bool(p.references or p.regions))
            if p.control is None:
                task = "text"
            else:
                task = "inpaint" if p.mask is not None else "img2img" if p.init is not None else "txt2img"
            units = control_units(p)
            pipe = self.task(base, task, tuple(u[0] for u in units) or p.control_type)
            pipe.scheduler = self._scheduler(p.scheduler)
            t0 = time.perf_counter()
            prompt_embeds, negative_embeds = self.prompt_embeds(pipe, base, p)
            self._sync()
            timings["prompt_encode"] = time.perf_counter() - t0
            first = denoise_steps(p.steps, p.strength) if p.init is not None else p.steps
            refine = hires_steps(p)[1] * len(p.seeds) if p.hires_size else 0
            previews = self._previewer() if on_progress is not None else None
            clock = StepClock(first + refine, self._sync, on_progress, cancel, previews)
            vae = self._taesd() if mode.uses_tiny_vae(self.device.type) else base.vae

            call = dict(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                height=p.height,
                width=p.width,
                num_inference_steps=p.steps,
                guidance_scale=p.guidance,
                num_images_per_prompt=len(p.seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in p.seeds],
                ip_adapter_image_embeds=[embeds],
                output_type="latent",
                callback_on_step_end=clock.on_step_end,
                cross_attention_kwargs=attention or None,
            )
            if task == "txt2img":
                call.update(control_args(units, "image"))
            elif task in ("img2img", "inpaint"):
                call.update(image=p.init, strength=p.strength, **control_args(units, "control_image"))
                if task == "inpaint":
                    call["mask_image"] = Image.fromarray(p.mask.astype("uint8") * 255, "L")
            # strength 0: no step to take, the image as the autoencoder gives it back
            latents = self.encode(base, p.init, len(p.seeds)) if first == 0 else pipe(**call).images
            timings["vae_decode"] = 0.0
            images = self.decode(vae, latents, timings)
            if p.mask is not None:
                images = [composite(p.init, image, p.mask) for image in images]
            if p.hires_size and not (cancel is not None and cancel.is_set()):
                clock.offset = first
                images = self.hires(base, p, images, call, clock, vae, cancel, timings)
            timings["denoise"] = time.perf_counter() - clock.start - timings["vae_decode"]
            timings["steps"] = clock.steps
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {len(clock.steps)} of {clock.total} steps")
            return Output(images=images, timings=timings)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise Busy(
                f"the GPU ran out of memory for {len(p.seeds)} image(s) at {p.width}×{p.height}",
                fix="lower the size or the number of variations, or close other GPU programs",
            ) from None

    def hires(self, base, p: Params, images, call: dict, clock: StepClock, vae, cancel, timings) -> list[Image.Image]:
        """The hires fix: each image upscaled (Lanczos) and refined by image-to-image at a low strength, with its
        own seed, ControlNet following the control map upscaled alike; an inpainting keeps the image outside its
        mask."""
        w, h = p.hires_size
        units = [(name, made.resize((w, h), Image.Resampling.NEAREST), *rest) for name, made, *rest in control_units(p)]
        pipe = self.task(base, "img2img" if units else "text-img2img", tuple(u[0] for u in units) or p.control_type)
        pipe.scheduler = self._scheduler(p.scheduler)
        total, steps = hires_steps(p)
        out = []
        for image, seed in zip(images, p.seeds, strict=True):
            if cancel is not None and cancel.is_set():
                break
            one = {**call, "height": h, "width": w, "num_images_per_prompt": 1, "num_inference_steps": total}
            one.update(image=image.resize((w, h), Image.Resampling.LANCZOS), strength=p.hires_strength)
            if units:
                one.update(control_args(units, "control_image"))
            else:  # text only: no ControlNet (and img2img takes its size from the image)
                for name in ("control_image", "controlnet_conditioning_scale", "height", "width"):
                    one.pop(name, None)
            one.update(generator=[torch.Generator("cpu").manual_seed(seed)])
            one.pop("mask_image", None)
            # (region masks stay as they are: the IP-Adapter scales them to each layer's tokens)
            refined = self.decode(vae, pipe(**one).images, timings)[0]
            if p.mask is not None:
                mask = Image.fromarray(p.mask.astype("uint8") * 255).resize((w, h), Image.Resampling.NEAREST)
                init = p.init.resize((w, h), Image.Resampling.LANCZOS)
                refined = composite(init, refined, np.asarray(mask) > 127)
            out.append(refined)
            clock.offset += steps
        return out if len(out) == len(images) else images

    @torch.inference_mode()
    def encode(self, base, image: Image.Image, n: int) -> torch.Tensor:
        """An image's latents (the autoencoder's mean), `n` times."""
        pixels = base.image_processor.preprocess(image).to(self.device, base.vae.dtype)
        latents = base.vae.encode(pixels).latent_dist.mode() * base.vae.config.scaling_factor
        return latents.repeat(n, 1, 1, 1)

    @torch.inference_mode()
    def decode(self, vae, latents: torch.Tensor, timings: dict) -> list[Image.Image]:
        """Latents → images (the time added to `timings["vae_decode"]`)."""
        t0 = time.perf_counter()
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        images = self.pipe.image_processor.postprocess(decoded, output_type="pil")
        self._sync()
        timings["vae_decode"] += time.perf_counter() - t0
        return images


def control_units(p: Params) -> list[tuple]:
    """The ControlNets a call follows, (type, map, weight, start, end) each: `p.controls`, or the one `control`."""
    if p.controls:
        return list(p.controls)
    return [(p.control_type, p.control, p.structure_strength, 0.0, 1.0)] if p.control is not None else []


def control_args(units: list[tuple], image_arg: str) -> dict[str, Any]:
    """The pipeline's ControlNet arguments: one ControlNet's map, scale and range as they are (the same call, the same
    pixels as ever), several as lists in their order (diffusers' MultiControlNetModel)."""
    names = (image_arg, "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end")
    if len(units) == 1:
        _, made, weight, start, end = units[0]
        return dict(zip(names, (made, float(weight), float(start), float(end)), strict=True))
    columns = [[u[i] for u in units] for i in range(1, 5)]
    return dict(zip(names, [columns[0], *[[float(v) for v in c] for c in columns[1:]]], strict=True))


def adapter_name(lora: str) -> str:
    """A LoRA's adapter name in the UNet (a module key: no dots or spaces)."""
    import re

    return "user_" + re.sub(r"\W", "_", lora)


def denoise_steps(steps: int, strength: float) -> int:
    """The steps image-to-image takes at `strength`, as diffusers counts them (`get_timesteps`)."""
    return min(int(steps * strength), steps)


def hires_steps(p: Params) -> tuple[int, int]:
    """The hires refine pass's schedule and the steps it takes: the render's steps at its strength, at least one."""
    import math

    total = max(p.steps, math.ceil(1 / p.hires_strength))
    return total, denoise_steps(total, p.hires_strength)


def composite(init: Image.Image, image: Image.Image, mask) -> Image.Image:
    """The repainted image inside the mask, the original outside: the mask is grown by a few pixels and feathered,
    so the seam falls on repainted pixels, and beyond it every pixel is the original's exactly."""
    import cv2

    grow = max(2, round(min(mask.shape) / 128))
    alpha = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), grow / 2)[..., None]
    alpha[mask] = 1.0
    mixed = np.asarray(init, dtype=np.float32) * (1 - alpha) + np.asarray(image, dtype=np.float32) * alpha
    return Image.fromarray(np.round(mixed).clip(0, 255).astype(np.uint8))
