"""A trivial OpenAI-compatible completions endpoint: streams `max_tokens` fixed chunks, no model.

It exists to measure the measuring: the load generator's own ceiling
(benchmarks/crosschecks/load_generator_ceiling.py) and exact expectations in tests (a known delay per token gives
a known TTFT and ITL). It never stands in for an engine in a result.

Run: `python -m quantlab.serve.trivial --port P [--token-delay-ms D] [--fail-every N] [--short-every N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys

from quantlab.serve.engines import LOOPBACK, LaunchPlan


def plan(port: int, *, token_delay_ms: float = 0.0, fail_every: int = 0, short_every: int = 0) -> LaunchPlan:
    command = [
        sys.executable,
        "-m",
        "quantlab.serve.trivial",
        "--port",
        str(port),
        "--token-delay-ms",
        str(token_delay_ms),
        "--fail-every",
        str(fail_every),
        "--short-every",
        str(short_every),
    ]
    return LaunchPlan(
        command=command,
        env=dict(os.environ),
        base_url=f"http://{LOOPBACK}:{port}",
        health_path="/health",
        model="trivial",
    )


def build_app(token_delay_s: float = 0.0, fail_every: int = 0, short_every: int = 0):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    counter = itertools.count(1)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def completions(request: Request):
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        index = next(counter)
        if fail_every and index % fail_every == 0:
            return JSONResponse({"error": "injected failure"}, status_code=500)
        produced = n - 1 if short_every and index % short_every == 0 else n

        async def stream():
            for i in range(produced):
                if token_delay_s:
                    await asyncio.sleep(token_delay_s)
                chunk = {
                    "choices": [
                        {
                            "text": f" t{i}",
                            "index": 0,
                            "finish_reason": ("length" if produced == n else "stop") if i == produced - 1 else None,
                        }
                    ]
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/health", health), Route("/v1/completions", completions, methods=["POST"])])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-every", type=int, default=0, help="answer every Nth request with HTTP 500")
    parser.add_argument("--short-every", type=int, default=0, help="end every Nth stream one token early")
    args = parser.parse_args(argv)
    app = build_app(args.token_delay_ms / 1e3, args.fail_every, args.short_every)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
