"""Serving throughput: 16 concurrent streaming clients against `tailor serve default`, batched and one at a time.

Both sides are the same `tailor serve default` (SmolLM2-135M on the CTranslate2 engine), each in its own
subprocess, asked the same prompts by the same 16 clients with the same greedy budget; only the scheduler differs:

- **ours**: the server as it ships (``batching.max_batch=16``: concurrent requests are generated together);
- **baseline**: the same server with ``--set batching.max_batch=1``: one row per engine call, i.e. the same engine
  answering one request at a time while the others wait in its queue.

Every client streams (SSE, ``stream_options.include_usage``) and sends its next request as soon as the last one
ends, until the fixed total is answered. Measured per side:

- aggregate completion tokens/s: completion tokens of all answers ÷ the wall time of the whole phase (what a
  fleet of users gets out of the machine), and requests/s;
- time to first token (from sending the request to the first non-empty content delta) and whole-request latency,
  p50 and p95 (queueing included: that is what a user waits);
- statuses: any non-200 or an error event inside a stream is an error, except 429 (queue full: deliberate back
  pressure, counted apart, retried after ``Retry-After``);
- mean rows per engine call, read from the server's ``tailor_batch_rows`` histogram: how much batching happened.

Shapes: ``rag`` (default, the target) sends RAG-length prompts, three XQuAD paragraphs and a question (~550 tokens,
lengths varying as retrieved passages do: ``generate_throughput.prompts``). On a CPU their prefill is
compute-bound, so batching cannot multiply it, and CTranslate2 only batches prompts of similar length
(``serve/scheduler.py``). ``chat`` sends the bare questions (~40 tokens), where decoding dominates and batching
pays. The last line is one JSON object with ``ratio`` (ours ÷ baseline aggregate completion tokens/s),
``ttft_p50_ms`` and ``ttft_p95_ms`` of ours on the first shape, ``errors`` (non-429, both sides, every shape),
and any further shape under ``shapes``. The server logs (JSON lines) stay in a temporary folder named on stderr.

    python benchmarks/serve_load.py --quick                  # rag: 16 requests x 32 tokens, under 3 minutes
    python benchmarks/serve_load.py                          # rag and chat: 64 requests x 64 tokens each
    python benchmarks/serve_load.py --shape chat --requests 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from tailorlm.core.cpu import machine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_throughput import prompts  # benchmarks/ is not a package

CLIENTS = 16
MODEL = "default"
SHAPES = {"rag": "rag", "chat": "short"}  # our name -> generate_throughput's


# -- the server ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `tailor serve` subprocess: its base URL, process and log file (stdout and stderr, JSON lines)."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_server(workdir: Path, name: str, store: Path, sets: list[str], timeout: float = 180.0) -> Server:
    """`tailor serve default` on a free port, open on 127.0.0.1 (no keys file), ready when this returns."""
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "tailorlm.cli.main", "serve", MODEL, "--port", str(port)]
    cmd += ["--store", str(store), "--keys-file", str(workdir / "keys.json")]
    for s in sets:
        cmd += ["--set", s]
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} server exited with {proc.returncode}; its log: {log}\n{tail(log)}")
        try:
            if httpx.get(f"{server.base}/ready", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server, signal.SIGKILL)
    raise SystemExit(f"{name} server not ready after {timeout:.0f} s; its log: {log}\n{tail(log)}")


def stop_server(server: Server, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Send ``sig`` (SIGTERM drains, SIGKILL crashes) and wait for the process; returns its exit code."""
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return server.proc.wait(10)


@contextmanager
def serving(workdir: Path, name: str, store: Path, sets: list[str]) -> Iterator[Server]:
    server = start_server(workdir, name, store, sets)
    try:
        yield server
    finally:
        stop_server(server)


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if log.exists() else ""


