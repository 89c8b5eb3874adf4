"""Product description → structured attributes with an LLM, robust to the ways LLMs answer.

The seed notebook asked Phi-3-mini (greedy) for one JSON object with the keys product_type, key_features,
color_material and design, and fell back to regex extraction when the JSON did not parse. This module keeps
that contract and makes each step explicit:

- `extraction_messages(text)` builds the chat (system + user) that asks for exactly one JSON object;
- an `LLMBackend` answers it: `OpenAIBackend` (any OpenAI-compatible server: LM Studio, Ollama, vLLM) or
  `TransformersBackend` (a local causal LM through `from_pretrained`);
- `parse_attributes(reply)` turns the reply into `Attributes` and says how: "json", "repaired" or "regex";
- `AttributeExtractor` ties them together with retries, and fails with one line (`ExtractionFailed`).

`build_tiny_causal_lm(folder)` writes a random-weight causal LM in the real repo's layout, offline, in well under
a second: its output is gibberish, which is exactly what the failure path needs for tests and demos.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import BadInput, EngineError, ModelUnavailable

log = logging.getLogger(__name__)

DEFAULT_LLM_MODEL = "microsoft/Phi-3-mini-4k-instruct"
MAX_TEXT_CHARS = 6000  # a description longer than this is cut: the 4k-token context must hold the answer too
RETRY_MESSAGE = "Answer with one JSON object only."
QUOTE_CHARS = 80  # how much of a bad reply an error message quotes
MAX_REPLY_BYTES = 1_000_000  # an HTTP answer over this (1 MB) is refused while it streams in: a reply is a few KB
MAX_REPLY_CHARS = 100_000  # chat content longer than this is cut before parsing
ERROR_BODY_BYTES = 64_000  # of an error answer (not 2xx) only this much is read: its message is at the start


class ExtractionFailed(EngineError):
    """The LLM's reply held no usable attributes (no non-empty product_type), even after retries."""


class LLMTimeout(ModelUnavailable):
    """The LLM did not answer in time; worth a retry, unlike a server that is down."""


