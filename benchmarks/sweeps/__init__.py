"""Quality and speed sweeps on the default model: most are recipes in `recipes/` run by quantlab's one runner,
each followed by its own PASS/FAIL/INFO checks."""
