"""The report's tables, in the order every format shows them: the Markdown report and the HTML page both walk
this one list, so the two never disagree on what a report holds."""

from __future__ import annotations

import pandas as pd

from quantlab.report.choose import choose_table
from quantlab.report.claims import claims_table
from quantlab.report.quality_detail import quality_detail_table
from quantlab.report.selection import with_artifact
from quantlab.report.tables import batch_table, gguf_table, load_table, main_table, tasks_table
from quantlab.results import Result


def sections(results: list[Result]) -> list[tuple[str | None, pd.DataFrame]]:
    """The report's tables in order, each built once, empty ones left out; the main table has no heading. An
    external server's record (no artifact) appears in the served table only."""
    own = with_artifact(results)
    tables = [
        (None, main_table(own)),
        ("Which format to choose (measured)", choose_table(own)),
        ("Quality in detail (llama-perplexity's statistics)", quality_detail_table(own)),
        ("Throughput by batch size", batch_table(own)),
        ("Task accuracy (lm-eval) and recovery", tasks_table(own)),
        ("Served under load (batching)", load_table(results)),
        ("GGUF: tensor types as written", gguf_table(own)),
        ("The guide's claims, measured here", claims_table(own)),
    ]
    return [(heading, table) for heading, table in tables if not table.empty]
