"""Detected attributes → an LLM-written product listing (title, bullets, description, style, SEO tags).

The attributes come from detection (e.g. image tagging): a value the detector was unsure of is "uncertain" and
never reaches the prompt. The prompt gives the LLM only the certain attributes and forbids claims they do not
support (brand, price, sizes, certifications, materials), so a listing says no more than was seen.

- `listing_messages(attributes, name)` builds the chat (system + user) that asks for exactly one JSON object;
- `parse_listing(reply)` reads and validates it into `Listing`, reusing `llm.py`'s extraction and repair of
  fenced or slightly broken JSON; anything else is `ListingFailed` with one line;
- `ListingWriter` asks any `LLMBackend` (`OpenAIBackend`, `TransformersBackend`) with the retries of
  `AttributeExtractor`, one product at a time (`write`) or several at once (`write_many`);
- `listing_row(listing)` flattens a listing into export columns.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import EngineError

# the generic reply helpers of llm.py, shared on purpose: one JSON extraction and repair for both
from .llm import (
    FENCE,
    LLMBackend,
    as_text,
    ask_until_parsed,
    json_objects,
    load_lenient,
    norm_key,
    one_line,
    repair_json,
)

log = logging.getLogger(__name__)

LISTING_KEYS = ("title", "bullet_points", "description", "style_summary", "seo_tags")
TITLE_MAX_CHARS = 120
BULLETS_MIN, BULLETS_MAX = 3, 5
TAGS_MIN, TAGS_MAX = 3, 15
UNCERTAIN_VALUES = frozenset({"uncertain", "unknown", ""})  # detector values that are no claim at all
MAX_VALUE_CHARS = 300  # one attribute value in the prompt is cut to this
MAX_RETRY_ECHO_CHARS = 2000  # how much of a bad reply the retry chat shows the LLM again


class ListingFailed(EngineError):
    """The LLM's reply held no valid listing, even after retries (or it timed out every time)."""


# ---- listing -------------------------------------------------------------------------------------------------------
_ITEM_MARK = re.compile(r"^\s*(?:[-*•·–—]|\d+[.)])\s+|^\s*[•·]\s*")
_INLINE_BULLET = re.compile(r"\s*[•·]\s*")


def _one_item(value: Any) -> str:
    """One bullet or tag: a string with its bullet mark ("- ", "• ", "1. ") dropped and whitespace collapsed."""
    return " ".join(_ITEM_MARK.sub("", as_text(value)).split())


def _split_bullets(value: Any) -> list[str]:
    """A list as it is; a string split at newlines, or at inline "•" bullets when it is one line."""
    if isinstance(value, str):
        lines = [line for line in value.splitlines() if line.strip()]
        if len(lines) <= 1 and ("•" in value or "·" in value):
            lines = _INLINE_BULLET.split(value)
        value = lines
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be a list of strings")
    return [item for item in (_one_item(v) for v in value) if item]


def _split_tags(value: Any) -> list[str]:
    """A list as it is; a string split at commas, semicolons and newlines. Lower-cased, "#" dropped, deduplicated."""
    if isinstance(value, str):
        value = re.split(r"[,;\n]", value)
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be a list of strings or a comma-separated string")
    tags: list[str] = []
    for item in value:
        tag = _one_item(item).lstrip("#").strip().lower()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


