"""The style picks of the LCEL chain (engine/render/styles.py) over a real style library: Chroma in a temporary
folder, the tiny retrieval CLIP built in memory. A render's references are the top k for its prompt (the first used),
a named style, or a blend; none when retrieval is off; one per region."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput
from engine.library import StyleLibrary, chroma_client
from engine.render.styles import pick_region_styles, pick_styles
from engine.schema import GenerateRequest, Region
from tests.engine.render.dummies import clip_embeddings

PROMPT = "a timber cabin at dusk"


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def style_images() -> dict[str, Image.Image]:
    stripes = np.array([[255, 0, 255], [0, 255, 0]], np.uint8).repeat(4, axis=0)[:, None, :]
    return {
        "Walnut": Image.new("RGB", (48, 48), (110, 70, 40)),
        "Linen": Image.new("RGB", (48, 48), (235, 225, 205)),
        "Neon stripes": Image.fromarray(np.tile(stripes, (6, 48, 1))),
        "Noise": Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)),
    }


@pytest.fixture(scope="module")
def embeddings():
    return clip_embeddings()


@pytest.fixture(scope="module")
def library(tmp_path_factory, embeddings) -> StyleLibrary:
    """Four styles of clearly different looks (the tests only read it)."""
    lib = StyleLibrary(chroma_client(tmp_path_factory.mktemp("styles")), embeddings)
    for name, image in style_images().items():
        lib.add(png(image), name, description=f"{name.lower()} look")
    return lib


def request(**values) -> GenerateRequest:
    return GenerateRequest.build(**{"prompt": PROMPT, **values})


def ranked(library: StyleLibrary, text: str) -> list[tuple[str, float]]:
    """Every style by cosine similarity to `text`, best first, computed here from the stored vectors."""
    query = np.array(library.embeddings.embed_query(text))
    scores = [(s.name, float(query @ np.array(library.vector(s.id)))) for s in library.list()]
    return sorted(scores, key=lambda x: -x[1])


def test_retrieval_gives_the_k_nearest_styles_best_first_and_uses_the_first(library):
    hits = pick_styles(library, request(k=3))
    expected = ranked(library, PROMPT)[:3]
    assert [h.name for h in hits] == [name for name, _ in expected]
    assert [h.score for h in hits] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert [h.used for h in hits] == [True, False, False]
    assert all(h.weight == 1.0 and h.source == "user" for h in hits)


def test_k_bounds_the_hits(library):
    assert len(pick_styles(library, request(k=1))) == 1
    assert len(pick_styles(library, request(k=20))) == 4  # no more than the library holds


def test_retrieval_off_gives_no_reference_even_with_a_style_named(library):
    assert pick_styles(library, request(use_style=False)) == []
    assert pick_styles(library, request(use_style=False, style="Walnut")) == []


def test_a_named_style_is_the_one_reference_whatever_its_rank(library):
    last = ranked(library, PROMPT)[-1]
    hits = pick_styles(library, request(style=last[0].upper()))  # names match whatever their case
    assert [(h.name, h.used, h.weight) for h in hits] == [(last[0], True, 1.0)]
    assert hits[0].score == pytest.approx(last[1], abs=1e-5)  # scored against the prompt all the same


def test_a_blend_uses_each_style_at_its_weight_in_order(library):
    hits = pick_styles(library, request(blend=[{"style": "Noise", "weight": 2.0}, {"style": "walnut", "weight": 0.5}]))
    assert [(h.name, h.weight, h.used) for h in hits] == [("Noise", 2.0, True), ("Walnut", 0.5, True)]


def test_a_style_by_its_id(library):
    sid = library.find("Linen").id
    assert [h.name for h in pick_styles(library, request(style=sid))] == ["Linen"]


def test_an_unknown_style_is_one_line_naming_the_known_ones(library):
    with pytest.raises(BadInput) as caught:
        pick_styles(library, request(style="Velvet"))
    assert str(caught.value) == "unknown style 'Velvet'; known styles: Linen, Neon stripes, Noise, Walnut"


def mask() -> bytes:
    return png(Image.new("L", (64, 64), 255))


def test_each_region_gets_its_named_style_or_the_nearest_to_its_words(library):
    regions = [Region(mask=mask(), style="Walnut"), Region(mask=mask(), words="a red chair")]
    hits = pick_region_styles(library, request(regions=regions))
    assert [h.name for h in hits] == ["Walnut", ranked(library, "a red chair")[0][0]]
    assert all(h.used for h in hits)


def test_no_region_no_pick(library):
    assert pick_region_styles(library, request()) == []


def test_an_empty_library_retrieves_nothing_and_a_region_is_refused_in_one_line(tmp_path, embeddings):
    empty = StyleLibrary(chroma_client(tmp_path / "chroma"), embeddings)
    assert pick_styles(empty, request()) == []
    with pytest.raises(BadInput) as caught:
        pick_region_styles(empty, request(regions=[Region(mask=mask(), words="walnut veneer")]))
    assert str(caught.value) == "region 1: the style library is empty; add a style, or turn regions off"
