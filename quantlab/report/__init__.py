"""Reports derived from results only: tables, notes, plots and the "which format to choose" analysis.

Never imports a method, a runtime or the bench's machinery, so reading and rendering results stays cheap. The
names below are the API; the modules hold the parts a notebook may show one by one (`tables`, `choose`, `notes`,
`plots`, `recommend`):

- `selection`: which records a report shows (`select`) and which of them compare;
- `tables`: the tables as DataFrames, and the † marks they share;
- `choose`: the measured "which format to choose" table;
- `notes`: everything printed under the tables;
- `render`: Markdown, HTML, CSV, and the files written next to a results file (`write_report`).
"""

from quantlab.report.render import FORMATS, csv, html, markdown, write_report
from quantlab.report.selection import select

__all__ = ["FORMATS", "csv", "html", "markdown", "select", "write_report"]
