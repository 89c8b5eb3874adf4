"""The engine interface: everything a page, the CLI or the server may ask of an engine, grouped by service.

`LocalEngine` (engine/local.py) implements it in this process; `RemoteEngine` (engine/remote.py) implements every
method over HTTP against `python -m engine serve`, whose routes are made from these same declarations
(engine/server/). A caller cannot tell which one it has.

Rules every method keeps, so that it means the same thing in both places:
- arguments and results are plain data (pydantic models, dataclasses, dicts, lists, str, numbers, bytes); files are
  `bytes` (PNG, CSV, XLSX, Markdown), never a path on the engine's machine, and the engine never takes a path
  from its caller: things on the engine are named (run ids, sweep batches, catalog run names, adapter names);
- long work (renders, sweeps, catalog runs, tagging, tuning, switching retrieval) returns a `JobInfo` at once and
  runs as a job: one state vocabulary, one progress shape and cancel, the same in process and over HTTP;
- errors a user can cause are `EngineError`s (engine/errors.py) with one line, whatever the transport.

The server reads nothing of an engine but what `Engine` declares here (its services' operations, `start`, `close`,
`capabilities`, `follow`; the limits it enforces from `about.limits`), so it serves a `RemoteEngine` as well: a proxy
(tests/test_architecture.py checks it).
"""