def one_line(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters and quoted so that newlines stay on one line (umlauts stay as they are)."""
    cut = text[:limit]
    return json.dumps(cut, ensure_ascii=False) + ("…" if len(text) > limit else "")


# ---- attributes ----------------------------------------------------------------------------------------------------
def as_text(value: Any) -> str:
    """An LLM's value as one string: lists joined with ", ", dicts as "key: value", None as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(s for s in (as_text(v) for v in value) if s)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {s}" if s else str(k) for k, s in ((k, as_text(v)) for k, v in value.items()))
    return " ".join(str(value).split())  # collapse whitespace and newlines: every field is one line


class Attributes(BaseModel):
    """What the catalog knows about one product; the four prompt keys are the seed notebook's."""

    model_config = ConfigDict(extra="ignore")

    product_type: str
    key_features: str = ""
    color_material: str = ""
    design: str = ""
    name: str = ""
    category: str = ""
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("key_features", "color_material", "design", "name", "category", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return as_text(value)

    @field_validator("product_type", mode="before")
    @classmethod
    def _product_type(cls, value: Any) -> str:
        text = as_text(value)
        if not text:
            raise ValueError("product_type must not be empty")
        return text

    @field_validator("extra", mode="before")
    @classmethod
    def _extra(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("extra must be a mapping")
        return {str(k).strip(): as_text(v) for k, v in value.items() if str(k).strip()}

    def as_prompt_fields(self) -> dict[str, str]:
        """The named fields, for `template.format(**fields)`; `extra` stays out so the keys never vary."""
        return {
            "product_type": self.product_type,
            "key_features": self.key_features,
            "color_material": self.color_material,
            "design": self.design,
            "name": self.name,
            "category": self.category,
        }

    def fields(self) -> dict[str, str]:
        """Alias of `as_prompt_fields`."""
        return self.as_prompt_fields()


# ---- prompt --------------------------------------------------------------------------------------------------------
EXTRACTION_SYSTEM = """You extract product attributes for a catalog. Read the product description and answer with \
exactly one JSON object and nothing else: no prose, no markdown, no code fences.
Use exactly these keys, each with a short string value in English:
"product_type": what the product is, in a few words (for example "hooded rain jacket"); never empty.
"key_features": the main features, comma-separated.
"color_material": the colours and materials, comma-separated.
"design": the style, shape and look, in a few words.
Use "" for a key the description does not mention. Do not invent details."""

EXAMPLE_REPLY = (
    '{"product_type": "hooded rain jacket", "key_features": "waterproof, zip, two pockets", '
    '"color_material": "navy blue, recycled polyester", "design": "minimal, slim fit"}'
)


def extraction_messages(text: str) -> list[dict[str, str]]:
    """The chat that asks for the attributes of `text` (system + user), in the OpenAI message format."""
    text = (text or "").strip()
    if not text:
        raise BadInput("the product description is empty", fix="give each row a description")
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
    return [
        {"role": "system", "content": EXTRACTION_SYSTEM},
        {"role": "user", "content": f"Product description:\n{text}\n\nAnswer with the JSON object only."},
    ]


# ---- parsing -------------------------------------------------------------------------------------------------------
FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*")

KEY_ALIASES = {
    "product_type": "product_type",
    "producttype": "product_type",
    "type": "product_type",
    "product": "product_type",
    "item": "product_type",
    "key_features": "key_features",
    "keyfeatures": "key_features",
    "features": "key_features",
    "color_material": "color_material",
    "colour_material": "color_material",
    "color_and_material": "color_material",
    "colour_and_material": "color_material",
    "color_materials": "color_material",
    "colors_materials": "color_material",
    "color": "color_material",
    "colour": "color_material",
    "colors": "color_material",
    "colours": "color_material",
    "material": "color_material",
    "materials": "color_material",
    "design": "design",
    "style": "design",
    "name": "name",
    "product_name": "name",
    "title": "name",
    "category": "category",
}


def norm_key(key: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(key).strip().lower()).strip("_")


def _attributes_from_dict(data: Any) -> Attributes | None:
    """`Attributes` from a parsed object (keys normalised, aliases merged, unknown keys kept in `extra`)."""
    try:
        return _attributes_from_object(data)
    except RecursionError:  # nested deeper than the stack allows (json.loads reads ~1000 levels): nothing usable
        return None


def _attributes_from_object(data: Any) -> Attributes | None:
    if not isinstance(data, dict):
        return None
    normalised = {norm_key(k): v for k, v in data.items()}
    if not any(KEY_ALIASES.get(k) == "product_type" for k in normalised):
        # {"attributes": {...}} or {"product": {...}}: unwrap one level when exactly one value is an object
        nested = [v for v in data.values() if isinstance(v, dict)]
        if len(nested) == 1:
            return _attributes_from_object(nested[0])
    fields: dict[str, list[str]] = {}
    extra: dict[str, str] = {}
    for key, value in normalised.items():
        target = KEY_ALIASES.get(key)
        text = as_text(value)
        if target is None:
            if key and text and key != "extra":
                extra[key] = text
            elif key == "extra" and isinstance(value, dict):
                extra.update({norm_key(k): as_text(v) for k, v in value.items() if as_text(v)})
            continue
        if text and text not in fields.setdefault(target, []):
            fields[target].append(text)
    try:
        return Attributes(**{k: ", ".join(v) for k, v in fields.items()}, extra=extra)
    except ValidationError:
        return None


def json_objects(text: str) -> list[tuple[str, bool]]:
    """Every top-level `{...}` in `text`, in order, with whether the reply closed it; strings may hold braces.

    An object the reply never closes (the LLM ran out of tokens) is returned closed, flagged False: the open
    string, arrays and objects are ended, so "repaired" parsing can still read the keys it did write.
    """
    found: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        start = text.find("{", i)
        if start < 0:
            break
        stack: list[str] = []
        quote: str | None = None
        j = start
        while j < n:
            c = text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                # an apostrophe inside a bare word (don't, men's) opens no string
                if c == "'" and j > 0 and text[j - 1].isalnum():
                    pass
                else:
                    quote = c
            elif c in "{[":
                stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if stack and stack[-1] == c:
                    stack.pop()
                if not stack:
                    break
            j += 1
        if j < n:
            found.append((text[start : j + 1], True))
            i = j + 1
        else:  # never closed: close it and stop (everything after is inside it)
            tail = text[start:].rstrip().rstrip(",")
            found.append((tail + (quote or "") + "".join(reversed(stack)), False))
            break
    return found


_BARE = {"True": "true", "False": "false", "None": "null"}
# a bare word, or several separated by blanks ("navy blue"); possessive (*+, ++): no backtracking, linear time
_WORD = re.compile(r"[^\W\d][\w-]*+(?:[ \t]++[^\W\d][\w-]*+)*+")
_PLAIN = re.compile(r"[^\"',\w]+")  # a run that repair_json copies as it is: no quote, comma or word character


def _json_word(word: str) -> str:
    """A `_WORD` match as a JSON string, as `json.dumps(word, ensure_ascii=False)` but 10× faster: word characters
    need no escaping, only the tabs between words do."""
    return '"' + word.replace("\t", "\\t") + '"'


def repair_json(obj: str) -> str:
    """Light repairs towards JSON: '...' → "...", trailing commas dropped, bare keys quoted, True/False/None.

    One pass in linear time: every character is looked at a bounded number of times (no copies of the rest).
    """
    out: list[str] = []
    i, n = 0, len(obj)
    while i < n:
        c = obj[i]
        if c == '"':  # a JSON string: copy as is
            j = i + 1
            while j < n and obj[j] != '"':
                j += 2 if obj[j] == "\\" else 1
            out.append(obj[i : j + 1])
            i = j + 1
        elif c == "'":  # a single-quoted string: re-quote, escaping the double quotes it holds
            j = i + 1
            buf: list[str] = []
            while j < n and obj[j] != "'":
                if obj[j] == "\\" and j + 1 < n:
                    buf.append(obj[j + 1] if obj[j + 1] == "'" else obj[j : j + 2])
                    j += 2
                    continue
                buf.append('\\"' if obj[j] == '"' else obj[j])
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
        elif c == ",":
            j = i + 1
            while j < n and obj[j].isspace():
                j += 1
            if j < n and obj[j] in "}]":
                i += 1  # trailing comma
                continue
            out.append(c)
            i += 1
        elif c.isalpha() or c == "_":
            end = _WORD.match(obj, i).end()
            word = obj[i:end]
            k = end  # the next non-blank character, found by index: slicing off the rest would be quadratic
            while k < n and obj[k].isspace():
                k += 1
            if obj.startswith(":", k):
                out.append(_json_word(word))  # a bare key
            elif word in _BARE:
                out.append(_BARE[word])
            elif word in ("true", "false", "null") or not obj.startswith((",", "}", "]"), k):
                out.append(word)
            else:
                out.append(_json_word(word))  # a bare value: {type: jacket}
            i = end
        else:
            plain = _PLAIN.match(obj, i)
            j = plain.end() if plain else i + 1
            out.append(obj[i:j])
            i = j
    return "".join(out)


def load_lenient(obj: str) -> Any:
    """The repaired object, or None: a Python literal first (safe `literal_eval`), then repaired JSON."""
    if len(obj) <= 20_000:
        try:
            return ast.literal_eval(obj)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    try:
        return json.loads(repair_json(obj))
    except (ValueError, RecursionError):
        return None


_REGEX_KEYS = {
    "product_type": r"product[ _-]?type|type of product|product",
    "key_features": r"key[ _-]?features|features",
    "color_material": r"colou?rs?(?:[ _]?(?:and|&|/|,|-|_)[ _]?materials?)?|materials?",
    "design": r"design|style",
    "name": r"(?:product[ _-]?)?name",
    "category": r"category",
}
# Linear time on any line: each run of blanks is matched by one possessive quantifier (*+, ++), never split between
# two (`^[ \t]*(bullet)?[ \t]*` tried every split of a line's leading blanks: 8 000 blanks took 12 s).
_REGEX_LINE = re.compile(
    r"^[ \t]*+(?:(?:[-*•>]|\d++[.)])[ \t]*+)?[*_\"']*+(?P<key>"
    + "|".join(f"(?P<{k}>{p})" for k, p in _REGEX_KEYS.items())
    + r")[*_\"']*+[ \t]*+(?::|=|[-–—](?=\s))[ \t]*+(?P<value>.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^[ \t]*+(?:[-*•]|\d++[.)])[ \t]+(?P<item>.+)$")  # "-   " is a bullet too: no ++


def _regex_attributes(text: str) -> Attributes | None:
    """Attributes from lines like `product_type: ...`, `"product_type": "..."`, `Product type - ...`, `- bullet`."""
    fields: dict[str, dict[str, None]] = {}  # key → its distinct values, in order (a dict: no quadratic `in list`)
    lines = text.splitlines()
    for idx, line in enumerate(lines):
        m = _REGEX_LINE.match(line)
        if not m:
            continue
        key = next(k for k in _REGEX_KEYS if m.group(k))
        value = m.group("value").strip().rstrip(",").strip().strip("\"'*_").strip()
        if not value:  # "key_features:" followed by bullet lines (by index: a slice per key line is quadratic)
            items = []
            for nxt_idx in range(idx + 1, len(lines)):
                nxt = lines[nxt_idx]
                b = _BULLET.match(nxt)
                if not b or _REGEX_LINE.match(nxt):
                    break
                items.append(b.group("item").strip().strip("\"'*_").strip())
            value = ", ".join(i for i in items if i)
        if value:
            fields.setdefault(key, {})[value] = None
    if not fields.get("product_type"):
        return None
    try:
        return Attributes(**{k: ", ".join(v) for k, v in fields.items()})
    except ValidationError:
        return None


def parse_attributes(reply: str) -> tuple[Attributes, str]:
    """The attributes in an LLM reply and how they were read: "json", "repaired" or "regex".

    "json": the reply is, or contains (in code fences, between prose), a JSON object with a product_type;
    "repaired": the same after light repairs (single quotes, trailing commas, bare keys, True/False/None, an object
    cut off by the token limit); "regex": `key: value` lines. Raises `ExtractionFailed` when none gives a product_type.
    """
    text = FENCE.sub("", reply or "")
    objects = json_objects(text)
    for obj, closed in objects:
        if not closed:
            continue
        try:
            attrs = _attributes_from_dict(json.loads(obj))
        except (ValueError, RecursionError):
            attrs = None
        if attrs is not None:
            return attrs, "json"
    for obj, _ in objects:
        attrs = _attributes_from_dict(load_lenient(obj))
        if attrs is not None:
            return attrs, "repaired"
    attrs = _regex_attributes(text)
    if attrs is not None:
        return attrs, "regex"
    if not (reply or "").strip():
        raise ExtractionFailed("the LLM answered with nothing")
    what = "no JSON object with a product_type" if objects else "no JSON object or product_type line"
    raise ExtractionFailed(f"{what} in the LLM reply {one_line(reply.strip())}")


# ---- backends ------------------------------------------------------------------------------------------------------
@runtime_checkable
class LLMBackend(Protocol):
    """Answers a chat (OpenAI message format) with the assistant's text."""

    name: str

    def complete(self, messages: list[dict]) -> str: ...


def chat_completions_url(url: str) -> str:
    """The endpoint for a server URL: `http://host:port`, `.../v1` and `.../v1/chat/completions` all work.

    A URL ending in `/chat/completions` is used as is; one ending in `/v1` (any version, e.g. `/api/v1`) gets
    `/chat/completions`; a bare base gets `/v1/chat/completions`.
    """
    base = url.strip().rstrip("/")
    if not re.match(r"^https?://", base):
        raise BadInput(f"LLM URL '{url}' is not an http(s) URL", fix="use e.g. http://localhost:1234/v1")
    if base.endswith("/chat/completions"):
        return base
    if re.search(r"/v\d+$", base):
        return f"{base}/chat/completions"
    return f"{base}/v1/chat/completions"


def _detail(resp: _Answer) -> str:
    """The error a server gave, from OpenAI-style `{"error": {"message": ...}}` or the raw body, on one line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err:
            return " ".join(str(err).split())[:200]
    return " ".join(resp.text.split())[:200] or resp.reason_phrase


@dataclass
class _Answer:
    """An HTTP answer read in full (at most `MAX_REPLY_BYTES`), with the bits of `httpx.Response` used here."""

    status_code: int
    reason_phrase: str
    content: bytes
    encoding: str

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


# ---- one deadline per request, down to the socket ------------------------------------------------------------------
# httpx's timeouts are per socket operation: a server that sends a byte every few seconds never trips them. The
# deadline of the request the current thread is making (`OpenAIBackend._post` sets it) caps every connect, read and
# write at the time left, so that the headers, which httpx reads before `complete` sees a byte, are bounded as well.
_request = threading.local()


def _cap(timeout: float | None) -> float | None:
    """A socket operation's `timeout`, at most the time left before this thread's request deadline."""
    end = getattr(_request, "deadline", None)
    if end is None:
        return timeout
    left = max(end - time.monotonic(), 0.001)  # never 0: a zero timeout makes the socket non-blocking
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _cap(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _cap(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(host, port, _cap(timeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(path, _cap(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_sockets(client: httpx.Client) -> bool:
    """Make `client`'s sockets obey the thread's request deadline (see `_cap`). False where httpx's insides are not
    as expected (another httpx): then a call is bounded by the deadline check between body chunks and one read."""
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    patched = []
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend):
            if not isinstance(backend, _DeadlineBackend):
                pool._network_backend = _DeadlineBackend(backend)
            patched.append(transport)
    if transports[0] is None or transports[0] not in patched:
        log.warning("httpx %s: LLM requests are not bounded while the headers arrive", httpx.__version__)
        return False
    return True


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint: LM Studio (`http://localhost:1234/v1`), Ollama
    (`http://localhost:11434/v1`), vLLM, llama.cpp server. Greedy (temperature 0), JSON mode when the server has it.

    `url` may be the bare base or end in `/v1` (see `chat_completions_url`). A server that refuses
    `response_format` (400 naming it) is asked again without it, and never asked with it again.

    Each HTTP request ends within `timeout` seconds overall, however slowly the server sends (`LLMTimeout`); an answer
    over `MAX_REPLY_BYTES` is refused while it streams in, and the chat content is cut to `MAX_REPLY_CHARS`.
    """

    def __init__(
        self,
        url: str,
        model: str = "local-model",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 512,
    ):
        self.url = url
        self.endpoint = chat_completions_url(url)
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.json_mode = True
        self.name = f"openai:{model}@{self.endpoint}"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout), verify=True)
        self.hard_deadline = _deadline_sockets(self.http)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _timed_out(self) -> LLMTimeout:
        return LLMTimeout(
            f"the LLM server at {self.endpoint} did not answer within {self.timeout:g} s",
            fix="raise the LLM timeout, or use a smaller model",
        )

    def _too_large(self) -> ModelUnavailable:
        return ModelUnavailable(
            f"the LLM server at {self.endpoint} sent more than {MAX_REPLY_BYTES / 1e6:g} MB; "
            "a chat completion is a few KB",
            fix="point --llm at an OpenAI-compatible /v1 endpoint, and keep max_tokens small",
        )

    def _post(self, payload: dict) -> _Answer:
        """POST `payload` and read the answer, all within `self.timeout` seconds (`LLMTimeout` otherwise)."""
        deadline = time.monotonic() + self.timeout
        _request.deadline = deadline  # read by `_cap`, for every socket operation of this request
        try:
            with self.http.stream("POST", self.endpoint, json=payload) as resp:
                return self._read(resp, deadline)
        except httpx.ConnectTimeout:
            raise ModelUnavailable(
                f"cannot reach the LLM server at {self.endpoint} (connect timed out)",
                fix="check the --llm URL and that the server runs",
            ) from None
        except httpx.TimeoutException:
            raise self._timed_out() from None
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"cannot reach the LLM server at {self.endpoint} ({type(exc).__name__})",
                fix="start it (LM Studio: start the local server; Ollama: `ollama serve`) or fix the --llm URL",
            ) from None
        finally:
            _request.deadline = None

    def _read(self, resp: httpx.Response, deadline: float) -> _Answer:
        """The body of `resp`, chunk by chunk: refused past `MAX_REPLY_BYTES` (an error answer is only cut to
        `ERROR_BODY_BYTES`), and given up once `deadline` passes."""
        limit = MAX_REPLY_BYTES if resp.is_success else ERROR_BODY_BYTES
        declared = resp.headers.get("Content-Length", "")
        if resp.is_success and declared.isdigit() and int(declared) > limit:
            raise self._too_large()  # said so up front: not a byte of it is read
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            if time.monotonic() > deadline:
                raise self._timed_out()
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if resp.is_success:
                    raise self._too_large()
                break  # an error's message is in its first lines
        content = b"".join(chunks)[:limit]
        return _Answer(resp.status_code, resp.reason_phrase, content, resp.encoding or "utf-8")

    def complete(self, messages: list[dict]) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            payload["response_format"] = {"type": "json_object"}
        resp = self._post(payload)
        if resp.status_code == 400 and self.json_mode and "response_format" in resp.text.lower():
            log.info("%s refuses response_format; asking again without it", self.endpoint)
            self.json_mode = False
            payload.pop("response_format")
            resp = self._post(payload)
        if resp.status_code in (401, 403):
            raise ModelUnavailable(
                f"the LLM server at {self.endpoint} refused the request ({resp.status_code}: {_detail(resp)})",
                fix="pass the right API key",
            )
        if not resp.is_success:
            fix = "check the URL and the model name" if resp.status_code == 404 else "check the LLM server's log"
            raise ModelUnavailable(
                f"the LLM server at {self.endpoint} answered {resp.status_code}: {_detail(resp)}", fix=fix
            )
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelUnavailable(
                f"the LLM server at {self.endpoint} answered without a chat completion: {one_line(resp.text)}",
                fix="point --llm at an OpenAI-compatible /v1 endpoint",
            ) from None
        if not isinstance(content, str):
            return ""
        if len(content) > MAX_REPLY_CHARS:
            log.warning("%s answered %d characters; parsing the first %d", self.endpoint, len(content), MAX_REPLY_CHARS)
            content = content[:MAX_REPLY_CHARS]
        return content


