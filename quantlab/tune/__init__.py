"""`quantlab tune`: the GGUF of a model that is best under a byte budget, found by measuring each tensor group's
sensitivity with llama.cpp itself, allocating types under the budget, and verifying the artifact on held-out text.

groups (what is allocated) → sensitivity (measured, resumable) → allocate (the knapsack) → tuner (the command's
steps; the artifact is made by the ordinary GGUF backend from per-tensor types)."""
