"""The LCEL chain: {sketch, prompt, options} → attach the styles → generate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from .library import StyleLibrary
from .schema import GenerateRequest, StyleHit


def pick_styles(library: StyleLibrary, request: GenerateRequest) -> list[StyleHit]:
    """The references for a request: a blend, an explicit style, or the top k for the prompt (first used)."""
    if not request.use_style:
        return []
    query = library.embeddings.embed_query(request.prompt)
    if request.blend or request.style:
        wanted = [(b.style, b.weight) for b in request.blend] or [(request.style, 1.0)]
        hits = []
        for name, weight in wanted:
            info = library.find(name)
            score = float(sum(a * b for a, b in zip(query, library.vector(info.id), strict=True)))
            hits.append(StyleHit(info.id, info.name, score, info.description, info.tags, info.source, weight, True))
        return hits
    hits = library.search_vector(query, k=request.k)
    if hits:
        hits[0].used = True
    return hits


def build_chain(library: StyleLibrary, generate: Callable[[dict[str, Any]], Any]) -> Runnable:
    """The seed's shape: `RunnablePassthrough.assign(styles=...) | RunnableLambda(generate)`."""
    retrieve = RunnableLambda(lambda x: pick_styles(library, x["options"]), name="retrieve_styles")
    return RunnablePassthrough.assign(styles=retrieve) | RunnableLambda(generate, name="generate")