def _torch_dtype(dtype: Any, device: str):
    import torch

    if dtype is None:
        return torch.float32 if str(device).startswith("cpu") else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        return getattr(torch, dtype)
    return dtype


class TransformersBackend:
    """A local causal LM (default Phi-3-mini, as in the seed notebook), greedy, loaded once on first use.

    Loads through `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained` with safetensors only unless
    `allow_pickle`. Calls are serialised: one model, one generation at a time.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_LLM_MODEL,
        device: str = "cpu",
        dtype: Any = None,
        max_new_tokens: int = 256,
        allow_pickle: bool = False,
    ):
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.allow_pickle = allow_pickle
        self.name = f"transformers:{model_id}"
        self.tokenizer = None
        self.model = None
        self._lock = threading.Lock()

    def _unavailable(self, exc: Exception) -> ModelUnavailable:
        log.debug("loading %s failed", self.model_id, exc_info=exc)
        where = "the folder" if Path(self.model_id).exists() else "the local cache, and the hub is unreachable"
        return ModelUnavailable(
            f"LLM '{self.model_id}' cannot be loaded: not found in {where} ({type(exc).__name__})",
            fix=(
                f"download it once where the hub is reachable (`hf download {self.model_id}`), "
                "or set DESIGN_STUDIO_LLM_MODEL to a local folder, "
                "or use an OpenAI-compatible server with --llm URL, or --profile tiny"
            ),
        )

    def load(self) -> None:
        """Load tokenizer and model now (otherwise the first `complete` does); idempotent and thread-safe."""
        if self.model is not None:
            return
        with self._lock:
            if self.model is not None:
                return
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_id)
                model = AutoModelForCausalLM.from_pretrained(
                    self.model_id,
                    dtype=_torch_dtype(self.dtype, self.device),
                    use_safetensors=None if self.allow_pickle else True,
                )
            except (OSError, ValueError) as exc:
                raise self._unavailable(exc) from None
            if not getattr(tokenizer, "chat_template", None):
                raise ModelUnavailable(f"LLM '{self.model_id}' has no chat template", fix="use an instruct/chat model")
            self.tokenizer = tokenizer
            self.model = model.to(self.device).eval()

    def complete(self, messages: list[dict]) -> str:
        import torch

        self.load()
        with self._lock:
            # sanitize_control_tokens: a description that contains "<|end|><|assistant|>" stays plain text
            enc = self.tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
                sanitize_control_tokens=True,
            ).to(self.model.device)
            prompt_len = enc["input_ids"].shape[1]
            with torch.inference_mode():
                out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens)
            return self.tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True).strip()


# ---- extraction ----------------------------------------------------------------------------------------------------
@dataclass
class ExtractionResult:
    attributes: Attributes
    method: str  # "json", "repaired" or "regex"
    attempts: int
    raw: str  # the last reply


def ask_until_parsed(backend, messages, parse, failure: type[EngineError], retries: int, echo_chars: int = 500):
    """Ask `backend` until `parse` accepts a reply, at most `retries` + 1 times → (parsed, attempts, last reply).

    After a timeout the same chat is sent again; after a reply `parse` refuses (raising `failure`), the chat gets
    that reply (its first `echo_chars`) and "Answer with one JSON object only.", replacing the previous such pair
    so the chat stays short. The last attempt's reason is raised as `failure`."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            raw = backend.complete(messages)
        except LLMTimeout as exc:
            log.info("attempt %d/%d: %s", attempt, attempts, exc)
            if attempt == attempts:
                raise failure(f"the LLM timed out after {attempts} attempts") from None
            continue
        try:
            return parse(raw), attempt, raw
        except failure as exc:
            log.info("attempt %d/%d: %s", attempt, attempts, exc)
            if attempt == attempts:
                raise failure(f"{exc.message} (after {attempts} attempts)") from None
            base = messages[:-2] if messages[-1]["content"] == RETRY_MESSAGE else messages
            messages = [
                *base,
                {"role": "assistant", "content": raw[:echo_chars]},
                {"role": "user", "content": RETRY_MESSAGE},
            ]
    raise AssertionError("unreachable")  # pragma: no cover