from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from .catalog.options import CatalogOptions
from .errors import Cancelled
from .rules.controlnets import DEFAULT_CONTROL, ControlName
from .schema import MAX_PROMPT, MAX_STEPS, EdgeMode, GenerateRequest, Progress, StyleHit, StyleInfo

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
# Bounds every caller gets checked at the boundary (over HTTP: a 422 with one line)
Limit = Annotated[int, Field(ge=1, le=100_000)]
Offset = Annotated[int, Field(ge=0, le=10_000_000)]
TopK = Annotated[int, Field(ge=1, le=100)]
Pixels = Annotated[int, Field(ge=0, le=1024)]
Index = Annotated[int, Field(ge=0, le=64)]
# A folder the engine names (a catalog or tagging run, a sweep, a dataset, an adapter): a plain name, never a path
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")]
# A style's name as the library takes it (engine/library.py NAME_RE, which checks it, spaces around it aside)
StyleName = Annotated[str, Field(json_schema_extra={"pattern": r"^[\w.,'&()+-][\w .,'&()+-]{0,59}$"})]
# A checkpoint's or LoRA's name on the engine (engine/model_files.py NAME, which checks it), `.safetensors` or not
ModelName = Annotated[str, Field(json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,119}$"})]
# A file's SHA-256 as 64 hex digits: what a model upload in parts is addressed by (engine/model_parts.py)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
# A byte count or position in a model upload (the engine holds the total to its `max_model_bytes`)
ByteCount = Annotated[int, Field(ge=0, le=1 << 40)]
# A pixel coordinate in an image (engine/regions.py checks it is inside the image at hand)
Coordinate = Annotated[float, Field(ge=0, le=16384)]
# A sweep's axis: one value or more (engine/sweep.py: at most 64 cells in all), each within the render's bounds
# (the values' bounds in the schema only: the engine checks each as a render would, and says it in the render's words)
StructureAxis = Annotated[
    list[float],
    Field(min_length=1, max_length=64, json_schema_extra={"items": {"type": "number", "minimum": 0, "maximum": 3}}),
]
StyleAxis = Annotated[
    list[float],
    Field(min_length=1, max_length=64, json_schema_extra={"items": {"type": "number", "minimum": 0, "maximum": 2}}),
]
StepsAxis = Annotated[list[Annotated[int, Field(ge=1, le=MAX_STEPS)]], Field(max_length=64)]


class ArenaSetting(TypedDict, total=False):
    """One side of an A/B render: the settings it changes (engine/services/arena.py SETTINGS), as a render takes
    them."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    structure_strength: Annotated[float, Field(ge=0, le=3)]
    style_strength: Annotated[float, Field(ge=0, le=2)]
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)]
    guidance: Annotated[float, Field(ge=0, le=30)]


class ArenaSettings(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    A: ArenaSetting
    B: ArenaSetting


# A sheet's file name: its suffix says how it is read
SheetName = Annotated[str, Field(pattern=r"^[^/\\]{1,200}\.(xlsx|xlsm|csv|tsv|txt|XLSX|XLSM|CSV|TSV|TXT)$")]
TERMINAL: tuple[str, ...] = ("done", "failed", "cancelled")
# Kinds of job that finish what another job started (a render's metrics): they run whether or not anyone follows them
UNATTENDED: tuple[str, ...] = ("measure",)


def operation(
    method: Callable | None = None,
    *,
    one_of: tuple[str, ...] = (),
    needs: tuple[str, dict[str, tuple[str, ...]]] | None = None,
) -> Callable:
    """Marks a method as part of the interface: the server routes it and the remote engine implements it.
    `one_of`: arguments of which the call must give at least one (a point or a box; words or an image). `needs`: an
    argument and, for each of its values, the other arguments that value needs (a dataset from an upload needs the
    images and the captions). The OpenAPI says both."""

    def mark(fn: Callable) -> Callable:
        fn.__engine_operation__ = True
        fn.__engine_one_of__ = tuple(one_of)
        fn.__engine_needs__ = needs
        return fn

    return mark(method) if method is not None else mark


class JobInfo(BaseModel):
    """A job as every caller sees it: its state, its progress, and once done a small result (names of what it
    made: a run id, a sweep batch, a catalog run…)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: str
    kind: str
    title: str = ""
    state: JobState = "queued"
    stage: str = ""
    step: int = 0
    total: int = 0
    elapsed: float = 0.0  # seconds since it started running
    seconds_per_step: float | None = None
    position: int = 0  # jobs ahead of it while it is queued
    error: str | None = None  # one line, when it failed or was cancelled
    error_kind: str | None = None  # the EngineError class it failed with (BadInput, ModelUnavailable…)
    result: dict[str, Any] | None = None
    created_at: float = 0.0
    preview: bytes | None = Field(None, repr=False)  # a render's newest step preview (small JPEG), while it runs
    preview_step: int = 0

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def progress(self) -> Progress | None:
        """The `Progress` the pages and the CLI draw; None before the job has reported anything."""
        if self.state == "queued":
            return Progress("queued", self.position + 1, 0, 0.0)
        if not self.total and not self.stage:
            return None
        return Progress(
            self.stage or "running", self.step, self.total, self.elapsed, self.seconds_per_step, self.preview,
            self.preview_step,
        )  # fmt: skip


class Limits(BaseModel):
    """The bounds this engine holds every caller to, the same in process and over HTTP (a server refuses a body
    over `max_upload_bytes` before reading it)."""

    max_upload_bytes: int  # one uploaded file: a sketch, an image, a sheet, a zip
    max_model_bytes: int  # a checkpoint or LoRA added (`renders.add_model`: over HTTP the upload limit first;
    # in parts with `renders.upload_begin`/`upload_part`/`upload_finish`: this alone)
    max_input_pixels: int  # an image's width × height, once decoded
    max_prompt: int  # characters of a prompt or a negative prompt
    max_steps: int  # steps of one render
    max_queued: int  # jobs queued or running at once, every caller together
    max_per_client: int  # … of which one caller may have this many


class UploadStatus(BaseModel):
    """Where a model upload in parts stands on the engine (`renders.upload_begin`, `renders.upload_part`): the bytes
    it holds of the file (the next part starts there), the largest part it takes in one call, and, once the file is
    a model on the engine, what `add_model` would have said (then nothing is left to send)."""

    sha256: str
    size: int
    received: int
    max_part: int
    model: dict[str, Any] | None = None  # {name, kind, added} once the model is on the engine

    @property
    def done(self) -> bool:
        return self.model is not None


class Capabilities(BaseModel):
    """What this engine is and can do: the sidebar's status and the switches pages use instead of guessing."""

    profile: str
    device: str
    dtype: str
    precision: str = ""  # what the dtype means on this hardware: "bf16 (AMX)", "fp32", "fp16"
    cpu: dict[str, Any] = Field(default_factory=dict)  # the processor: model, torch's ISA, bf16/int8 units
    models: dict[str, str]
    loaded: dict[str, bool]
    retrieval: str
    jobs_waiting: int = 0
    executor: str = "local"
    workers: int = 1
    remote: bool = False
    features: dict[str, bool] = Field(default_factory=dict)  # regions, flux, local_llm, tuning, ray
    store_error: str | None = None  # one line while the job store cannot be written (a full disk, a lock), else None
    limits: Limits | None = None  # None from an engine older than its limits
    controls: list[str] = Field(default_factory=list)  # the ControlNet types it renders with (request `control`)
    modes: list[str] = Field(default_factory=list)  # the render modes it runs (request `mode`)


ModelStatus = Literal["present", "missing", "incomplete", "pickle-only", "to build"]


class ModelCheck(BaseModel):
    """One model the settings name, as the doctor found it on the engine's machine (engine/doctor.py)."""

    name: str  # what `python -m engine models pull NAME` takes: "base", "controlnet-canny", "ip-adapter"…
    label: str  # in a person's words: "SD 1.5 (base)"
    model: str  # the hub id, or the folder as callers see it (relative to the data folder where it is inside it)
    source: Literal["hub", "folder", "tiny"]  # the hub cache, a folder on the engine's machine, the tiny profile
    status: ModelStatus  # "to build": a tiny-profile model, built locally on first use (no download)
    format: Literal["safetensors", "pickle"] | None = None  # of the weights found (pickle: refused unless allowed)
    variant: str | None = None  # "fp16" where only the fp16 variant is on disk
    size: int | None = None  # bytes on disk of what was found
    download_size: int | None = None  # roughly what fetching it downloads, where known
    needed: bool  # the enabled features need it: the doctor's verdict counts it
    features: str  # what needs it, in words
    setting: str  # the setting that names it (an environment variable)
    missing_files: list[str] = Field(default_factory=list)  # the first files not found (the patterns of a fetch)
    fetch: str = ""  # the engine's command that fetches just this model's files ("" for a folder)
    download: str = ""  # the same with the hub's own CLI (`hf download ID --include …`)
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.status in ("present", "to build")


class DoctorReport(BaseModel):
    """Every model the engine's settings name and whether each is on its machine: made from the file system alone
    (no model loaded, no network), so it answers where the engine could not start. `ok`: every model the enabled
    features need is there (or, on the tiny profile, built locally on first use)."""

    ok: bool
    profile: str
    models: list[ModelCheck]
    missing: list[str] = Field(default_factory=list)  # names of needed models that are not usable
    fetch_all: str = ""  # the one command that fetches every missing needed model ("" when none is missing)
    cache: str = ""  # where hub downloads go (HF_HOME), as the engine's machine names it
    summary: str = ""  # one short line: "models: all present", "3 missing — see Models"


class RenderResult(BaseModel):
    """A finished render: its PNGs as saved (the full metadata inside each), the control image and the recipe.

    A render queued through `renders.submit` ends as soon as its images are kept, before they are measured: its
    metadata then says `"measured": false` (per image `metrics` `{}`, no `timings["metrics"]`) and `measure_job`
    names the "measure" job that adds the numbers; once that job is done, the run (`history.get`, `renders.result`)
    says `"measured": true` and carries them, in its PNGs, sidecars and history row alike."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    run_id: str
    seeds: list[int]
    metadata: dict[str, Any]
    styles: list[StyleHit]
    regions: list[dict[str, Any]] = Field(default_factory=list)
    png: list[bytes] = Field(default_factory=list, repr=False)
    edges: bytes | None = Field(None, repr=False)  # PNG of what ControlNet followed; None for text-to-image
    # each image's file, relative to the engine's data folder ("outputs/2025-06-01/RUN-0.png"): a name, never a
    # path on the engine's machine; none for a frame not kept. The bytes are `png` (or `history.image(run_id, i)`).
    files: list[str] = Field(default_factory=list)
    measure_job: str | None = None  # the job measuring its images; None when they were measured with the render

    @property
    def measured(self) -> bool:
        """Whether the metrics are in (runs from before the marker count as measured)."""
        return bool(self.metadata.get("measured", True))

    def images(self) -> list:
        """The outputs as PIL images."""
        import io

        from PIL import Image

        return [Image.open(io.BytesIO(b)).convert("RGB") for b in self.png]


class RunRecord(BaseModel):
    """One past render in the history."""

    id: str
    created_at: str
    seconds: float
    images: int
    sketch_hash: str | None = None
    metadata: dict[str, Any]
    starred: bool = False  # kept as a favourite (History's star); not part of the recipe


class SegmentResult(BaseModel):
    """SAM2's answer for point and/or box prompts: the mask as a PNG (white inside) and what it covers."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    mask_png: bytes = Field(repr=False)
    score: float
    area: float
    bbox: list[int]
    polygons: list[list[list[int]]] = Field(default_factory=list)

    def mask(self):
        """The mask as a bool H×W array."""
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(self.mask_png)) as im:
            return np.asarray(im.convert("L")) > 127


