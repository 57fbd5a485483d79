"""quantlab measured against upstream tools (transformers' generate(), the bare quantization libraries,
llama-bench, llama-batched-bench) or against itself (its compiled and eager decode loops, its load generator,
what its CPU FP8 path really runs), so its own figures can be trusted."""
