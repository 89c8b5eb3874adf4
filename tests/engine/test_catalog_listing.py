"""Listings from detected attributes: the prompt, reply parsing and validation, retries, and concurrent writing.

No mocks: the HTTP tests talk to a real `ThreadingHTTPServer` on loopback (`ScriptedServer` from the attribute
extraction tests), and one test shares a random-weight local causal LM between threads.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engine.catalog.listing import (
    Listing,
    ListingFailed,
    ListingResult,
    ListingWriter,
    listing_messages,
    listing_row,
    parse_listing,
)
from engine.catalog.llm import RETRY_MESSAGE, LLMTimeout, OpenAIBackend, TransformersBackend, build_tiny_causal_lm
from engine.errors import EngineError, ModelUnavailable
from tests.engine.test_catalog_llm import Reply, completion

ATTRIBUTES = {
    "product_type": "rain jacket",
    "color": "navy blue",
    "material": "uncertain",
    "pattern": "Uncertain",
    "closure": "zip",
}
LISTING = {
    "title": "Navy Blue Rain Jacket with Zip",
    "bullet_points": ["Navy blue colour", "Full-length zip", "Made for rainy days"],
    "description": "A navy blue rain jacket that closes with a zip.",
    "style_summary": "Clean and practical.",
    "seo_tags": ["Rain Jacket", "navy jacket", " zip jacket ", "rain jacket"],
}
VALID = json.dumps(LISTING)


def listing_json(**changes) -> str:
    return json.dumps({**LISTING, **changes})


def user_message(request: dict) -> str:
    return next(m["content"] for m in request["body"]["messages"] if m["role"] == "user")


# ---- model and parsing ---------------------------------------------------------------------------------------------
def test_listing_normalises_strings() -> None:
    listing = Listing.model_validate(
        {
            "title": "  Rain   jacket ",
            "bullet_points": "- Hood\n\n• Zip\n2. Two pockets\n",
            "description": "  Line one.\n\n\n\nLine   two. ",
            "seo_tags": "Rain Jacket, #hood,  rain jacket ,ZIP,",
            "unknown": "ignored",
        }
    )
    assert listing.title == "Rain jacket"
    assert listing.bullet_points == ["Hood", "Zip", "Two pockets"]
    assert listing.description == "Line one.\n\nLine two."
    assert listing.style_summary == ""
    assert listing.seo_tags == ["rain jacket", "hood", "zip"]
    inline = Listing.model_validate({**LISTING, "bullet_points": "• Hood • Zip • Pockets"})
    assert inline.bullet_points == ["Hood", "Zip", "Pockets"]


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "   "},
        {"title": "x" * 121},
        {"bullet_points": ["a", "b"]},
        {"bullet_points": ["a", "b", " ", ""]},
        {"bullet_points": [f"b{i}" for i in range(6)]},
        {"description": ""},
        {"seo_tags": "a, A, a"},
        {"seo_tags": [f"t{i}" for i in range(16)]},
    ],
)
def test_listing_rejects(changes: dict) -> None:
    with pytest.raises(ValueError):
        Listing.model_validate({**LISTING, **changes})


def test_parse_fenced_and_repaired() -> None:
    listing = parse_listing(f"Here is the listing:\n```json\n{VALID}\n```\nHope it helps! {{x}}")
    assert listing.title == LISTING["title"]
    assert listing.seo_tags == ["rain jacket", "navy jacket", "zip jacket"]
    broken = (
        "{'title': 'Lamp', 'bullet_points': ['Dimmable', 'Warm light', 'Compact',], "
        "description: 'A small lamp.\nFits a desk.', 'seo_tags': 'lamp, desk lamp, Lamp, light'"  # cut off, raw newline
    )
    listing = parse_listing(broken)
    assert (listing.title, listing.bullet_points[-1]) == ("Lamp", "Compact")
    assert listing.description == "A small lamp.\nFits a desk."
    assert listing.seo_tags == ["lamp", "desk lamp", "light"]
    wrapped = parse_listing(json.dumps({"listing": {**LISTING, "bullet_points": None, "bullets": ["a", "b", "c"]}}))
    assert wrapped.bullet_points == ["a", "b", "c"]


@pytest.mark.parametrize(
    "reply",
    ["I'd be happy to write a listing!", "", '{"product_type": "jacket"}', listing_json(seo_tags=["one"]), "x\n" * 200],
)
def test_parse_failures_are_one_line(reply: str) -> None:
    with pytest.raises(ListingFailed) as info:
        parse_listing(reply)
    msg = str(info.value)
    assert isinstance(info.value, EngineError)
    assert "\n" not in msg
    assert len(msg) < 260  # at most 80 characters of the reply are quoted


def test_messages_give_only_certain_attributes() -> None:
    system, user = listing_messages(ATTRIBUTES, name="Storm Shell")
    assert (system["role"], user["role"]) == ("system", "user")
    for key in ("title", "bullet_points", "description", "style_summary", "seo_tags"):
        assert f'"{key}"' in system["content"]
    content = user["content"]
    assert "Storm Shell" in content
    assert "product type: rain jacket" in content and "color: navy blue" in content and "closure: zip" in content
    assert "uncertain" not in content.lower() and "material:" not in content and "pattern" not in content
    assert "Do not invent" in content
    for claim in ("brand", "price", "sizes", "certifications", "materials"):
        assert claim in content

    (_, user) = listing_messages({"material": "uncertain", "color": ""})
    assert "No attribute was detected with certainty" in user["content"]
    assert "Do not invent" in user["content"]


def test_listing_row() -> None:
    row = listing_row(parse_listing(VALID))
    assert row == {
        "title": LISTING["title"],
        "bullet_points": "Navy blue colour | Full-length zip | Made for rainy days",
        "description": LISTING["description"],
        "style_summary": "Clean and practical.",
        "seo_tags": "rain jacket, navy jacket, zip jacket",
    }
    assert listing_row(None) == dict.fromkeys(row, "")


# ---- one listing over HTTP -----------------------------------------------------------------------------------------
def test_write_valid(serve) -> None:
    server = serve(lambda i, body: (200, completion(VALID)))
    result = ListingWriter(OpenAIBackend(server.url, timeout=5)).write(ATTRIBUTES, name="Storm Shell")
    assert isinstance(result, ListingResult)
    assert (result.attempts, result.raw) == (1, VALID)
    assert 3 <= len(result.listing.bullet_points) <= 5
    assert all(tag == tag.lower().strip() for tag in result.listing.seo_tags)
    (request,) = server.requests
    content = user_message(request)
    assert "rain jacket" in content and "navy blue" in content and "zip" in content
    assert "uncertain" not in content.lower()
    assert "Do not invent claims" in content and "brand, price, sizes, certifications or materials" in content


def test_retry_after_prose(serve) -> None:
    replies = ["What a lovely jacket! It is navy blue.", VALID]
    server = serve(lambda i, body: (200, completion(replies[i])))
    result = ListingWriter(OpenAIBackend(server.url, timeout=5), retries=2).write(ATTRIBUTES)
    assert result.attempts == 2
    first, second = (r["body"]["messages"] for r in server.requests)
    assert RETRY_MESSAGE not in json.dumps(first)
    assert second[-2:] == [
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": RETRY_MESSAGE},
    ]


def test_normalised_and_too_few_bullets_retried(serve) -> None:
    replies = [
        listing_json(bullet_points="- Hood\n- Zip"),  # 2 bullets: invalid
        listing_json(bullet_points="- Hood\n- Zip\n- Navy blue", seo_tags="Rain Jacket, Navy, rain jacket, Zip"),
    ]
    server = serve(lambda i, body: (200, completion(replies[i])))
    result = ListingWriter(OpenAIBackend(server.url, timeout=5)).write(ATTRIBUTES)
    assert result.attempts == 2
    assert result.listing.bullet_points == ["Hood", "Zip", "Navy blue"]
    assert result.listing.seo_tags == ["rain jacket", "navy", "zip"]
    assert server.requests[1]["body"]["messages"][-1]["content"] == RETRY_MESSAGE


def test_invalid_every_time(serve) -> None:
    server = serve(lambda i, body: (200, completion(listing_json(bullet_points=["only one"]))))
    with pytest.raises(ListingFailed, match=r"bullet_points.*after 2 attempts") as info:
        ListingWriter(OpenAIBackend(server.url, timeout=5), retries=1).write(ATTRIBUTES)
    assert "\n" not in str(info.value)
    assert len(server.requests) == 2
    # the retry chat holds one bad reply and one reminder, not a growing history
    assert [m["role"] for m in server.requests[1]["body"]["messages"]] == ["system", "user", "assistant", "user"]


def test_timeouts(serve) -> None:
    server = serve(lambda i, body: (200, completion(VALID)), delay=3.0)
    start = time.monotonic()
    with pytest.raises(ListingFailed, match="timed out after 3 attempts") as info:
        ListingWriter(OpenAIBackend(server.url, timeout=0.3), retries=2).write(ATTRIBUTES)
    assert time.monotonic() - start < 2.5
    assert not isinstance(info.value, LLMTimeout)
    assert len(server.requests) == 3


def test_server_error_propagates_at_once(serve) -> None:
    server = serve(lambda i, body: (500, {"error": {"message": "model crashed"}}))
    with pytest.raises(ModelUnavailable, match="500: model crashed"):
        ListingWriter(OpenAIBackend(server.url, timeout=5)).write(ATTRIBUTES)
    assert len(server.requests) == 1


# ---- many listings at once -----------------------------------------------------------------------------------------
class Concurrency:
    """A server script that takes `seconds` per request, answers each product by name, and counts overlap."""

    def __init__(self, seconds: float, fail_name: str | None = None, bad_name: str | None = None):
        self.seconds = seconds
        self.fail_name = fail_name
        self.bad_name = bad_name
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def __call__(self, index: int, body: dict) -> Reply:
        content = next(m["content"] for m in body["messages"] if m["role"] == "user")
        name = content.split("Product name: ", 1)[1].split("\n", 1)[0]
        if name == self.fail_name:
            return 500, {"error": {"message": "server overloaded"}}
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)
        try:
            time.sleep(self.seconds)
        finally:
            with self.lock:
                self.now -= 1
        if name == self.bad_name:
            return 200, completion("no idea")
        return 200, completion(listing_json(title=f"Listing of {name}"))


def test_write_many_concurrently(serve) -> None:
    script = Concurrency(0.3, bad_name="item-5")
    server = serve(script)
    writer = ListingWriter(OpenAIBackend(server.url, timeout=5), retries=0, concurrency=4)
    items = [(f"k{i}", {"color": f"colour {i}", "material": "uncertain"}, f"item-{i}") for i in range(8)]
    calls: list[tuple] = []
    caller = threading.get_ident()

    def on_done(key, outcome, done, total) -> None:
        calls.append((key, type(outcome).__name__, done, total, threading.get_ident() == caller))

    start = time.monotonic()
    results = writer.write_many(items, on_done=on_done)
    elapsed = time.monotonic() - start

    assert elapsed < 8 * 0.3 / 2
    assert script.max == 4
    assert len(server.requests) == 8
    assert list(results) == [f"k{i}" for i in range(8)]  # keyed and ordered like the items
    for i in range(8):
        outcome = results[f"k{i}"]
        if i == 5:
            assert isinstance(outcome, ListingFailed) and "no JSON object" in str(outcome)
        else:
            assert isinstance(outcome, ListingResult) and outcome.listing.title == f"Listing of item-{i}"
    assert sorted(c[0] for c in calls) == sorted(results)
    assert [c[2] for c in calls] == list(range(1, 9))
    assert all(c[3] == 8 and c[4] for c in calls)  # total, and called in the caller's thread
    assert ("k5", "ListingFailed") in {(c[0], c[1]) for c in calls}


def test_write_many_server_error_cancels_the_rest(serve) -> None:
    script = Concurrency(0.3, fail_name="item-0")
    server = serve(script)
    writer = ListingWriter(OpenAIBackend(server.url, timeout=5), concurrency=2)
    items = [(i, {"color": "red"}, f"item-{i}") for i in range(8)]
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="500") as info:
        writer.write_many(items)
    assert time.monotonic() - start < 0.3  # raised at once, not after the running requests
    assert not isinstance(info.value, LLMTimeout)
    time.sleep(0.7)  # the requests already sent end on their own; nothing else starts
    assert len(server.requests) < 8


def test_write_many_edge_cases(serve) -> None:
    server = serve(lambda i, body: (200, completion(VALID)))
    writer = ListingWriter(OpenAIBackend(server.url, timeout=5))
    assert writer.write_many([]) == {}
    with pytest.raises(ValueError, match="distinct"):
        writer.write_many([("a", {}, ""), ("a", {}, "")])
    with pytest.raises(ValueError):
        ListingWriter(writer.backend, concurrency=0)
    with pytest.raises(ValueError):
        ListingWriter(writer.backend, retries=-1)


def test_write_many_shares_a_local_model(tmp_path: Path) -> None:
    """A TransformersBackend serialises its calls: shared by 3 threads it answers every product (here
    gibberish, so each fails cleanly)."""
    folder = build_tiny_causal_lm(tmp_path / "tiny-lm", seed=0)
    writer = ListingWriter(TransformersBackend(str(folder), max_new_tokens=8), retries=0, concurrency=3)
    results = writer.write_many([(i, {"color": "blue"}, f"item-{i}") for i in range(3)])
    assert sorted(results) == [0, 1, 2]
    assert all(isinstance(r, ListingFailed) and "\n" not in str(r) for r in results.values())