class ControlPreview(BaseModel):
    """What a ControlNet type follows in an image, made on the engine as a render makes it: the map as a PNG and
    the preprocessor used (what the render records as its `edge_mode`)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    png: bytes = Field(repr=False)
    used: str
    width: int
    height: int

    def image(self):
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as im:
            return im.convert("RGB")


class DescribedTerm(BaseModel):
    """One candidate word of `styles.describe`: how close CLIP puts it to the image, and whether the prompt says it."""

    term: str
    score: float  # CLIP cosine between the image and the term's phrase ("a photo of a chair"), in [-1, 1]
    confidence: float  # its share among its category's candidates (a softmax at CLIP's logit scale), 0–1
    source: Literal["vocabulary", "library"] = "vocabulary"  # library: a tag of one of the library's styles
    picked: bool = False  # the prompt says it


class Description(BaseModel):
    """A prompt written from an image (`styles.describe`), and the scored words it was chosen from."""

    prompt: str
    # object, medium, style, material, colour → the top candidates, best first (the picked ones always among them)
    terms: dict[str, list[DescribedTerm]]
    model: str  # the CLIP that scored them: "base CLIP" or "tuned: NAME (scenario)"
    seconds: float


# What `catalog.inspect` answers with, at most: sample rows, failing rows' reasons, raw rows, characters a cell shows
MAX_SAMPLE = 1000
MAX_SHEET_ERRORS = 5
HEAD_ROWS = 8
MAX_TEXT_SHOWN = 4000  # a description's characters in the sample (engine/catalog/sheets.py MAX_TEXT: longer fails)
MAX_CELL_SHOWN = 300  # a cell's characters among the first rows
SheetLanguage = Literal["en", "de", "fr", "it", "es", "nl"]
# A column a call names for a role: a header of the sheet (at most Excel's longest cell); "" for none (row numbers
# for the id); None: the guess
ColumnChoice = Annotated[str, Field(max_length=32_767)] | None


class SheetMapping(BaseModel):
    """Which column holds each role (None: no column): the description (`text`), the product id (else row
    numbers), an optional name and category."""

    text: str | None = None
    id: str | None = None
    name: str | None = None
    category: str | None = None


class SheetItem(BaseModel):
    """One row as a run reads it: its line in the spreadsheet (the header is line 1), its id, its description (cut
    at MAX_TEXT_SHOWN characters) and, for a row that will fail, why."""

    row: int
    id: str
    text: Annotated[str, Field(max_length=MAX_TEXT_SHOWN + 1)]
    error: str | None = None


class SheetInfo(BaseModel):
    """A product sheet as read under a mapping: its columns, the guess from its headers and the mapping in force,
    its first rows as the run would read them (`sample`), how many rows will fail and the first reasons, the
    language its descriptions are in, and its first rows as they stand (`head`, cells cut at MAX_CELL_SHOWN)."""

    name: str
    columns: Annotated[list[str], Field(max_length=1000)]  # engine/catalog/sheets.py MAX_COLUMNS
    rows: int
    guess: SheetMapping
    mapping: SheetMapping
    sample: Annotated[list[SheetItem], Field(max_length=MAX_SAMPLE)] = Field(default_factory=list)
    failing: int = 0
    errors: Annotated[list[str], Field(max_length=MAX_SHEET_ERRORS)] = Field(default_factory=list)
    language: SheetLanguage = "en"
    head: Annotated[list[dict[str, str]], Field(max_length=HEAD_ROWS)] = Field(default_factory=list)


# ---- the services ---------------------------------------------------------------------------------------------


class Renders(ABC):
    """Renders, and the analysis of images (SAM2 masks, CLIP concepts)."""

    @abstractmethod
    @operation
    def submit(self, request: GenerateRequest) -> JobInfo:
        """Queue a render; its job's result names the run (`run_id`) and, for a kept render, the job that measures
        it (`measure_job`): the render ends when its images are kept, the numbers follow."""

    @abstractmethod
    @operation
    def result(self, job_id: str) -> RenderResult:
        """The finished render of a job (measured or not yet: see `RenderResult.measure_job`)."""

    @abstractmethod
    @operation
    def upscale(self, run_id: str, index: Index = 0, factor: Literal[2, 4] = 4, refine: bool = False) -> JobInfo:
        """Upscale one output of a past run ×2 or ×4 (an ESRGAN-class model, Real-ESRGAN x4 by default, run in tiles;
        ×2 is ×4 then Lanczos down) into a new run linked to it: its metadata's `upscale` says the factor, the model
        and the source (`run_id`, `index`). With `refine`, the upscaled image is then refined by image-to-image at a
        low strength (the tile ControlNet where the engine has it), up to 1024 px on the short side. Its job's result
        names the new run (`run_id`; `renders.result` reads it). A result over the engine's pixel limit: one line."""

    @abstractmethod
    @operation
    def models(self) -> dict[str, Any]:
        """The designer's checkpoints and LoRAs on this engine (name, MB), the ControlNet types with what each
        expects, and the folders to copy files into."""

    @abstractmethod
    @operation
    def add_model(self, kind: Literal["checkpoint", "lora"], name: ModelName, data: bytes) -> dict[str, Any]:
        """Keep a `.safetensors` checkpoint or LoRA on the engine under `name` (the same file again is a no-op;
        another file by that name is refused). Renders then name it."""

    @abstractmethod
    @operation
    def upload_begin(
        self, kind: Literal["checkpoint", "lora"], name: ModelName, sha256: Sha256, size: ByteCount
    ) -> UploadStatus:
        """Start or resume adding a big model file in parts (each call a few MB, so no request outlasts a tunnel's
        limits): the file is named by its SHA-256. The answer says how many bytes the engine holds already (send
        the rest with `upload_part`), or that the model is on the engine already (the same file under this name, or
        under another name of that kind: kept once): then nothing is sent. The name and the size are checked here,
        before any byte is sent, as `add_model` checks them."""

    @abstractmethod
    @operation
    def upload_part(self, sha256: Sha256, offset: ByteCount, chunk: bytes) -> UploadStatus:
        """The next bytes of a begun upload, at `offset`: exactly where the engine's copy ends (otherwise refused,
        saying where it ends), at most `max_part` bytes, never past the announced size."""

    @abstractmethod
    @operation
    def upload_finish(self, kind: Literal["checkpoint", "lora"], name: ModelName, sha256: Sha256) -> dict[str, Any]:
        """The upload is whole: its SHA-256 is checked, then it is added as `add_model` adds a file (safetensors
        only, the size limit, the name rules; the same answer)."""

    @abstractmethod
    @operation
    def control_preview(
        self,
        image: bytes,
        control: ControlName = DEFAULT_CONTROL,
        edge_mode: EdgeMode = "auto",
        canny_low: Annotated[int, Field(ge=0, le=255)] = 50,
        canny_high: Annotated[int, Field(ge=0, le=255)] = 150,
    ) -> ControlPreview:
        """What the ControlNet `control` will follow in `image` (a sketch or photo), made by its preprocessor on the
        engine (a model-backed one runs where the models are), at most 512 px on the long side: the Studio's
        preview in both modes."""

    @abstractmethod
    @operation(one_of=("points", "box"))
    def segment(
        self,
        image: bytes,
        points: Annotated[list[Annotated[list[Coordinate], Field(min_length=2, max_length=2)]], Field(max_length=64)]
        | None = None,  # at most engine.masks.MAX_POINTS
        labels: Annotated[list[Annotated[int, Field(ge=0, le=1)]], Field(max_length=64)] | None = None,
        box: Annotated[list[Coordinate], Field(min_length=4, max_length=4)] | None = None,
    ) -> SegmentResult:
        """SAM2: the object at the points (label 1 inside, 0 outside) and/or in the box, in image pixels."""

    @abstractmethod
    @operation
    def analyze(
        self,
        image: bytes,
        concepts: list[str] | None = None,
        k: Annotated[int, Field(ge=1, le=50)] = 5,
        segment: bool = True,
        grid: Annotated[int, Field(ge=1, le=32)] = 8,
        threshold: Annotated[float, Field(ge=0, le=1.5)] = 0.5,
    ) -> dict[str, Any]:
        """CLIP zero-shot concepts of an image and, with `segment`, SAM2's automatic masks (RLE) with theirs: a
        grid × grid of point prompts, masks scoring under `threshold` dropped, near-duplicates merged."""


