"""Typed requests and results: what flows into the engine and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import BadInput
from .rules.controlnets import CONTROLS, DEFAULT_CONTROL, MAX_UNITS, ControlName
from .rules.models import rules
from .rules.modes import MODE_FIELDS, MODES, RenderMode, switch

EdgeMode = Literal["auto", "canny", "lines"]
# lcm: LCM-LoRA's own; tcd: for Hyper-SD / TCD LoRAs (both for the few-step modes)
SchedulerName = Literal["unipc", "ddim", "euler_a", "lcm", "tcd"]
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)


MAX_STEPS = 150
MAX_VARIATIONS = 8
MAX_SEED = 2**32 - 1


class StyleWeight(BaseModel):
    """One reference in a blend: a style name or id and its weight."""

    model_config = ConfigDict(extra="forbid")

    style: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0, le=10)


MAX_REGIONS = 4
MAX_LORAS = 4


class LoraWeight(BaseModel):
    """One of the designer's LoRAs (a name on the engine, engine/model_files.py) and its weight."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    weight: float = Field(1.0, ge=-2, le=2)


class Region(BaseModel):
    """One region of the image with its own style: a mask (white inside; the sketch's size or the render's)
    and the words its reference is retrieved by, or an explicit style."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    mask: bytes = Field(repr=False)
    words: str = Field("", max_length=300)
    style: str | None = None

    @model_validator(mode="after")
    def _words_or_style(self) -> Region:
        self.words = self.words.strip()
        if not self.words and not self.style:
            raise ValueError("needs words (e.g. 'walnut veneer') or a style from the library")
        return self


class ControlUnit(BaseModel):
    """One ControlNet of a render that follows several (at most MAX_UNITS): its type, its weight (the conditioning
    scale), the fraction of the steps it acts in (`start` to `end`), and its own image, else the sketch (or, without
    one, the image started from)."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    type: ControlName = DEFAULT_CONTROL
    weight: float = Field(1.0, ge=0, le=3)
    start: float = Field(0.0, ge=0, le=1)
    end: float = Field(1.0, ge=0, le=1)
    image: bytes | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _start_before_end(self) -> ControlUnit:
        if self.start >= self.end:
            raise ValueError(
                f"start ({self.start:g}) must be before end ({self.end:g}): the fraction of the steps it acts in"
            )
        return self

    def record(self, image_hash: str | None = None) -> dict[str, Any]:
        """As the metadata keeps it: its own image by content hash (None: it followed the sketch)."""
        return {
            "type": self.type,
            "weight": self.weight,
            "start": self.start,
            "end": self.end,
            "image_hash": image_hash,
        }


MAX_PROMPT = 2000  # characters, for the prompt and the negative prompt alike


Pad = Annotated[int, Field(ge=0, le=1024)]  # pixels an outpaint adds on one side


