"""`styles.describe`: a prompt written from an image by the style library's CLIP (the tiny one here: its words are
arbitrary, the path is the real one), checked against CLIP embeddings computed directly with transformers; and
`python -m engine describe` as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.cli import main
from engine.describe import CATEGORIES, VOCABULARY, phrase
from engine.errors import BadInput
from tests.conftest import REPO, line_sketch, make_data_dir, make_engine, png


def swatch() -> Image.Image:
    """Something unlike a line drawing: coloured blocks."""
    img = Image.new("RGB", (80, 80), (190, 40, 40))
    ImageDraw.Draw(img).rectangle([20, 30, 70, 75], fill=(30, 120, 200))
    return img


class DirectClip:
    """The tiny CLIP loaded straight from its folder with transformers: embeddings the engine did not compute."""

    def __init__(self, folder):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(folder).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)

    @staticmethod
    def _unit(out) -> np.ndarray:
        t = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(t.float(), dim=-1).numpy()

    @torch.inference_mode()
    def texts(self, texts: list[str]) -> np.ndarray:
        inputs = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        return self._unit(self.model.get_text_features(**inputs))

    @torch.inference_mode()
    def image(self, img: Image.Image) -> np.ndarray:
        pixels = self.processor(images=[img.convert("RGB")], return_tensors="pt")["pixel_values"]
        return self._unit(self.model.get_image_features(pixel_values=pixels))[0]


@pytest.fixture(scope="module")
def clip(tiny_models) -> DirectClip:
    return DirectClip(tiny_models / "clip-vit-base-patch32")


def candidates(engine) -> dict[str, list[tuple[str, str]]]:
    """Every category's candidates as (term, phrase): the vocabulary, and for styles the library's tags it lacks."""
    known = {t.lower() for terms in VOCABULARY.values() for t in terms}
    tags = sorted({t.lower() for s in engine.styles.list() for t in s.tags} - known)
    out = {c: [(t, phrase(c, t)) for t in VOCABULARY[c]] for c in CATEGORIES}
    out["style"] += [(t, phrase("style", t)) for t in tags]
    return out


def expected_ranking(clip: DirectClip, engine, img: Image.Image) -> dict[str, list[tuple[str, float]]]:
    vector = clip.image(img)
    ranked = {}
    for category, pairs in candidates(engine).items():
        scores = clip.texts([p for _, p in pairs]) @ vector
        ranked[category] = sorted(((t, float(s)) for (t, _), s in zip(pairs, scores, strict=True)), key=lambda x: -x[1])
    return ranked


def test_the_same_image_gives_the_same_prompt_and_the_ranking_is_clips(engine, clip):
    sketch = png(line_sketch())
    first, again = engine.styles.describe(sketch), engine.styles.describe(sketch)
    assert first.prompt and first.prompt == again.prompt
    assert first.model_dump(exclude={"seconds"}) == again.model_dump(exclude={"seconds"})
    assert list(first.terms) == list(CATEGORIES)
    other = engine.styles.describe(png(swatch()))
    for img, found in ((line_sketch(), first), (swatch(), other)):
        expected = expected_ranking(clip, engine, img)
        for category, terms in found.terms.items():
            assert len(terms) == 5
            want = expected[category][:5]
            assert [t.term for t in terms] == [t for t, _ in want], category
            assert [t.score for t in terms] == pytest.approx([s for _, s in want], abs=2e-3), category
            shares = [t.confidence for t in terms]
            assert shares == sorted(shares, reverse=True) and all(0 < s <= 1 for s in shares)
    # a different picture ranks differently, as CLIP sees it
    assert [t.term for t in first.terms["object"]] != [t.term for t in other.terms["object"]]


def test_the_prompt_says_the_picked_terms_in_order_and_keeps_its_bounds(engine):
    sketch = png(line_sketch())
    found = engine.styles.describe(sketch, threshold=0.0)  # every category says its best terms
    picked = {c: [t.term for t in terms if t.picked] for c, terms in found.terms.items()}
    assert [len(picked[c]) for c in CATEGORIES] == [1, 1, 2, 1, 2]
    obj = picked["object"][0]
    assert found.prompt == (
        f"{'an' if obj[0] in 'aeiou' else 'a'} {obj}, {picked['medium'][0]}, {' and '.join(picked['style'])} style, "
        f"{picked['material'][0]}, {' and '.join(picked['colour'])} palette"
    )
    strict = engine.styles.describe(sketch, threshold=1.0)  # only what a render always needs: subject, medium, palette
    assert [sum(t.picked for t in strict.terms[c]) for c in CATEGORIES] == [1, 1, 0, 0, 1]
    assert " style" not in strict.prompt and strict.prompt.endswith(" palette")
    short = engine.styles.describe(sketch, threshold=0.0, max_chars=40)
    assert 0 < len(short.prompt) <= 40
    assert short.prompt.startswith(strict.prompt.split(",")[0])  # the subject stays; optional words go first
    wide = engine.styles.describe(sketch, k=12)
    assert all(len(terms) == 12 for terms in wide.terms.values())


def test_the_librarys_tags_are_candidates(fresh_engine, clip):
    """A user's style brings its tags: they rank among the styles as CLIP puts them (one near the image makes the top
    20), and a hidden style's tags do not count."""
    img = swatch()
    pool = [f"{a} {b}" for a in ("glazed", "sunlit", "woven", "velvety", "foggy", "crisp", "molten", "dotted")
            for b in ("tile", "dusk", "lacquer", "harbour", "orchard", "fresco", "quartz", "ember")]  # fmt: skip
    tag = pool[int(np.argmax(clip.texts([phrase("style", t) for t in pool]) @ clip.image(img)))]
    before = fresh_engine.styles.describe(png(img), k=20).terms["style"]
    assert tag not in [t.term for t in before]

    fresh_engine.styles.add(png(Image.new("RGB", (64, 64), (90, 60, 30))), "Glaze study", tags=[tag, "zz-other"])
    expected = expected_ranking(clip, fresh_engine, img)["style"]
    rank = [t for t, _ in expected].index(tag)
    assert rank < 20, f"the pool's best word ranks {rank + 1}: widen the pool"
    found = fresh_engine.styles.describe(png(img), k=20)
    assert [t.term for t in found.terms["style"]] == [t for t, _ in expected[:20]]
    mine = found.terms["style"][rank]
    assert (mine.term, mine.source) == (tag, "library")
    assert mine.score == pytest.approx(expected[rank][1], abs=2e-3)
    assert all(t.source == "vocabulary" for c in ("object", "medium", "material", "colour") for t in found.terms[c])

    fresh_engine.styles.hide("Glaze study")
    assert tag not in [t.term for t in fresh_engine.styles.describe(png(img), k=20).terms["style"]]


