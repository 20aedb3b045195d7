"""Soak and durability: 32 clients on `tailor serve default` for five minutes, then a crash and a restart.

What a server must survive before anyone leaves it running: hours of mixed traffic without failing a request or
growing without bound, and a crash without losing what it acknowledged. On localhost, for ``--duration`` seconds:

- **traffic**: 32 clients, each sending its next request when the last one ends: chat with the bare XQuAD questions
  (short prompts, ``max_tokens`` 24 so that a small CPU keeps up), half streamed and half not, three in four greedy
  and one in four sampled (temperature 0.7, no seed: the scheduler batches two sampling settings; a per-request
  seed would make every sampled request a batch of its own, since an engine call takes one seed); after
  about one answer in three the client posts a thumbs rating to ``/v1/feedback``, and every feedback id that got
  a 2xx is remembered. A 429 (queue full) is allowed: the client waits ``Retry-After`` (at most 5 s) and goes on.
- **statuses**: every response is counted by status; an error event inside a stream (after its 200) counts as a
  5xx, since it is the server failing a request it accepted. Target: zero 5xx.
- **memory**: the server process's RSS (psutil) every 5 s. The first 20% of the run is warm-up (allocator pools,
  the engine's first batches of each size); growth is measured from the first sample after it to the last one
  before the crash. Target: under 10%.
- **durability**: at the deadline the server is killed with SIGKILL while the clients are still sending (the
  harshest moment: acknowledgements were in flight), then restarted on the same SQLite store, and the
  acknowledged feedback ids are looked up in it. Target: all of them. Requests cut off by the kill are counted
  apart (``cut_by_kill``), not as errors.

The last line is one JSON object with ``by_status``, ``5xx``, ``rss_growth_pct``, ``feedback_acked``,
``feedback_found_after_kill`` and ``ratio`` (found ÷ acked). The server logs (JSON lines) and the store stay in a
temporary folder named on stderr.

    python benchmarks/serve_soak.py --quick          # 60 s
    python benchmarks/serve_soak.py                  # 300 s (the target)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from tailorlm.core.cpu import machine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
from generate_throughput import prompts
from serve_load import MODEL, Server, httpx, start_server, stop_server, tail

CLIENTS = 32
MAX_TOKENS = 24
SAMPLE_EVERY_S = 5.0
WARM_UP = 0.2  # share of the run before the RSS baseline
FEEDBACK_SHARE = 1 / 3


@dataclass
class Soak:
    """What the clients and the sampler saw."""

    statuses: Counter[str] = field(default_factory=Counter)  # chat requests
    feedback_statuses: Counter[str] = field(default_factory=Counter)
    acked: set[str] = field(default_factory=set)  # feedback ids the server answered 2xx for
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    cut_by_kill: int = 0
    killed: bool = False
    died_at_s: float | None = None  # the server exited by itself before the deadline


def server_error(status: str) -> bool:
    return status.startswith("5") or status.startswith("stream:")


async def chat(
    client: httpx.AsyncClient, base: str, text: str, *, stream: bool, sampled: bool
) -> tuple[str, str | None, float]:
    """One chat request: (status, response id of an answer, seconds to wait before the next request)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7 if sampled else 0,
        "stream": stream,
    }
    url = f"{base}/v1/chat/completions"
    if not stream:
        resp = await client.post(url, json=body)
        if resp.status_code != 200:
            wait = min(float(resp.headers.get("retry-after", 1)), 5.0) if resp.status_code == 429 else 0.0
            return str(resp.status_code), None, wait
        return "200", resp.json()["choices"][0]["response_id"], 0.0
    response_id: str | None = None
    done = False
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            wait = min(float(resp.headers.get("retry-after", 1)), 5.0) if resp.status_code == 429 else 0.0
            return str(resp.status_code), None, wait
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"] or {}
                return f"stream:{error.get('code') or error.get('type') or 'error'}", None, 0.0
            for choice in chunk.get("choices", []):
                response_id = choice.get("response_id", response_id)
    if not done or response_id is None:
        return "stream:incomplete", None, 0.0
    return "200", response_id, 0.0


async def feedback(client: httpx.AsyncClient, base: str, response_id: str, rating: str, soak: Soak) -> None:
    resp = await client.post(f"{base}/v1/feedback", json={"response_id": response_id, "rating": rating})
    soak.feedback_statuses[str(resp.status_code)] += 1
    if 200 <= resp.status_code < 300:
        soak.acked.add(resp.json()["id"])


async def client_loop(
    index: int, client: httpx.AsyncClient, base: str, texts: list[str], deadline: float, soak: Soak
) -> None:
    rng = random.Random(index)  # each client's mix is reproducible
    while time.monotonic() < deadline and not soak.killed:
        try:
            status, response_id, wait = await chat(
                client,
                base,
                rng.choice(texts),
                stream=rng.random() < 0.5,
                sampled=rng.random() < 0.25,
            )
            if soak.killed:  # answered in the instant of the kill: neither counted nor followed up
                soak.cut_by_kill += 1
                return
            soak.statuses[status] += 1
            if response_id is not None and rng.random() < FEEDBACK_SHARE:
                await feedback(client, base, response_id, rng.choice(["up", "down"]), soak)
            if wait:
                await asyncio.sleep(wait)
        except httpx.HTTPError as err:
            if soak.killed:
                soak.cut_by_kill += 1
                return
            soak.statuses[f"exception:{type(err).__name__}"] += 1
            await asyncio.sleep(0.5)