class Styles(ABC):
    """The style library."""

    @abstractmethod
    @operation
    def list(self, include_hidden: bool = False) -> list[StyleInfo]: ...

    @abstractmethod
    @operation
    def add(self, image: bytes, name: StyleName, description: str = "", tags: list[str] | None = None) -> StyleInfo: ...

    @abstractmethod
    @operation
    def remove(self, name_or_id: str) -> StyleInfo: ...

    @abstractmethod
    @operation
    def hide(self, name_or_id: str, hidden: bool = True) -> StyleInfo: ...

    @abstractmethod
    @operation(one_of=("text", "image"))
    def search(self, text: str | None = None, image: bytes | None = None, k: TopK = 3) -> list[StyleHit]:
        """Styles ranked by CLIP similarity to words or to an image."""

    @abstractmethod
    @operation
    def image(self, name_or_id: str, px: Pixels = 0) -> bytes:
        """The style's reference image as PNG; `px` > 0: a JPEG thumbnail no larger than px × px."""

    @abstractmethod
    @operation
    def describe(
        self,
        image: bytes,
        k: Annotated[int, Field(ge=1, le=20)] = 5,
        threshold: Annotated[float, Field(ge=0, le=1)] = 0.15,
        max_chars: Annotated[int, Field(ge=20, le=MAX_PROMPT)] = 200,
    ) -> Description:
        """A prompt for an image (a sketch, a photo, a render), written from the CLIP similarity of the image to the
        studio's vocabulary of objects, mediums, styles, materials and colour palettes and to the library's style
        tags: "a chair, pencil sketch, bauhaus style, walnut wood, sage green palette". A category's best terms go in
        when their share among its candidates reaches `threshold` (the object and the medium always), the prompt at
        most `max_chars` long; `terms` holds each category's top `k` with their scores."""