def spy(engine, monkeypatch) -> list[int]:
    """How many phrases each of the engine's CLIP text calls embeds, from now on."""
    embeddings = engine.retrieval.library.embeddings
    calls: list[int] = []
    real = embeddings.embed_documents
    monkeypatch.setattr(embeddings, "embed_documents", lambda texts: calls.append(len(texts)) or real(texts))
    return calls


def test_the_vocabulary_is_embedded_once_per_model(fresh_engine, monkeypatch):
    embedded = spy(fresh_engine, monkeypatch)
    first = fresh_engine.styles.describe(png(line_sketch()))
    assert sum(embedded) >= sum(len(v) for v in VOCABULARY.values())
    embedded.clear()
    fresh_engine.styles.describe(png(swatch()))
    assert embedded == []  # the vocabulary and the tags come from memory; only the image is embedded

    # another engine on this data folder (the next start, a server beside the Studio) reads them from there
    again = make_engine(fresh_engine.settings.data_dir)
    embedded = spy(again, monkeypatch)
    found = again.styles.describe(png(line_sketch()))
    assert embedded == []  # the vocabulary's phrases and the library's tags alike
    assert found.model_dump(exclude={"seconds"}) == first.model_dump(exclude={"seconds"})


@pytest.mark.parametrize(
    "data, words",
    [
        (b"meeting notes, not a picture", "is not an image"),
        (b"", "is empty"),
        (png(line_sketch())[:300], "truncated or corrupt"),
    ],
)
def test_bad_images_are_one_line(engine, data, words):
    with pytest.raises(BadInput) as err:
        engine.styles.describe(data)
    line = str(err.value)
    assert words in line and "\n" not in line and line.startswith("the image to describe")


def test_an_enormous_image_is_refused_before_it_is_decoded(tmp_path, tiny_models):
    small = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True), max_input_pixels=10_000)
    with pytest.raises(BadInput, match=r"200×200 pixels; the limit is 0 megapixels"):
        small.styles.describe(png(Image.new("RGB", (200, 200))))
    with pytest.raises(BadInput, match="k must be between 1 and 20"):
        small.styles.describe(png(line_sketch()), k=0)


# ---- the CLI --------------------------------------------------------------------------------------------------------


def test_the_cli_prints_the_prompt_and_json_and_refuses_a_bad_file_in_one_line(tmp_path, tiny_models, engine, capsys):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    local = ["--profile", "tiny", "--data-dir", str(data), "--device", "cpu"]
    sketch = tmp_path / "house.png"
    line_sketch().save(sketch)
    done = subprocess.run([sys.executable, "-m", "engine", "describe", str(sketch), *local], cwd=REPO,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == engine.styles.describe(sketch.read_bytes()).prompt
    assert len(done.stdout.strip().splitlines()) == 1

    assert main(["describe", str(sketch), "--json", "-k", "3", *local]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["prompt"] == done.stdout.strip() and all(len(v) == 3 for v in found["terms"].values())

    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    for path in (notes, tmp_path / "missing.png"):
        assert main(["describe", str(path), *local]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