class GenerateRequest(BaseModel):
    """Everything one generation needs. The sketch is raw file bytes; None means text-to-image."""

    # bytes travel as base64 in JSON (the job queue and the HTTP API)
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    # the schema says what the validator checks: some non-space character, and at most MAX_PROMPT of them
    prompt: str = Field(json_schema_extra={"pattern": r"\S", "maxLength": MAX_PROMPT})
    negative_prompt: str = Field("", json_schema_extra={"maxLength": MAX_PROMPT})
    sketch: bytes | None = Field(default=None, repr=False)
    edge_mode: EdgeMode = "auto"
    canny_low: int = Field(50, ge=0, le=255)
    canny_high: int = Field(150, ge=0, le=255)

    # Style: an explicit one, a blend, or retrieval of the top k (the first is used).
    style: str | None = None
    blend: list[StyleWeight] = Field(default_factory=list, max_length=4)
    k: int = Field(3, ge=1, le=20)
    style_only: bool = False
    use_style: bool = True
    # Per-region styles (IP-Adapter masks): each region gets its own reference; the rest takes the global one.
    regions: list[Region] = Field(default_factory=list, max_length=MAX_REGIONS)

    # Image-to-image: start from this image (file bytes) instead of noise, `strength` of the way back to noise
    # (0 keeps it, 1 ignores it); with `mask` (white = change) only the masked part is repainted (inpainting).
    # ControlNet still follows the sketch, or the image's own edges without one.
    init_image: bytes | None = Field(default=None, repr=False)
    strength: float = Field(0.75, ge=0, le=1)
    mask: bytes | None = Field(default=None, repr=False)
    # Outpainting: extend the init image by (left, top, right, bottom) pixels; the new border is painted (strength 1
    # unless set), the image kept as it is, and ControlNet follows the image's own edges (each side's total is
    # rounded up to a multiple of 8)
    outpaint: tuple[Pad, Pad, Pad, Pad] | None = None
    # Which ControlNet follows the sketch; each has its preprocessor (engine/images.py control_map)
    control: ControlName = DEFAULT_CONTROL
    # Several ControlNets at once (at most MAX_UNITS), each with its weight, its range of the steps and optionally its
    # own image. Empty: one, `control` at `structure_strength` over all the steps. Given: `control` and
    # `structure_strength` are the first unit's.
    controls: list[ControlUnit] = Field(default_factory=list, max_length=MAX_UNITS)
    # The base model: None is the default SD 1.5; else a checkpoint on the engine by name, or a hub id
    checkpoint: str | None = Field(default=None, max_length=200)
    loras: list[LoraWeight] = Field(default_factory=list, max_length=MAX_LORAS)
    # Hires fix: render, upscale the image by `hires` (1 = off), refine it by img2img at `hires_strength`
    hires: float = Field(1.0, ge=1, le=2)
    hires_strength: float = Field(0.35, ge=0.05, le=1)

    steps: int = Field(20, ge=1, le=MAX_STEPS)
    guidance: float = Field(7.5, ge=0, le=30)
    structure_strength: float = Field(1.5, ge=0, le=3)
    style_strength: float = Field(0.8, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    size: int = Field(512, ge=64, le=1024, description="short side in pixels")
    # the render's aspect when no sketch or image sets it (a text-only render), e.g. "16:9"
    aspect: str | None = Field(None, pattern=r"^[1-9][0-9]?:[1-9][0-9]?$")
    variations: int = Field(1, ge=1, le=MAX_VARIATIONS)
    scheduler: SchedulerName = "unipc"
    # quality | fast | live (engine/rules/modes.py): steps, guidance and scheduler follow the mode unless set
    mode: RenderMode = "quality"
    # False: a throwaway frame (the Studio's live canvas): returned, not written to outputs/ or the History
    keep: bool = True
    # sd15: SD 1.5 + ControlNet + IP-Adapter (sketches, styles); flux: FLUX.1-schnell + LoRA, text only
    model: Literal["sd15", "flux"] = "sd15"

    # Where the run came from and which set it belongs to (a sweep, a catalog run, an A/B setting),
    # so the Dashboard and the Arena can pick and compare sets of runs.
    source: str = Field("api", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    batch: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    label: str = Field("", max_length=80)
    ref: str = Field("", max_length=200, description="the caller's own reference, e.g. a catalog item id")

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _prompts_bounded(cls, value: str, info) -> str:
        value = value.strip()
        what = info.field_name.replace("_", " ")
        if not value and info.field_name == "prompt":
            raise ValueError("the prompt is empty; describe what you want to see")
        if len(value) > MAX_PROMPT:
            raise ValueError(f"the {what} is longer than {MAX_PROMPT} characters")
        return value

    @model_validator(mode="after")
    def _mode_defaults(self) -> GenerateRequest:
        """A few-step mode brings its own steps, guidance and scheduler, and a model other than SD 1.5 its own steps
        and guidance (FLUX.1-schnell: 4, and 0), for whichever the caller did not set."""
        if self.mode != "quality":
            defaults = MODES[self.mode].defaults()
        else:
            model = rules(self.model)
            defaults = {"steps": model.steps, "guidance": model.guidance}
        for name, value in defaults.items():
            if name not in self.model_fields_set:
                setattr(self, name, value)
        return self

    @model_validator(mode="after")
    def _first_unit_is_the_control(self) -> GenerateRequest:
        if self.controls:
            self.control, self.structure_strength = self.controls[0].type, self.controls[0].weight
        return self

    def units(self) -> list[ControlUnit]:
        """The ControlNets the render follows: `controls`, or the one `control` at `structure_strength`."""
        return list(self.controls) or [ControlUnit(type=self.control, weight=self.structure_strength)]

    @model_validator(mode="after")
    def _mask_needs_image(self) -> GenerateRequest:
        if self.mask is not None and self.init_image is None:
            raise ValueError("a mask needs the image to repaint: give an init image (white in the mask = change)")
        return self

    @model_validator(mode="after")
    def _outpaint_extends_an_image(self) -> GenerateRequest:
        if self.outpaint is None:
            return self
        if self.init_image is None:
            raise ValueError("outpaint extends an image: give the init image to extend")
        if not any(self.outpaint):
            raise ValueError("outpaint adds nothing: give at least one side in pixels (left, top, right, bottom)")
        if self.mask is not None:
            raise ValueError("outpaint paints the new border; leave out the mask (extend first, then repaint a part)")
        if self.sketch is not None:
            raise ValueError("outpaint follows the image's own edges; leave out the sketch")
        if self.model != "sd15":
            raise ValueError("outpaint needs SD 1.5 (the inpainting pipeline)")
        if "strength" not in self.model_fields_set:
            self.strength = 1.0  # the border is new: painted from noise, the image itself is kept
        return self

    @field_validator("size")
    @classmethod
    def _size_multiple_of_8(cls, value: int) -> int:
        return value - value % 8

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], sketch: bytes | None = None, **changes: Any) -> GenerateRequest:
        """The request that made a past run (its metadata and its sketch), with `changes` applied: the same
        prompt, seeds, style reference(s) and settings, so only what changes differs."""
        params = meta["params"]
        params = switch(params, changes.get("mode", params.get("mode") or "quality"))
        used = [s for s in meta.get("styles", []) if s.get("used")]
        style = used[0]["id"] if len(used) == 1 else None
        blend = [{"style": s["id"], "weight": s["weight"]} for s in used] if len(used) > 1 else []
        values = {
            "prompt": meta["prompt"],
            "negative_prompt": meta.get("negative_prompt", ""),
            "sketch": sketch,
            # the preprocessor a ControlNet type used (lineart, softedge…) is not an edge mode: auto then
            "edge_mode": meta.get("edge_mode") if meta.get("edge_mode") in get_args(EdgeMode) else "auto",
            "style": style,
            "blend": blend,
            "use_style": bool(used) and params.get("use_style", True),
            "seed": meta["seeds"][0],
            "variations": len(meta["seeds"]),
            **{k: params[k] for k in REPEATED_PARAMS if params.get(k) is not None},  # None: not used by that run
            **changes,
        }
        units = [u for u in params.get("controls") or [] if u.get("type") in CONTROLS]
        ranged = any((u["start"], u["end"]) != (0, 1) for u in units)
        if (len(units) > 1 or ranged) and "controls" not in changes:  # each as it was (its own image aside: it
            # is not carried, so such a unit follows the sketch), the first one changed as `changes` say
            first = {"type": changes.get("control"), "weight": changes.get("structure_strength")}
            values["controls"] = [
                {
                    k: (first[k] if i == 0 and first.get(k) is not None else u[k])
                    for k in ("type", "weight", "start", "end")
                }
                for i, u in enumerate(units)
            ]
        if meta.get("canny"):
            values["canny_low"], values["canny_high"] = meta["canny"]
        if meta.get("regions") and "regions" not in changes:
            from .masks import mask_png, rle_decode

            values["regions"] = [
                {"mask": mask_png(rle_decode(r["mask"])), "words": r["words"], "style": r["style"]["id"]}
                for r in meta["regions"]
            ]
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> GenerateRequest:
        """Validate, turning pydantic's report into one BadInput line."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise BadInput(describe_validation_error(exc)) from None


# Settings a re-render takes from the run it repeats (the metadata's `params`).
REPEATED_PARAMS = (
    "steps", "guidance", "structure_strength", "style_strength", "style_only", "scheduler", "size", "mode",
    "strength", "control", "checkpoint", "loras", "hires", "hires_strength", "aspect",
)  # fmt: skip
assert set(MODE_FIELDS) <= set(REPEATED_PARAMS)

PATTERN_HINTS = {
    "batch": "use up to 80 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "source": "use up to 32 lowercase letters, digits, '_' or '-', starting with a letter",
}


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as `field: message`, in words a user reads."""
    err = exc.errors()[0]
    loc = list(err.get("loc", ()))
    if len(loc) >= 2 and loc[0] == "regions" and isinstance(loc[1], int):  # regions.0.words → region 1 words
        loc = [f"region {loc[1] + 1}" + (f" {loc[2]}" if len(loc) > 2 else ""), *loc[3:]]
    if len(loc) >= 2 and loc[0] == "controls" and isinstance(loc[1], int):  # controls.1.weight → ControlNet 2 weight
        loc = [f"ControlNet {loc[1] + 1}" + (f" {loc[2]}" if len(loc) > 2 else ""), *loc[3:]]
    where = ".".join(str(p) for p in loc) or "request"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    limits = {
        "greater_than_equal": "at least {ge}",
        "less_than_equal": "at most {le}",
        "greater_than": "more than {gt}",
        "less_than": "less than {lt}",
    }
    if kind == "too_long" and where == "controls":
        msg = f"at most {ctx.get('max_length')} ControlNets at once (got {ctx.get('actual_length')})"
    if kind == "string_pattern_mismatch":
        msg = PATTERN_HINTS.get(where, "has characters that are not allowed")
    if kind in limits:
        msg = "must be " + limits[kind].format(**ctx)
        if where == "steps":
            msg = f"must be between 1 and {MAX_STEPS} (got {err.get('input')})"
    return f"{where}: {msg}" if err.get("loc") else msg