def batch_rows(base: str) -> tuple[float, float]:
    """(sum, count) of the server's ``tailor_batch_rows`` histogram: rows and engine calls so far."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = dict(re.findall(r"^tailor_batch_rows_(sum|count) ([0-9.e+]+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# -- the clients ---------------------------------------------------------------------------------------------------
@dataclass
class Phase:
    """What the clients saw in one phase: one entry per answered request, statuses for every attempt."""

    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


async def stream_one(client: httpx.AsyncClient, base: str, text: str, max_tokens: int, phase: Phase) -> float:
    """One streamed chat request; records it in ``phase``. Returns the seconds to wait before the next (429)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, int] | None = None
    done = False
    failed: str | None = None
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                phase.statuses[str(resp.status_code)] += 1
                return float(resp.headers.get("retry-after", 1)) if resp.status_code == 429 else 0.0
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:  # the status was already sent: the server reports a failure in the stream
                    error = chunk["error"] or {}
                    failed = f"stream:{error.get('code') or error.get('type') or 'error'}"
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    if first is None and choice.get("delta", {}).get("content"):
                        first = time.perf_counter() - start
    except httpx.HTTPError as err:
        phase.statuses[f"exception:{type(err).__name__}"] += 1
        return 0.0
    if failed or not done or usage is None:
        phase.statuses[failed or "stream:incomplete"] += 1
        return 0.0
    phase.statuses["200"] += 1
    phase.latency.append(time.perf_counter() - start)
    phase.ttft.append(first if first is not None else phase.latency[-1])  # an empty answer: its first event
    phase.completion_tokens += usage["completion_tokens"]
    phase.prompt_tokens += usage["prompt_tokens"]
    return 0.0


async def run_phase(base: str, texts: list[str], max_tokens: int, clients: int) -> tuple[Phase, float]:
    """``clients`` clients take the next prompt as soon as their last answer ends; returns (phase, wall seconds)."""
    phase = Phase()
    todo = list(enumerate(texts))
    todo.reverse()  # pop() from the end: request 0 first

    async def client_loop(client: httpx.AsyncClient) -> None:
        while todo:
            i, text = todo.pop()
            wait = await stream_one(client, base, text, max_tokens, phase)
            if wait:  # 429: back off as told, then ask again
                todo.append((i, text))
                await asyncio.sleep(wait)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    return phase, wall


def summarize(phase: Phase, wall: float, rows: tuple[float, float]) -> dict[str, Any]:
    answered = len(phase.latency)
    errors = sum(n for s, n in phase.statuses.items() if s not in ("200", "429"))
    return {
        "tokens_per_s": round(phase.completion_tokens / wall, 2),
        "requests_per_s": round(answered / wall, 3),
        "wall_s": round(wall, 2),
        "requests": answered,
        "completion_tokens": phase.completion_tokens,
        "prompt_tokens_mean": round(phase.prompt_tokens / max(answered, 1), 1),
        "ttft_p50_ms": ms(percentile(phase.ttft, 50)),
        "ttft_p95_ms": ms(percentile(phase.ttft, 95)),
        "latency_p50_ms": ms(percentile(phase.latency, 50)),
        "latency_p95_ms": ms(percentile(phase.latency, 95)),
        "rows_per_engine_call": round(rows[0] / rows[1], 2) if rows[1] else None,
        "by_status": dict(sorted(phase.statuses.items())),
        "errors": errors,
        "429": phase.statuses.get("429", 0),
    }


