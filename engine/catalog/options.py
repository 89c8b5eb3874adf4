"""What a catalog run is asked to do (plain data: the pages, the CLI and the server build it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import BadInput
from ..rules.models import rules
from ..schema import describe_validation_error
from .prompts import DEFAULT_TEMPLATE, DESCRIPTION_TEMPLATE, FIELDS, PromptTemplate
from .sheets import MAX_ROWS


class CatalogOptions(BaseModel):
    """What a catalog run is asked to do; saved in run.json (never the API key)."""

    model_config = ConfigDict(extra="forbid")

    text_column: str = Field(min_length=1)
    id_column: str | None = None
    name_column: str | None = None
    category_column: str | None = None
    source_lang: str = Field("de", pattern=r"^[a-z]{2,3}$")
    # at least one {field} of engine/catalog/prompts.py FIELDS, and no other braces
    template: str = Field(
        DEFAULT_TEMPLATE, json_schema_extra={"pattern": r"^[^{}]*(\{(" + "|".join(FIELDS) + r")\}[^{}]*)+$"}
    )
    negative_prompt: str = "text, watermark, logo, blurry, cropped"
    seed: int = Field(42, ge=0, le=2**32 - 1 - MAX_ROWS)  # plus the row index stays a valid seed
    steps: int = Field(20, ge=1, le=150)
    size: int = Field(512, ge=64, le=1024)
    guidance: float = Field(7.5, ge=0, le=30)
    style: str | None = None
    model: Literal["sd15", "flux"] = "sd15"  # flux: FLUX.1-schnell + LoRA (its defaults: 4 steps, guidance 0)
    llm: Literal["local", "server", "none"] = "local"  # a transformers model, an OpenAI-compatible URL, or none
    llm_url: str | None = None
    llm_model: str = "local-model"
    retries: int = Field(2, ge=0, le=5)
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogOptions:
        for name in ("steps", "guidance"):  # the model's own defaults (FLUX.1-schnell: 4 steps, guidance 0)
            if name not in self.model_fields_set:
                setattr(self, name, getattr(rules(self.model), name))
        if self.style and not rules(self.model).styles:
            raise ValueError(f"{self.model.upper()} renders from text only here: choose no style, or the SD 1.5 model")
        if self.llm == "server" and not self.llm_url:
            raise ValueError("an LLM server needs its URL (e.g. http://127.0.0.1:1234/v1)")
        if self.llm == "none" and self.template == DEFAULT_TEMPLATE:
            self.template = DESCRIPTION_TEMPLATE  # no attributes to fill: describe with the row's own words
        PromptTemplate(self.template)  # a bad template fails now, as one line
        return self

    @classmethod
    def build(cls, **values: Any) -> CatalogOptions:
        if values.get("llm_url") and "llm" not in values:
            values["llm"] = "server"
        try:
            return cls(**values)
        except ValidationError as exc:
            raise BadInput(describe_validation_error(exc)) from None
