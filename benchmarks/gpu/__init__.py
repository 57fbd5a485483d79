"""Scripts for a lent GPU, each with a CPU dry run (`--shape tiny`) to check it before spending device time;
the run books beside them (`*.md`) say what to carry and the one device call to make."""
