"""`quantlab compare`: two or more runs side by side, from their results files only.

- `match`: which record of one run is the same artifact, measured the same way, as a record of another;
- `metrics`: every figure a record holds, named, with the spread it carries;
- `spread`: when a difference counts as beyond the runs' own spread (the one place that decides it);
- `build`: the comparison, A being the reference run;
- `render`: Markdown and a self-contained HTML page.
"""

from quantlab.report.compare.build import Comparison, compare
from quantlab.report.compare.render import FORMATS, html, markdown

__all__ = ["FORMATS", "Comparison", "compare", "html", "markdown"]