def measure(server: Server, texts: list[str], max_tokens: int, clients: int) -> dict[str, Any]:
    """One phase against ``server``, with the engine calls it made and the machine's load average around it (other
    work on a small machine moves these figures: a load above the core count means the run shared the CPU)."""
    before, load_before = batch_rows(server.base), os.getloadavg()[0]
    phase, wall = asyncio.run(run_phase(server.base, texts, max_tokens, clients))
    after = batch_rows(server.base)
    out = summarize(phase, wall, (after[0] - before[0], after[1] - before[1]))
    out["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return out


def warm_up(server: Server, text: str) -> None:
    """One request before timing: the engine's first-call allocations are not what a user waits for."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0}
    httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=120).raise_for_status()


# -- the report ----------------------------------------------------------------------------------------------------
def seconds(r: dict[str, Any], key: str) -> str:
    p50, p95 = r[f"{key}_p50_ms"], r[f"{key}_p95_ms"]
    return "-" if p50 is None else f"{p50 / 1000:.1f} / {p95 / 1000:.1f}"


def table(results: dict[str, dict[str, dict[str, Any]]], clients: int) -> Table:
    t = Table(title=f"tailor serve {MODEL}: {clients} streaming clients")
    for col in ("shape", "side", "tok/s", "req/s", "TTFT p50/p95 s", "latency p50/p95 s", "rows/call", "err", "429"):
        t.add_column(col, justify="left" if col in ("shape", "side") else "right")
    for shape, sides in results.items():
        for side, r in sides.items():
            t.add_row(
                shape,
                side,
                f"{r['tokens_per_s']:.1f}",
                f"{r['requests_per_s']:.2f}",
                seconds(r, "ttft"),
                seconds(r, "latency"),
                f"{r['rows_per_engine_call']}",
                str(r["errors"]),
                str(r["429"]),
            )
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["rag", "chat", "both"], default="both")
    parser.add_argument("--requests", type=int, default=64, help="answers per side and shape")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--quick", action="store_true", help="rag only, 16 requests x 32 tokens (under 3 minutes)")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.requests, args.max_tokens = "rag", 16, 32
    shapes = ["rag", "chat"] if args.shape == "both" else [args.shape]
    texts = {shape: prompts(SHAPES[shape], args.requests) for shape in shapes}
    workdir = Path(tempfile.mkdtemp(prefix="serve_load-"))
    err = Console(stderr=True)
    err.print(f"{args.clients} clients, {args.requests} requests x {args.max_tokens} tokens a side; logs: {workdir}")

    sets = ["rate_limit.rpm=1000000"]  # every client is 127.0.0.1: one rate-limit bucket
    results: dict[str, dict[str, dict[str, Any]]] = {shape: {} for shape in shapes}
    # Baseline first, then ours: each server starts once and answers every shape.
    for side, extra in (("baseline", ["batching.max_batch=1"]), ("ours", [])):
        with serving(workdir, side, workdir / f"{side}.db", sets + extra) as server:
            warm_up(server, texts[shapes[0]][0])
            for shape in shapes:
                results[shape][side] = r = measure(server, texts[shape], args.max_tokens, args.clients)
                err.print(f"{shape:4} {side:8} {r['tokens_per_s']:7.1f} tok/s  statuses {r['by_status']}")
            alive = server.proc.poll() is None
        if not alive:
            raise SystemExit(f"the {side} server died during the run; its log: {server.log}\n{tail(server.log)}")
    Console(width=120).print(table(results, args.clients))

    shapes_out = {}
    for shape, sides in results.items():
        ours, base = sides["ours"], sides["baseline"]
        ratio = ours["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else None
        shapes_out[shape] = {"ours": ours, "baseline": base, "ratio": None if ratio is None else round(ratio, 3)}
    first = shapes_out[shapes[0]]
    print(
        json.dumps(
            {
                "benchmark": "serve_load",
                "cpu": machine(),
                "shape": shapes[0],
                "clients": args.clients,
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "ours": first["ours"],
                "baseline": first["baseline"],
                "ratio": first["ratio"],
                "ttft_p50_ms": first["ours"]["ttft_p50_ms"],
                "ttft_p95_ms": first["ours"]["ttft_p95_ms"],
                "errors": sum(r["errors"] for sides in results.values() for r in sides.values()),
                "shapes": {shape: out for shape, out in shapes_out.items() if shape != shapes[0]},
            }
        )
    )


if __name__ == "__main__":
    main()
