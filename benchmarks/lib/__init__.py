"""What the benchmarks share, so no benchmark imports another:

- `artifacts`: artifacts kept in the quantlab cache, always through `quantlab.quantizer.obtain` (reused while
  they are what the request asks for, else quantized in place).
- `random_model`: the one random-weight model builder (a real-size Llama-3.1-8B shape for GPU speed checks, a
  tiny one for CPU dry runs).
- `records`: the one declared schema of the records that are not quantlab Results (`BenchRecord`), with its
  writer and reader.
- `console`: the PASS/FAIL/INFO check line, the timestamped log line and the timed step.
- `sweep`: the options of the recipe-driven sweeps and the run of their recipe.
- `upgrade_records`: converts records written before `BenchRecord` existed (run once on the committed files).
"""
