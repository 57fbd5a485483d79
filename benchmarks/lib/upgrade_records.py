"""Converts the records the llama.cpp cross-checks wrote before `BenchRecord` existed (flat JSON objects, the
provenance copied into each) to the declared schema, changing field names and nesting only:

    python -m benchmarks.lib.upgrade_records results/gguf-speed-vs-llama-bench.ndjson \
        results/gguf-batching-ceiling.ndjson

Deterministic and idempotent: a line that already is a `BenchRecord` is kept as it is. Every converted line is
checked to flatten back to exactly the object it came from (same keys, same values) before the file is replaced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.lib.records import BenchRecord, write_records

ENVELOPE = ("run_id", "timestamp", "host", "quantlab_version")
TOOLS = ("llama_cpp_python", "llama_cpp_build")
# the benchmark that writes each old shape (told apart by a key only it has) and the keys its run was asked for
SHAPES = {
    "samples": (
        "benchmarks.crosschecks.gguf_decode_vs_llama_bench",
        ("model", "prompt_tokens", "decode_steps", "repeats"),
    ),
    "levels": (
        "benchmarks.crosschecks.served_batching_vs_batched_bench",
        ("model", "scheme", "prompt_tokens", "new_tokens"),
    ),
}


def upgrade(old: dict) -> BenchRecord:
    if "schema_version" in old:
        return BenchRecord.model_validate(old)
    [(benchmark, settings)] = [shape for key, shape in SHAPES.items() if key in old]
    grouped = {*ENVELOPE, *TOOLS, *settings}
    record = BenchRecord(
        benchmark=benchmark,
        **{key: old[key] for key in ENVELOPE},
        tools={key: old[key] for key in TOOLS if key in old},
        settings={key: old[key] for key in settings},
        measurement={key: value for key, value in old.items() if key not in grouped},
    )
    if flatten(record) != old:
        raise ValueError(f"run {old['run_id']}: the converted record does not flatten back to the original")
    return record


def flatten(record: BenchRecord) -> dict:
    """The old flat object of a converted record: envelope, tools, settings and measurement side by side."""
    data = json.loads(record.model_dump_json())
    return {
        **{key: data[key] for key in ENVELOPE},
        **data["tools"],
        **data["settings"],
        **data["measurement"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for path in args.files:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records = [upgrade(old) for old in lines]
        write_records(path, records)
        print(f"{path}: {len(records)} records in the declared schema")


if __name__ == "__main__":
    main()