class Listing(BaseModel):
    """One product listing. Values are normalised (whitespace, bullet marks, tag case) before they are checked."""

    model_config = ConfigDict(extra="ignore")

    title: str
    bullet_points: list[str]
    description: str
    style_summary: str = ""
    seo_tags: list[str]

    @field_validator("title", "style_summary", mode="before")
    @classmethod
    def _line(cls, value: Any) -> str:
        return as_text(value)  # one line, whitespace collapsed

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if len(value) > TITLE_MAX_CHARS:
            raise ValueError(f"must be at most {TITLE_MAX_CHARS} characters, got {len(value)}")
        return value

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> str:
        if isinstance(value, str):  # paragraphs stay; runs of spaces and blank lines do not
            lines = [" ".join(line.split()) for line in value.strip().splitlines()]
            text = "\n".join(lines)
            value = re.sub(r"\n{3,}", "\n\n", text)
        else:
            value = as_text(value)
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("bullet_points", mode="before")
    @classmethod
    def _bullets(cls, value: Any) -> list[str]:
        items = _split_bullets(value)
        if not BULLETS_MIN <= len(items) <= BULLETS_MAX:
            raise ValueError(f"needs {BULLETS_MIN} to {BULLETS_MAX} non-empty items, got {len(items)}")
        return items

    @field_validator("seo_tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        tags = _split_tags(value)
        if not TAGS_MIN <= len(tags) <= TAGS_MAX:
            raise ValueError(f"needs {TAGS_MIN} to {TAGS_MAX} distinct tags, got {len(tags)}")
        return tags


# ---- prompt --------------------------------------------------------------------------------------------------------
LISTING_SYSTEM = f"""You write product listings for an online catalog. Answer with exactly one JSON object and \
nothing else: no prose, no markdown, no code fences.
Use exactly these keys:
"title": the product title, at most {TITLE_MAX_CHARS} characters;
"bullet_points": a list of {BULLETS_MIN} to {BULLETS_MAX} short strings, one selling point each;
"description": two to four sentences of product description;
"style_summary": one sentence on the product's style and look;
"seo_tags": a list of {TAGS_MIN} to {TAGS_MAX} lower-case search keywords.
Write only what the given attributes support. Never invent a brand, price, size, certification, material or any \
other claim that the attributes do not state."""

NO_INVENTION = (
    "Use only the information given above. Do not invent claims it does not support: "
    "no brand, price, sizes, certifications or materials that are not given."
)
NO_CERTAIN_ATTRIBUTES = (
    "No attribute was detected with certainty. Keep the listing general and make no specific claims "
    "about colour, material, size, brand or price."
)


def _is_certain(value: Any) -> bool:
    return value is not None and as_text(value).strip().lower() not in UNCERTAIN_VALUES


def certain_attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The attributes whose value is known: "uncertain", "unknown" and empty values are left out; one line each."""
    out: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        label = " ".join(str(key).replace("_", " ").split())
        if label and _is_certain(value):
            out[label] = as_text(value)[:MAX_VALUE_CHARS]
    return out


def listing_messages(attributes: Mapping[str, Any], name: str = "") -> list[dict[str, str]]:
    """The chat (system + user, OpenAI message format) that asks for one listing from the certain attributes only."""
    certain = certain_attributes(attributes)
    name = " ".join((name or "").split())[:MAX_VALUE_CHARS]
    parts: list[str] = []
    if name:
        parts.append(f"Product name: {name}")
    if certain:
        parts.append("Detected attributes:\n" + "\n".join(f"- {k}: {v}" for k, v in certain.items()))
    else:
        parts.append(NO_CERTAIN_ATTRIBUTES)
    parts.append(NO_INVENTION)
    parts.append(
        f"Answer with the JSON object only, with the keys {', '.join(LISTING_KEYS)}, "
        f"{BULLETS_MIN} to {BULLETS_MAX} bullet points and {TAGS_MIN} to {TAGS_MAX} SEO tags."
    )
    return [
        {"role": "system", "content": LISTING_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


# ---- parsing -------------------------------------------------------------------------------------------------------
KEY_ALIASES = {
    "title": "title",
    "product_title": "title",
    "bullet_points": "bullet_points",
    "bulletpoints": "bullet_points",
    "bullets": "bullet_points",
    "description": "description",
    "product_description": "description",
    "style_summary": "style_summary",
    "stylesummary": "style_summary",
    "style": "style_summary",
    "seo_tags": "seo_tags",
    "seotags": "seo_tags",
    "tags": "seo_tags",
    "keywords": "seo_tags",
    "seo_keywords": "seo_tags",
}


def _listing_fields(data: Any) -> dict[str, Any] | None:
    """The listing's keys from a parsed object (keys normalised, aliases mapped, one wrapper level unwrapped)."""
    if not isinstance(data, dict):
        return None
    normalised = {norm_key(k): v for k, v in data.items()}
    if not any(k in KEY_ALIASES for k in normalised):
        nested = [v for v in data.values() if isinstance(v, dict)]  # {"listing": {...}}
        return _listing_fields(nested[0]) if len(nested) == 1 else None
    fields: dict[str, Any] = {}
    for exact in (True, False):  # the exact key wins over an alias of it, unless it is empty
        for key, value in normalised.items():
            target = KEY_ALIASES.get(key)
            if target and (key == target) == exact and fields.get(target) in (None, "", [], {}):
                fields[target] = value
    return fields


def _reason(exc: ValidationError) -> str:
    """A validation error on one line: "bullet_points: needs 3 to 5 non-empty items, got 2; title: ..."."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "listing"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return " ".join("; ".join(parts).split())


def _load(obj: str) -> Any:
    """JSON as written; raw newlines and tabs inside strings are accepted (LLMs write them in long texts)."""
    try:
        return json.loads(obj, strict=False)
    except (ValueError, RecursionError):
        return None


def _load_repaired(obj: str) -> Any:
    """llm.py's lenient reading (Python literal, then repaired JSON), then repaired JSON with raw newlines."""
    data = load_lenient(obj)
    if data is None:
        try:
            data = json.loads(repair_json(obj), strict=False)
        except (ValueError, RecursionError):
            return None
    return data


def parse_listing(reply: str) -> Listing:
    """The `Listing` in an LLM reply: a JSON object, possibly in code fences or between prose, or slightly broken
    (single quotes, trailing commas, bare keys, cut off by the token limit). Raises `ListingFailed` with one line.
    """
    text = FENCE.sub("", reply or "")
    objects = json_objects(text)
    first_error: str | None = None
    candidates = [(obj, True) for obj, closed in objects if closed] + [(obj, False) for obj, _ in objects]
    for obj, strict in candidates:
        data = _load(obj) if strict else _load_repaired(obj)
        fields = _listing_fields(data)
        if fields is None:
            continue
        try:
            return Listing.model_validate(fields)
        except ValidationError as exc:
            first_error = first_error or _reason(exc)
    if not (reply or "").strip():
        raise ListingFailed("the LLM answered with nothing")
    quoted = one_line(reply.strip())
    if first_error:
        raise ListingFailed(f"the listing in the LLM reply is invalid ({first_error}): {quoted}")
    what = "no JSON object with listing keys" if objects else "no JSON object"
    raise ListingFailed(f"{what} in the LLM reply {quoted}")


# ---- writing -------------------------------------------------------------------------------------------------------
@dataclass
class ListingResult:
    listing: Listing
    attempts: int
    raw: str  # the last reply


OnDone = Callable[[Hashable, "ListingResult | ListingFailed", int, int], None]


class ListingWriter:
    """Attributes → `Listing`, asking again (up to `retries` more times) after an invalid reply or a timeout.

    As in `AttributeExtractor`: after an invalid reply the next attempt sees it and the user message
    "Answer with one JSON object only."; after a timeout the same chat is sent again; any other
    `ModelUnavailable` (server down, bad URL, model missing) propagates at once.

    `write_many` runs up to `concurrency` products at once on threads. `OpenAIBackend` is thread-safe (one
    pooled `httpx.Client`), so a server that batches (vLLM, llama.cpp with parallel slots) answers them together.
    `TransformersBackend` is safe to share too but serialises internally (one model, one generation at a time),
    so there concurrency > 1 gains nothing.
    """

    def __init__(self, backend: LLMBackend, retries: int = 2, concurrency: int = 4):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.backend = backend
        self.retries = retries
        self.concurrency = concurrency

    def write(self, attributes: Mapping[str, Any], name: str = "") -> ListingResult:
        listing, attempt, raw = ask_until_parsed(
            self.backend,
            listing_messages(attributes, name),
            parse_listing,
            ListingFailed,
            self.retries,
            echo_chars=MAX_RETRY_ECHO_CHARS,
        )
        return ListingResult(listing=listing, attempts=attempt, raw=raw)

    def write_many(
        self,
        items: list[tuple[Hashable, Mapping[str, Any], str]],
        on_done: OnDone | None = None,
    ) -> dict[Hashable, ListingResult | ListingFailed]:
        """Listings for `(key, attributes, name)` items, up to `concurrency` at a time, keyed like the items (in
        their order). A product's `ListingFailed` is its value; `on_done(key, result_or_error, done_count, total)`
        is called in the calling thread as each finishes. A `ModelUnavailable` (server down) or an exception from
        `on_done` (e.g. `Cancelled`) cancels the products not yet started and is raised; requests already sent are
        left to end on their own.
        """
        keys = [key for key, _, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("write_many needs distinct keys")
        total = len(items)
        results: dict[Hashable, ListingResult | ListingFailed] = {}
        if not total:
            return results
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, total), thread_name_prefix="listing")
        try:
            pending: dict[Future, Hashable] = {
                pool.submit(self.write, attributes, name): key for key, attributes, name in items
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    try:
                        outcome: ListingResult | ListingFailed = future.result()
                    except ListingFailed as exc:
                        outcome = exc
                    results[key] = outcome
                    if on_done is not None:
                        on_done(key, outcome, len(results), total)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return {key: results[key] for key in keys}


# ---- export --------------------------------------------------------------------------------------------------------
def listing_row(listing: Listing | None) -> dict[str, str]:
    """Flat export columns: title, bullet_points (" | "), description, style_summary, seo_tags (", ")."""
    if listing is None:
        return dict.fromkeys(LISTING_KEYS, "")
    return {
        "title": listing.title,
        "bullet_points": " | ".join(listing.bullet_points),
        "description": listing.description,
        "style_summary": listing.style_summary,
        "seo_tags": ", ".join(listing.seo_tags),
    }


__all__ = [
    "LISTING_KEYS",
    "Listing",
    "ListingFailed",
    "ListingResult",
    "ListingWriter",
    "certain_attributes",
    "listing_messages",
    "listing_row",
    "parse_listing",
]
