"""The product-photo prompt: an editable template with named fields, filled from each row's attributes."""

from __future__ import annotations

import re
import string

from ..errors import BadInput

DEFAULT_TEMPLATE = (
    "Professional product photography of a {product_type}, featuring {key_features}, {color_material}, {design}, "
    "placed on clean white background, studio lighting, 8k, 85mm lens f/2.8"
)
# Without an LLM there are no attributes: the description itself goes into the prompt.
DESCRIPTION_TEMPLATE = (
    "Professional product photography of {description}, placed on clean white background, studio lighting, 8k, "
    "85mm lens f/2.8"
)
# What a template may name: the LLM's attributes and the sheet's own columns.
FIELDS = ("product_type", "key_features", "color_material", "design", "name", "category", "description", "id")


class PromptTemplate:
    """`{field}` placeholders; a field a row lacks is left out together with the comma before it."""

    def __init__(self, text: str = DEFAULT_TEMPLATE):
        text = (text or "").strip()
        if not text:
            raise BadInput("the prompt template is empty")
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise BadInput(f"the prompt template has a stray brace ({exc}); write fields as {{product_type}}") from None
        names = [f for _, f, _, _ in parsed if f is not None]
        unknown = [f for f in names if f not in FIELDS]
        if unknown:
            raise BadInput(f"the prompt template names unknown field '{{{unknown[0]}}}'; use {', '.join(FIELDS)}")
        if not names:
            raise BadInput("the prompt template names no field; use at least {product_type} or {description}")
        self.text = text
        self.fields = list(dict.fromkeys(names))

    def render(self, values: dict[str, str]) -> str:
        """Fill the fields; an empty one takes its clause with it ("…, featuring {key_features}, …")."""
        out = ""
        for literal, name, _, _ in string.Formatter().parse(self.text):
            out += literal
            if name is None:
                continue
            value = (values.get(name) or "").strip()
            if value:
                out += value
            elif "," in out:
                out = out[: out.rfind(",")]
        out = re.sub(r"\s*,(\s*,)+", ",", out)  # "a, , b" → "a, b"
        out = re.sub(r"\s{2,}", " ", out)
        return out.strip(" ,")