@dataclass
class StyleInfo:
    id: str
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    source: str = "shipped"
    hidden: bool = False
    created_at: float = 0.0


@dataclass
class StyleHit:
    """A style from the library with its similarity to a query (cosine, in [-1, 1])."""

    id: str
    name: str
    score: float
    description: str = ""
    tags: list[str] = field(default_factory=list)
    source: str = "shipped"
    weight: float = 1.0
    used: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "score": round(self.score, 4),
            "weight": self.weight,
            "source": self.source,
            "used": self.used,
        }


@dataclass
class Progress:
    """One progress report; every long job uses this shape."""

    stage: str
    step: int
    total: int
    elapsed: float
    seconds_per_step: float | None = None  # as the producer measured it, when it knows better than elapsed/step
    preview: bytes | None = field(default=None, repr=False)  # a small JPEG of the render forming (renders only)
    preview_step: int = 0  # the step it shows

    @property
    def eta(self) -> float | None:
        """Seconds left: 0 at the end; None until there is a rate to go by (the first step also pays the set-up)."""
        if self.step >= self.total:
            return 0.0
        if self.seconds_per_step is None and self.step < 2:
            return None
        per_step = self.seconds_per_step if self.seconds_per_step is not None else self.elapsed / self.step
        return per_step * (self.total - self.step)


@dataclass
class GenerateResult:
    """Images and the metadata that says exactly what made them."""

    images: list[Any]  # PIL images
    seeds: list[int]
    metadata: dict[str, Any]
    styles: list[StyleHit]
    edges: Any = None  # PIL image of the control map, None for text-to-image
    paths: list[str] = field(default_factory=list)
    run_id: str | None = None
    regions: list[dict[str, Any]] = field(default_factory=list)  # per-region masks, words, styles (metadata's)
    png: list[bytes] = field(default_factory=list, repr=False)  # the files as saved (metadata inside)