async def sample_rss(pid: int, start: float, soak: Soak) -> None:
    process = psutil.Process(pid)
    while not soak.killed:
        soak.rss.append((time.monotonic() - start, process.memory_info().rss))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def run_traffic(server: Server, texts: list[str], duration: float, clients: int) -> Soak:
    """Traffic until the deadline, the last RSS sample, then SIGKILL with the clients still sending."""
    soak = Soak()
    start = time.monotonic()
    deadline = start + duration
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
        sampler = asyncio.create_task(sample_rss(server.proc.pid, start, soak))
        tasks = [
            asyncio.create_task(client_loop(i, client, server.base, texts, deadline, soak)) for i in range(clients)
        ]
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            if server.proc.poll() is not None:
                soak.died_at_s = time.monotonic() - start
                break
        if soak.died_at_s is not None:
            soak.killed = True  # nothing left to kill; the clients stop
            await asyncio.gather(*tasks, return_exceptions=True)
            sampler.cancel()
            return soak
        soak.rss.append((time.monotonic() - start, psutil.Process(server.proc.pid).memory_info().rss))
        soak.killed = True
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        sampler.cancel()
        await asyncio.gather(*tasks, sampler, return_exceptions=True)
    return soak


def found_after_restart(workdir: Path, store: Path, sets: list[str], acked: set[str]) -> tuple[int, dict[str, int]]:
    """Restart the server on the crashed store, then count the acknowledged feedback ids the store holds."""
    from tailorlm.serve.store import open_store

    server = start_server(workdir, "restart", store, sets)  # ready: it opened (and recovered) the store
    try:
        opened = open_store(store)
        try:
            present = {record.id for record in opened.feedback()}
            counts = opened.counts()
        finally:
            opened.close()
    finally:
        stop_server(server)
    return len(acked & present), counts


def table(soak: Soak, summary: dict[str, Any]) -> Table:
    t = Table(title=f"tailor serve {MODEL}: {summary['clients']} clients for {summary['duration_s']:.0f} s")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_row("chat requests", str(summary["requests"]), "")
    for status, n in sorted(soak.statuses.items()):
        t.add_row(f"  status {status}", str(n), "")
    t.add_row("5xx (incl. errors inside a stream)", str(summary["5xx"]), "0")
    t.add_row("feedback posted / acknowledged", f"{sum(soak.feedback_statuses.values())} / {len(soak.acked)}", "")
    t.add_row("cut off by the kill", str(soak.cut_by_kill), "")
    t.add_row("RSS after warm-up → end", f"{summary['rss_start_mb']} → {summary['rss_end_mb']} MB", "")
    t.add_row("RSS growth after warm-up", f"{summary['rss_growth_pct']}%", "< 10%")
    t.add_row(
        "acknowledged feedback found after SIGKILL",
        f"{summary['feedback_found_after_kill']} / {summary['feedback_acked']}",
        "all",
    )
    t.add_row("RSS samples (MB)", " ".join(f"{b / 2**20:.0f}" for _, b in soak.rss), "")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--quick", action="store_true", help="60 s of traffic")
    args = parser.parse_args()
    if args.quick:
        args.duration = 60.0
    texts = prompts("short", 200)
    workdir = Path(tempfile.mkdtemp(prefix="serve_soak-"))
    store = workdir / "feedback.db"
    err = Console(stderr=True)
    err.print(f"{args.clients} clients for {args.duration:.0f} s; logs and store in {workdir}")

    sets = ["rate_limit.rpm=1000000"]  # every client is 127.0.0.1: one rate-limit bucket
    server = start_server(workdir, "soak", store, sets)
    try:
        soak = asyncio.run(run_traffic(server, texts, args.duration, args.clients))
    finally:
        stop_server(server, signal.SIGKILL)
    if soak.died_at_s is not None:
        raise SystemExit(f"the server died after {soak.died_at_s:.0f} s; its log: {server.log}\n{tail(server.log)}")
    found, counts = found_after_restart(workdir, store, sets, soak.acked)

    after_warm_up = [b for t, b in soak.rss if t >= WARM_UP * args.duration] or [soak.rss[-1][1]]
    rss_start, rss_end = after_warm_up[0], soak.rss[-1][1]
    errors_5xx = sum(n for s, n in soak.statuses.items() if server_error(s))
    errors_5xx += sum(n for s, n in soak.feedback_statuses.items() if server_error(s))
    summary = {
        "benchmark": "serve_soak",
        "cpu": machine(),
        "duration_s": args.duration,
        "clients": args.clients,
        "requests": sum(soak.statuses.values()),
        "by_status": dict(sorted(soak.statuses.items())),
        "feedback_by_status": dict(sorted(soak.feedback_statuses.items())),
        "5xx": errors_5xx,
        "cut_by_kill": soak.cut_by_kill,
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_max_mb": round(max(b for _, b in soak.rss) / 2**20, 1),
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2),
        "feedback_acked": len(soak.acked),
        "feedback_found_after_kill": found,
        "store_counts_after_restart": counts,
        "ratio": round(found / len(soak.acked), 4) if soak.acked else None,
    }
    Console(width=120).print(table(soak, summary))
    if errors_5xx:
        err.print(f"[red]server errors[/]: see {server.log}\n{tail(server.log)}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
