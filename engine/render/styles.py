"""The LCEL chain: {sketch, prompt, options} → attach the styles (global and per region) → generate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BadInput
from ..schema import GenerateRequest, StyleHit

if TYPE_CHECKING:
    from ..library import StyleLibrary


def chosen_style(library: StyleLibrary, name: str, query: list[float], weight: float = 1.0) -> StyleHit:
    """A style the user named, scored against the words it was chosen for."""
    info = library.find(name, missing=BadInput)
    score = float(sum(a * b for a, b in zip(query, library.vector(info.id), strict=True)))
    return StyleHit(info.id, info.name, score, info.description, info.tags, info.source, weight, True)


def pick_styles(library: StyleLibrary, request: GenerateRequest) -> list[StyleHit]:
    """The references for a request: a blend, an explicit style, or the top k for the prompt (first used)."""
    if not request.use_style:
        return []
    query = library.embeddings.embed_query(request.prompt)
    if request.blend or request.style:
        wanted = [(b.style, b.weight) for b in request.blend] or [(request.style, 1.0)]
        return [chosen_style(library, name, query, weight) for name, weight in wanted]
    hits = library.search_vector(query, k=request.k)
    if hits:
        hits[0].used = True
    return hits


def pick_region_styles(library: StyleLibrary, request: GenerateRequest) -> list[StyleHit]:
    """One reference per region: its explicit style, or the nearest style to its own words."""
    hits = []
    for i, region in enumerate(request.regions, start=1):
        query = library.embeddings.embed_query(region.words or request.prompt)
        if region.style:
            hit = chosen_style(library, region.style, query)
        else:
            found = library.search_vector(query, k=1)
            if not found:
                raise BadInput(f"region {i}: the style library is empty; add a style, or turn regions off")
            hit = found[0]
        hit.used = True
        hits.append(hit)
    return hits