class History(ABC):
    """Past renders, their files, search by meaning, and the Dashboard's per-image rows."""

    @abstractmethod
    @operation
    def list(
        self,
        limit: Limit = 50,
        offset: Offset = 0,
        batch: str | None = None,
        starred: bool = False,
        text: Annotated[str, Field(max_length=500)] = "",
        style: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; with `batch`, every run of that batch, oldest first. Filters: `starred` runs only, prompts
        holding every word of `text` (case aside), runs that used the style named `style`."""

    @abstractmethod
    @operation
    def get(self, run_id: str) -> RunRecord: ...

    @abstractmethod
    @operation
    def star(self, run_id: str, starred: bool = True) -> RunRecord:
        """Keep a run as a favourite (`starred` False: no longer); the run as it now is."""

    @abstractmethod
    @operation
    def facets(self) -> dict[str, list[str]]:
        """What the history can be filtered by: `batches` (its run sets' batches, newest first) and `styles` (the
        names of the styles its runs used)."""

    @abstractmethod
    @operation
    def sketch(self, run_id: str) -> bytes | None:
        """The sketch the run was made from (PNG), None for text-to-image."""

    @abstractmethod
    @operation
    def image(self, run_id: str, index: Index = 0, px: Pixels = 0) -> bytes:
        """An output as saved (PNG, metadata inside); `px` > 0: a JPEG thumbnail no larger than px × px."""

    @abstractmethod
    @operation
    def thumbnails(
        self,
        refs: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=500)],
        px: Annotated[int, Field(ge=16, le=512)] = 96,
    ) -> dict[str, bytes]:
        """Small JPEGs (at most px × px) of many outputs at once, by "RUN_ID#INDEX", keyed by that canonical form:
        each output once however it is spelled (`RUN#00` is `RUN#0`), at most 500 refs a call (more: one-line 422)
        and 32 MB of JPEG a reply (the refs past that are left out: ask for them again). Refs that are gone or not
        of that form are left out."""

    @abstractmethod
    @operation(one_of=("text", "like_run"))
    def search(
        self, text: str | None = None, like_run: str | None = None, like_index: Index = 0, k: TopK = 12
    ) -> list[dict[str, Any]]:
        """Past outputs ranked by CLIP similarity to words, or to one output ("more like this")."""

    @abstractmethod
    @operation
    def rows(self, limit: Limit = 5000) -> list[dict[str, Any]]:
        """One row per output image: its set, source, style, settings and metrics (the Dashboard's table)."""

    @abstractmethod
    @operation
    def remeasure(
        self,
        run_ids: Annotated[
            list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")]],
            Field(min_length=1, max_length=10_000),
        ]
        | None = None,
    ) -> JobInfo:
        """Measure past runs again (after a metric or model change) as a "remeasure" job: progress counts runs, a
        cancel stops it between two runs, and its result says how many were measured (`remeasured`) and how many
        were gone by then (`missing`). `run_ids`: at most 10000, each measured once however often it is named (a run
        not in the history: 404); None: every run. The same request while its job runs is that job."""


class Sweeps(ABC):
    """One sketch and prompt over a grid of structure × style strength (× steps × ControlNet types)."""

    @abstractmethod
    @operation
    def start(
        self,
        request: GenerateRequest,
        structures: StructureAxis,
        styles: StyleAxis,
        steps: StepsAxis | None = None,
        controls: Annotated[list[ControlName], Field(max_length=8)] | None = None,
        lora_weights: Annotated[list[Annotated[float, Field(ge=-2, le=2)]], Field(max_length=8)] | None = None,
    ) -> JobInfo:
        """Queue a sweep; its job's result names it (`batch`). `controls`: the ControlNet types as one more axis;
        `lora_weights`: the request's first LoRA's weight as another."""

    @abstractmethod
    @operation
    def get(self, batch: Name) -> dict[str, Any]:
        """A sweep: batch, prompt, style, its cells (settings, run ids, numbers) and the run sets they make."""

    @abstractmethod
    @operation
    def list(self) -> list[dict[str, Any]]:
        """Past sweeps, newest first."""

    @abstractmethod
    @operation
    def file(self, batch: Name, name: Literal["contact.png", "table.csv", "sweep.json"]) -> bytes: ...


class Arena(ABC):
    """Blind A/B votes between two run sets (or two retrieval models)."""

    @abstractmethod
    @operation
    def contests(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    @operation
    def contest(self, contest_id: str) -> dict[str, Any]: ...

    @abstractmethod
    @operation
    def create(self, a_set: str, b_set: str) -> dict[str, Any]:
        """A contest over the pairs of two run sets that share a sketch, prompt and seed."""

    @abstractmethod
    @operation
    def render(self, inputs_set: str, settings: ArenaSettings) -> JobInfo:
        """Render a run set's inputs with setting A and with setting B; the job's result names the contest."""

    @abstractmethod
    @operation
    def retrieval_contest(
        self, adapter: Name, queries: Annotated[list[str], Field(max_length=1000)], k: TopK = 4
    ) -> dict[str, Any]:
        """For each query, the base CLIP's top k styles against a tuned adapter's."""

    @abstractmethod
    @operation
    def pairs(self, contest_id: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    @operation
    def next_pair(self, contest_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    @operation
    def vote(
        self,
        contest_id: str,
        position: Annotated[int, Field(ge=0, le=1_000_000)],
        choice: Literal["left", "right", "tie"],
    ) -> str: ...

    @abstractmethod
    @operation
    def undo(self, contest_id: str) -> int | None: ...

    @abstractmethod
    @operation
    def stats(self, contest_id: str) -> dict[str, Any]: ...


class Catalog(ABC):
    """Product sheets → product photos; product photos → attributes and listings; similar products."""

    @abstractmethod
    @operation
    def inspect(
        self,
        sheet: bytes,
        name: SheetName,
        text_column: ColumnChoice = None,
        id_column: ColumnChoice = None,
        name_column: ColumnChoice = None,
        category_column: ColumnChoice = None,
        sample_rows: Annotated[int, Field(ge=0, le=MAX_SAMPLE)] = 20,
    ) -> SheetInfo:
        """Read a sheet (.xlsx or .csv) as a run would: its columns, the mapping in force, its first `sample_rows`
        rows as items, the rows that will fail, its language and its first rows as they stand. A column left None is
        guessed from the headers (the name and category only while the description column is guessed too); ""
        names none. No description column given or guessed: one BadInput line; `text_column=""`: the sheet without
        items (the columns and the guess, to choose from)."""

    @abstractmethod
    @operation
    def preview(
        self, sheet: bytes, name: SheetName, options: CatalogOptions, n: Annotated[int, Field(ge=1, le=20)] = 3
    ) -> list[dict[str, Any]]:
        """Translation, attributes and prompt of the first rows, rendering and writing nothing."""

    @abstractmethod
    @operation
    def start(self, sheet: bytes, name: SheetName, options: CatalogOptions) -> JobInfo:
        """Start a catalog run; its job's result names the run (`run`). The run's name comes from the sheet and
        the options, so starting the same again resumes it (nothing is rendered twice)."""

    @abstractmethod
    @operation
    def resume(self, run: Name) -> JobInfo: ...

    @abstractmethod
    @operation
    def runs(self) -> list[dict[str, Any]]:
        """Past runs, newest first, with how far each got."""

    @abstractmethod
    @operation
    def run(self, run: Name) -> dict[str, Any]:
        """A run: what it was asked (run.json), its summary and one result row per sheet row."""

    @abstractmethod
    @operation
    def file(self, run: Name, name: Literal["results.csv", "results.xlsx", "report.md"]) -> bytes: ...

    @abstractmethod
    @operation
    def image(self, run: Name, item: str, px: Pixels = 0) -> bytes:
        """A row's render (by its product id); `px` > 0: a JPEG thumbnail."""

    @abstractmethod
    @operation
    def tag(
        self,
        photos: bytes,
        vocabulary: str | None = None,
        llm: Literal["local", "server", "none"] = "none",
        llm_url: str | None = None,
        llm_model: str = "local-model",
    ) -> JobInfo:
        """Tag a zip of product photos with the vocabulary's attributes (and listings from an LLM). The vocabulary is
        YAML text; None: the shipped apparel one."""

    @abstractmethod
    @operation
    def tag_runs(self) -> list[dict[str, Any]]:
        """Finished tagging runs, newest first: name, photos, skipped."""

    @abstractmethod
    @operation
    def tagged(self, run: Name) -> dict[str, Any]:
        """A tagging run's table: rows, columns, skipped files."""

    @abstractmethod
    @operation
    def tagged_file(self, run: Name, name: Literal["results.csv", "results.xlsx"]) -> bytes: ...

    @abstractmethod
    @operation
    def product_image(self, key: Annotated[str, Field(pattern=r"^[^/]{0,200}\.jpg$")], px: Pixels = 96) -> bytes:
        """A tagged product photo (a JPEG), by the `thumbnail` key of its row or search hit."""

    @abstractmethod
    @operation(one_of=("image", "text"))
    def similar(self, image: bytes | None = None, text: str | None = None, k: TopK = 8) -> list[dict[str, Any]]:
        """Tagged products ranked by CLIP similarity to a photo or to words."""


class PrepareOptions(BaseModel):
    """How a dataset is split and stored, and who cleans its captions (the defaults suit most sets)."""

    model_config = ConfigDict(extra="forbid")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0  # the split's seed
    val: Annotated[float, Field(ge=0, le=0.5)] = 0.1  # share of the validation split
    test: Annotated[float, Field(ge=0, le=0.5)] = 0.1  # share of the test split
    mini_train: Annotated[int, Field(ge=0, le=1_000_000)] = 1000  # samples in the mini_train subset of train
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 1000  # samples per shard
    max_side: Annotated[int, Field(ge=64, le=4096)] = 512  # larger images are stored downscaled to this side
    overwrite: bool = False  # replace the dataset's shards when they hold other data
    llm: Literal["none", "local", "server"] = "none"  # who cleans the captions: nobody, the local LLM, a server
    llm_url: Annotated[str, Field(max_length=500)] | None = None  # the OpenAI-compatible server (llm="server")
    llm_model: Annotated[str, Field(max_length=200)] = "local-model"  # the model name to ask that server for


class TrainOptions(BaseModel):
    """Training settings past the scenario, epochs, batch size and learning rate (the defaults suit most sets)."""

    model_config = ConfigDict(extra="forbid")
    min_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 100  # at least this many optimizer steps
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.01
    accumulate: Annotated[int, Field(ge=1, le=1024)] = 1  # micro-batches per optimizer step
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.1  # share of the steps spent warming up
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    lora_r: Annotated[int, Field(ge=1, le=256)] = 8
    lora_alpha: Annotated[int, Field(ge=1, le=1024)] = 16
    split: Literal["train", "mini_train"] = "train"  # what it trains on
    val_split: Literal["val", "test", "none"] = "val"  # whose recall picks the kept epoch (none: the last)
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"  # mixed precision on CUDA
    workers: Annotated[int, Field(ge=0, le=32)] | None = None  # data loader workers (None: the engine picks)
    resume: bool = True  # continue from the adapter's latest checkpoint (False: start over)


Split = Literal["train", "val", "test", "mini_train"]
Ks = Annotated[list[Annotated[int, Field(ge=1, le=1000)]], Field(min_length=1, max_length=10)]


class Tuning(ABC):
    """Teach the retrieval CLIP your words: data, LoRA training, recall, and switching retrieval."""

    @abstractmethod
    @operation(needs=("source", {"library": (), "upload": ("images", "captions"), "tagging": ("tagging_run",)}))
    def prepare(
        self,
        name: str,
        source: Literal["library", "upload", "tagging"],
        images: bytes | None = None,
        captions: bytes | None = None,
        tagging_run: Name | None = None,
        options: PrepareOptions | None = None,
    ) -> JobInfo:
        """Image–text pairs into shards: from the style library, an uploaded zip of images + captions CSV (file,
        caption[, label]), or a tagging run; the job's result names the dataset. Preparing a name again resumes."""

    @abstractmethod
    @operation
    def datasets(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    @operation
    def train(
        self,
        dataset: Name,
        name: str,
        scenario: str,
        epochs: Annotated[int, Field(ge=1, le=1000)] = 5,
        batch_size: Annotated[int, Field(ge=2, le=4096)] = 32,
        lr: Annotated[float, Field(gt=0, le=1)] = 1e-3,
        options: TrainOptions | None = None,
    ) -> JobInfo:
        """Train an adapter (and measure its recall): at least the engine's minimum of optimizer steps, keeping the
        epoch with the best validation recall; resumes from its last checkpoint when started again."""

    @abstractmethod
    @operation
    def evaluate(
        self, adapter: Name, dataset: Name | None = None, split: Split = "test", ks: Ks | None = None
    ) -> JobInfo:
        """Recall@k of the base and the adapter on a dataset's split (default: the test split of the dataset it was
        trained on; k 1, 5 and 10)."""

    @abstractmethod
    @operation
    def adapters(self) -> list[dict[str, Any]]:
        """Trained adapters with their recall, base → tuned."""

    @abstractmethod
    @operation
    def use(self, adapter: Name | None) -> JobInfo:
        """Switch retrieval to an adapter (None: the base CLIP); the job re-embeds what must be."""


class Jobs(ABC):
    """Every long piece of work, whatever its kind."""

    @abstractmethod
    @operation
    def get(self, job_id: str) -> JobInfo: ...

    @abstractmethod
    @operation
    def wait(self, job_id: str, timeout: Annotated[float, Field(ge=0, le=20)] = 10.0) -> JobInfo:
        """The job as soon as it ends or moves (a step, a place in the queue), or as it is after `timeout` seconds
        (at most 20: tunnels cut longer waits)."""

    @abstractmethod
    @operation
    def cancel(self, job_id: str) -> JobInfo:
        """A queued job is cancelled at once; a running one stops at its next step."""

    @abstractmethod
    @operation
    def list(self, active: bool = True, limit: Annotated[int, Field(ge=1, le=1000)] = 50) -> list[JobInfo]: ...

    @abstractmethod
    @operation
    def room(self) -> None:
        """Nothing when a job this caller queued now would be taken; a one-line QueueFull (429) when its share of
        the queue, or the whole queue, is taken. The server asks before it reads a body that would queue a job."""


class About(ABC):
    """What this engine is and what it takes."""

    @abstractmethod
    @operation
    def capabilities(self) -> Capabilities:
        """Its device, models and features, its limits, and how its job store is doing (`store_error`)."""

    @abstractmethod
    @operation
    def limits(self) -> Limits:
        """The bounds it holds every caller to: upload and image sizes, prompts, steps, its queue."""

    @abstractmethod
    @operation
    def doctor(self) -> DoctorReport:
        """Every model its settings name: found or missing on its machine (hub cache or folder), safetensors or
        pickle, size on disk, what needs it, and the command that fetches it. Loads nothing, asks no network."""


SERVICES: dict[str, type] = {
    "renders": Renders,
    "styles": Styles,
    "history": History,
    "sweeps": Sweeps,
    "arena": Arena,
    "catalog": Catalog,
    "tuning": Tuning,
    "jobs": Jobs,
    "about": About,
}


def operations(service: type) -> dict[str, Callable]:
    """The interface methods of a service class, by name."""
    return {
        name: fn
        for name, fn in inspect.getmembers(service, inspect.isfunction)
        if getattr(fn, "__engine_operation__", False)
    }


class Engine(ABC):
    """What a caller can ask of an engine, local or remote: the services, and what the engine is."""

    renders: Renders
    styles: Styles
    history: History
    sweeps: Sweeps
    arena: Arena
    catalog: Catalog
    tuning: Tuning
    jobs: Jobs
    about: About

    @abstractmethod
    def start(self) -> None:
        """Get ready to serve (a local engine starts its job workers; also done by its first job)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of what it holds (a local engine's job workers and render workers, a remote one's connections);
        `start` starts the job workers again."""

    def capabilities(self) -> Capabilities:
        """What this engine is and can do (`about.capabilities`)."""
        return self.about.capabilities()

    # ---- conveniences over the services (the same for every engine) --------------------------------------
    def follow(
        self,
        job: JobInfo,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        every: float | None = None,
    ) -> JobInfo:
        """Wait for a job to end, reporting its progress and passing a cancel on. Raises the job's error.
        Each wait returns at the job's next step, so `every` only bounds how late a cancel is noticed."""
        if every is None:
            every = 0.5 if cancel is not None else 15.0
        cancelled = False
        last = None
        while True:
            if not job.done and cancel is not None and cancel.is_set() and not cancelled:
                job = self.jobs.cancel(job.id)
                cancelled = True
            seen = job.progress
            if on_progress and seen is not None and (seen.stage, seen.step, seen.total) != last:
                on_progress(seen)  # the last step too: a job that ends between two waits still shows where it got
                last = (seen.stage, seen.step, seen.total)
            if job.done:
                return raise_for(job)
            job = self.jobs.wait(job.id, timeout=every)

    def generate(
        self,
        request: GenerateRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RenderResult:
        """Render and wait, metrics included: the CLI's and the tests' way (pages follow the jobs instead)."""
        job = self.follow(self.renders.submit(request), on_progress, cancel)
        return self.measured(job.id)

    def measured(self, render_job: str) -> RenderResult:
        """A render job's result once its images are measured: waits for its measure job, if it has one."""
        result = self.renders.result(render_job)
        if result.measure_job is None or result.measured:
            return result
        self.follow(self.jobs.get(result.measure_job))  # short, and the render is kept already: not cancelled
        return self.renders.result(render_job)


def raise_for(job: JobInfo) -> JobInfo:
    """The job if it is done; its failure as the `EngineError` it was."""
    from .errors import error_class

    if job.state == "cancelled":
        raise Cancelled(job.error or "cancelled")
    if job.state == "failed":
        raise error_class(job.error_kind)(job.error or "the job failed")
    return job
