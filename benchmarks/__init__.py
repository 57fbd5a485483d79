"""quantlab's benchmarks, run as modules from the repository root (`python -m benchmarks.sweeps.gguf_quality`):
`sweeps/` (recipe-driven quality and speed sweeps), `crosschecks/` (quantlab against upstream tools or against
itself), `gpu/` (scripts and run books for a lent GPU), and `lib/`, the code they share. See README.md."""
