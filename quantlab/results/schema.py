"""The one base of every results model, so what a record may hold and how it is written is said once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Unknown keys are refused (a misspelt field is an error, not a value silently lost). A measurement that came
    out infinite or NaN (a diverged model's perplexity, an overflowing fp16 score) is written as the JSON string
    "Infinity" or "NaN", which reads back as the same float: pydantic's default writes null, which the float field
    then refuses, so one such number would make its results file unreadable."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")
