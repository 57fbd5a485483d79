"""The HTML report page: the answer first (`answer`), SVG plots (`svg`, `charts`), sortable tables (`tables`),
assembled with its inlined script and style by `render`."""
