"""Zero-shot product attributes: reading folders and zips (broken files, zip bombs), the vocabulary and its
errors, probabilities and thresholds, the row columns, and the benchmark — with the tiny CLIP, no mocks."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

from engine.catalog.tagging import (
    DEFAULT_VOCAB,
    UNCERTAIN,
    Tagger,
    bench_tagging,
    load_vocabulary,
    parse_vocabulary,
    read_images,
    tag_rows,
)
from engine.embeddings import ClipEmbeddings
from engine.errors import BadInput, TooLarge
from tests.conftest import line_sketch, png

READABLE = ["a.png", "b.jpg", "d.jpeg", "sub/c.webp"]
BROKEN = ["broken.jpg", "fake.png"]


@pytest.fixture(scope="module")
def clip(tiny_models) -> ClipEmbeddings:
    from transformers import CLIPModel, CLIPProcessor

    folder = tiny_models / "clip-vit-base-patch32"
    return ClipEmbeddings(CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder))


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


@pytest.fixture(scope="module")
def tagger(clip, vocab) -> Tagger:
    return Tagger(clip, vocab)


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def source_files() -> dict[str, bytes]:
    """Four readable images, two broken ones, and files that must be ignored without a record."""
    red = Image.new("RGB", (80, 96), (200, 30, 40))
    blue = Image.new("RGB", (64, 64), (20, 40, 190))
    jpg = encoded(red, "JPEG")
    return {
        "a.png": png(line_sketch()),
        "b.jpg": jpg,
        "d.jpeg": encoded(blue, "JPEG"),
        "sub/c.webp": encoded(red, "WEBP"),
        "fake.png": b"this is a text file, not a picture\n",
        "broken.jpg": jpg[: len(jpg) // 2],
        "notes.txt": b"ignored",
        ".hidden.png": b"ignored too",
        ".thumbs/x.jpg": jpg,
    }


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    for name, data in source_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def make_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sub/", b"")  # a directory entry
        for name, data in {**source_files(), "__MACOSX/sub/._c.webp": b"\x00\x05", **(extra or {})}.items():
            zf.writestr(name, data)
    return path


def set_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size the central directory declares for `member` (what a crafted zip does)."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, pos + 24, size)
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 46 + name_len)
    raise AssertionError(f"{member} not in {path}")


def test_a_folder_gives_its_images_and_skips_broken_ones_with_a_reason(photo_folder):
    items, skipped = read_images(photo_folder, max_pixels=1_000_000, max_bytes=1_000_000)
    assert [it.name for it in items] == READABLE  # sorted, recursive; notes.txt and hidden files ignored
    assert all(it.image.mode == "RGB" and len(it.sha256) == 64 for it in items)
    assert items[1].image.size == (80, 96)
    assert [s.name for s in skipped] == BROKEN
    for s in skipped:
        assert s.name in s.reason and "\n" not in s.reason
    assert "truncated or corrupt" in skipped[0].reason
    assert "not an image" in skipped[1].reason


def test_a_zip_reads_like_the_folder(photo_folder, tmp_path):
    from_folder = read_images(photo_folder, 1_000_000, 1_000_000)
    items, skipped = read_images(make_zip(tmp_path / "photos.zip"), 1_000_000, 1_000_000)
    assert [it.name for it in items] == READABLE
    assert [(it.name, it.sha256) for it in items] == [(it.name, it.sha256) for it in from_folder[0]]
    assert skipped == from_folder[1]


def test_zip_bombs_are_refused_before_they_are_inflated(tmp_path):
    # A member whose declared size is over the per-image limit is skipped (a Skipped row, not an error), so
    # one bad file doesn't cost the rest of the catalog; it is never decompressed.
    bomb = make_zip(tmp_path / "bomb.zip", {"bomb.png": bytes(3_000_000)})  # 3 MB of zeros, ~3 KB packed
    huge = make_zip(tmp_path / "huge.zip", {"huge.png": png(line_sketch())})
    set_declared_size(huge, "huge.png", 0xFFFF_FFF0)  # claims 4 GB
    for path, name in ((bomb, "bomb.png"), (huge, "huge.png")):
        items, skipped = read_images(path, 1_000_000, 1_000_000)
        assert [it.name for it in items] == READABLE
        reason = {s.name: s.reason for s in skipped}[name]
        assert "the limit is 1 MB" in reason and "\n" not in reason

    # A member that declares less than it holds: reading stops at the declared size and the CRC fails.
    liar = make_zip(tmp_path / "liar.zip", {"liar.png": png(line_sketch(400, 400))})
    set_declared_size(liar, "liar.png", 100)
    items, skipped = read_images(liar, 1_000_000, 1_000_000)
    assert "liar.png" not in [it.name for it in items] and "liar.png" in {s.name for s in skipped}

    # The whole archive declaring more than the total limit is refused up front, in one line.
    with pytest.raises(TooLarge) as err:
        read_images(make_zip(tmp_path / "many.zip"), 1_000_000, 1_000_000, max_total_bytes=1000)
    assert "many.zip" in str(err.value) and "\n" not in str(err.value)


def test_a_source_that_is_not_a_folder_or_a_zip_is_one_line(tmp_path):
    (tmp_path / "photos.txt").write_text("x")
    (tmp_path / "damaged.zip").write_bytes(b"PK not really")
    for path in (tmp_path / "missing", tmp_path / "photos.txt", tmp_path / "damaged.zip"):
        with pytest.raises(BadInput) as err:
            read_images(path, 1_000_000, 1_000_000)
        assert "\n" not in str(err.value)


def test_probabilities_are_a_distribution_per_attribute_and_deterministic(tagger, vocab, photo_folder):
    items, _ = read_images(photo_folder, 1_000_000, 1_000_000)
    images = [it.image for it in items]
    guesses = tagger.tag([*images, images[0]])
    assert len(guesses) == 5
    for guess in guesses:
        assert list(guess) == list(vocab.attributes)
        for attr, g in guess.items():
            assert list(g.probabilities) == vocab.attributes[attr]
            assert all(0.0 <= p <= 1.0 for p in g.probabilities.values())
            assert sum(g.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            assert len(g.top) == min(3, len(vocab.attributes[attr]))
            assert g.top[0][1] == g.probability == max(g.probabilities.values())
            assert g.value == (UNCERTAIN if g.uncertain else g.best)
    assert guesses[0] == guesses[4]  # the same image twice in a batch: exactly the same (embedded once)
    vectors = tagger.embed([images[0], images[1], images[0]])
    assert vectors[0] == vectors[2] and vectors[0] is not vectors[2]

    # in a batch of its own: float32 batching is not bit-exact across batch layouts, so the same up to rounding
    alone = tagger.tag([images[0]])[0]
    for attr, g in alone.items():
        assert g.value == guesses[0][attr].value
        assert g.probability == pytest.approx(guesses[0][attr].probability, abs=1e-6)


def test_the_threshold_decides_what_is_uncertain(clip, tagger, vocab, photo_folder):
    items, _ = read_images(photo_folder, 1_000_000, 1_000_000)
    vectors = tagger.embed([it.image for it in items])
    never = Tagger(clip, replace(vocab, threshold=1.0)).tag_vectors(vectors)
    always = Tagger(clip, replace(vocab, threshold=0.0)).tag_vectors(vectors)
    for strict, lax in zip(never, always, strict=True):
        for attr in vocab.attributes:
            assert strict[attr].uncertain and strict[attr].value == UNCERTAIN
            assert not lax[attr].uncertain and lax[attr].value == lax[attr].best
            assert strict[attr].top == lax[attr].top  # the best guess is kept either way
    rows = tag_rows(items, never)
    assert rows[0]["color"] == UNCERTAIN and 0 < rows[0]["color_confidence"] <= 1


def test_editing_the_vocabulary_changes_the_columns(clip, tagger, vocab, photo_folder, tmp_path):
    items, _ = read_images(photo_folder, 1_000_000, 1_000_000)
    rows = tag_rows(items, tagger.tag([it.image for it in items]))
    assert [r["image"] for r in rows] == READABLE
    assert (
        list(rows[0])
        == vocab.columns()
        == [
            "image",
            *[c for a in ["color", "neckline", "sleeve", "pattern", "fabric", "fit"] for c in (a, f"{a}_confidence")],
        ]
    )
    assert all(r["color_confidence"] == round(r["color_confidence"], 4) for r in rows)

    data = yaml.safe_load(DEFAULT_VOCAB.read_text())
    del data["attributes"]["fit"]
    data["attributes"]["length"] = ["cropped", "regular", "long"]
    edited = tmp_path / "apparel-edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    new = load_vocabulary(edited)
    rows = tag_rows(items, Tagger(clip, new).tag([it.image for it in items]))
    expected = list(rows[0])
    assert expected == new.columns()
    assert expected[-2:] == ["length", "length_confidence"] and "fit" not in expected
    assert expected == [c for c in vocab.columns() if not c.startswith("fit")] + ["length", "length_confidence"]
    assert rows[0]["length"] in {"cropped", "regular", "long", UNCERTAIN}


BAD_VOCABULARIES = [
    ("family: x\nattributes: {color: [red, blue]\n", "not valid YAML (line"),
    ("family: x\nthreshold: 0.3\n", "no attributes"),
    ("family: x\nattributes: {}\n", "no attributes"),
    ("attributes: {color: [red]}\n", "'color' needs at least 2 values"),
    ("attributes: {color: [red, blue, Red]}\n", "'color' lists 'Red' twice"),
    ("templates: ['a photo of a {item}']\nattributes: {color: [red, blue]}\n", "has no {} where the value goes"),
    ("templates: ['a {colour} {item}']\nattributes: {color: [red, blue]}\n", "unknown placeholder"),
    ("attributes: {fit: {values: [slim, loose], templates: ['slim {item}']}}\n", "has no {}"),
    ("attributes: {color: [red, blue]}\nthreshold: 2\n", "threshold must be a number from 0 to 1"),
    ("attributes: {color: [red, uncertain]}\n", "'uncertain' is reserved"),
    ("atributes: {color: [red, blue]}\n", "unknown key(s) atributes"),
    ("attributes: {answer: [yes, no]}\n", "must be text, not bool True; put it in quotes"),
    ("- a list\n", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD_VOCABULARIES)
def test_bad_vocabularies_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as err:
        load_vocabulary(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("bad.yaml")


def test_a_missing_vocabulary_file_and_the_shipped_default(tmp_path):
    with pytest.raises(BadInput, match="vocabulary file not found"):
        load_vocabulary(tmp_path / "nope.yaml")
    vocab = load_vocabulary(None)
    assert vocab.family == "apparel" and vocab.item == "top" and vocab.threshold == 0.35
    assert vocab.attributes["sleeve"] == ["sleeveless", "short sleeve", "long sleeve"]
    assert vocab.prompts("neckline", "v-neck")[0] == "a photo of a top with a v-neck."
    assert parse_vocabulary("attributes: {x: [a, b]}").prompts("x", "a") == ["a photo of a a item."]


def test_bench_tagging_reports_throughput(clip):
    report = bench_tagging(clip, n=32)
    assert report["images"] == 32 and report["batch"] == 16
    assert report["images_per_minute"] > 0
    assert report["decode_s"] > 0 and report["embed_s"] > 0
