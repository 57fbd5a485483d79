"""Sweeps: a recipe (model(s) × methods × bench settings × rigs) validated before any work (`recipe`), its
dry-run plan with the memory fit of every cell per rig (`plan`), and the one runner that executes it, resumable
after a kill at any point (`runner`). `quantlab run`, `quantlab demo` and the sweeping benchmarks all go
through it."""