class AttributeExtractor:
    """Description → `Attributes`, asking again (up to `retries` more times) after an unusable reply or a timeout.

    After an unusable reply the next attempt sees it and the user message "Answer with one JSON object only.";
    after a timeout the same chat is sent again. Any other `ModelUnavailable` (server down, bad URL, model
    missing) propagates at once: every other row would fail the same way.
    """

    def __init__(self, backend: LLMBackend, retries: int = 2):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.backend = backend
        self.retries = retries

    def extract(self, text: str) -> ExtractionResult:
        if not (text or "").strip():  # a row's problem, not the run's: ExtractionFailed, not BadInput
            raise ExtractionFailed("the product description is empty")
        (attrs, method), attempt, raw = ask_until_parsed(
            self.backend, extraction_messages(text), parse_attributes, ExtractionFailed, self.retries, echo_chars=500
        )
        return ExtractionResult(attributes=attrs, method=method, attempts=attempt, raw=raw)


# ---- tiny causal LM ------------------------------------------------------------------------------------------------
TINY_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_TINY_CORPUS = [
    EXTRACTION_SYSTEM,
    EXAMPLE_REPLY,
    '{"product_type": "", "key_features": "", "color_material": "", "design": ""}',
    "product_type: jacket\nkey_features: zip, hood\ncolor_material: blue, cotton\ndesign: minimal",
    "Product description: a warm winter jacket with a hood, two pockets and a zip. Navy blue, wool.",
    "Produktbeschreibung: Eine warme Winterjacke mit Kapuze. Größe M, Blau, Baumwolle. Schuhe, Tasche, Kleid.",
    "{ } [ ] : , \" ' - _ . ! ? ( ) 0 1 2 3 4 5 6 7 8 9 true false null",
]


def build_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A random-weight Phi-3-style causal LM with a byte-level BPE tokenizer and a chat template, in `folder`.

    Loads back through `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(folder)`, i.e.
    `TransformersBackend(str(folder))`. Nothing is downloaded; the output is gibberish by design.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|end|>",  # Phi-3 ends an assistant turn with <|end|>
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["</s>", "<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=512,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        original_max_position_embeddings=512,
        **ids,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(**ids, do_sample=False)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)  # transformers 5 always writes safetensors (safe_serialization is gone)
        tokenizer.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return folder
