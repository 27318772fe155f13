"""Benchmark runner: wsclient against the other Python WebSocket clients, in one run.

    python benchmarks/run.py [--quick] [--rounds N] [--clients a,b] [--scenarios x,y]

Starts the peer (``server.py``) pinned to one CPU, then, round after round, runs every
scenario with every client, each in a fresh process pinned to the same CPU, in an order that
rotates between rounds. Writes ``RESULTS.md`` (medians, ratios to wsclient, the peer's CPU
share, the issue's targets) and ``results.json`` (every run, raw) next to this file.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scenarios import (
    CLIENT_BY_NAME,
    CLIENTS,
    CONCURRENT_CONNECTIONS,
    REFERENCE,
    ROUND_TRIPS_EACH,
    SCENARIO_BY_NAME,
    SCENARIOS,
    Client,
    Scenario,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METRICS = (
    "cpu_us_per_op",
    "wall_us_per_op",
    "ops_per_s",
    "mb_per_s",
    "p50_us",
    "p99_us",
    "client_cpu_share",
    "server_cpu_us_per_op",
    "server_cpu_share",
    "rss_per_conn_kib",
    "switches_per_op",
)
DISTRIBUTIONS = (
    "wsclient",
    "websockets",
    "aiohttp",
    "aiosonic",
    "picows",
    "aiofastnet",
    "websocket-client",
    "uvloop",
)


# Running --------------------------------------------------------------------------------------


class Peer:
    """The echo server process, pinned to ``cpu``."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.restarts = -1

    def start(self) -> None:
        command = [sys.executable, str(HERE / "server.py")]
        if self.cpu is not None:
            command += ["--cpu", str(self.cpu)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        self.info = json.loads(line)
        self.restarts += 1

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_one(
    client: Client, scenario: Scenario, peer: Peer, args: argparse.Namespace
) -> dict[str, Any]:
    peer.ensure_running()
    command = [
        sys.executable,
        str(HERE / "clients.py"),
        "--client",
        client.name,
        "--scenario",
        scenario.name,
        "--ws-port",
        str(peer.info["ws"]),
        "--raw-port",
        str(peer.info["raw"]),
        "--raw-firehose-port",
        str(peer.info["raw_firehose"]),
        "--server-pid",
        str(peer.info["pid"]),
    ]
    if args.quick:
        command.append("--quick")
    if args.cpu is not None:
        command += ["--cpu", str(args.cpu)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, cwd=REPO, env=args.env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = completed.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = completed.stderr.strip().splitlines()[-3:]
        return {"error": f"no result (exit {completed.returncode}): {' | '.join(tail)}"}
    return result


def snapshot_wsclient(into: Path) -> str:
    """Copy src/wsclient (the tree may change during a long run); return a content hash."""
    shutil.copytree(
        REPO / "src" / "wsclient", into / "wsclient", ignore=shutil.ignore_patterns("__pycache__")
    )
    digest = hashlib.sha256()
    for path in sorted((into / "wsclient").rglob("*.py")):
        digest.update(str(path.relative_to(into)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def choose_cpus(no_pin: bool) -> tuple[int | None, set[int] | None]:
    """The CPU for the peer and the clients, and the CPUs left for the runner."""
    if no_pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    bench = allowed[-1]
    rest = set(allowed[:-1])
    return bench, rest or None


# Aggregating ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def aggregate(runs: list[dict[str, Any]], rounds: int) -> dict[str, dict[str, Any]]:
    """Per scenario and client: medians over the rounds and median ratios to wsclient."""
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault((run["scenario"], run["client"]), {})[run["round"]] = run["result"]
    summary: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS:
        per_client: dict[str, Any] = {}
        for client in CLIENTS:
            results = by_key.get((scenario.name, client.name))
            if results is None:
                continue
            reason = client.reason_unsupported(scenario)
            if reason is not None:
                per_client[client.name] = {"status": "n/a", "reason": reason}
                continue
            good = {r: res for r, res in results.items() if "cpu_us_per_op" in res}
            errors = sorted({res["error"] for res in results.values() if "error" in res})
            entry: dict[str, Any] = {
                "status": "ok" if good else "error",
                "rounds_ok": len(good),
                "rounds": len(results),
                "errors": errors,
            }
            for metric in METRICS:
                values = [res[metric] for res in good.values() if res.get(metric) is not None]
                entry[metric] = _median(values)
            reference = by_key.get((scenario.name, REFERENCE[client.flavor]), {})
            for metric, key in (("cpu_us_per_op", "cpu_ratio"), ("wall_us_per_op", "wall_ratio")):
                ratios = [
                    res[metric] / reference[r][metric]
                    for r, res in good.items()
                    if r in reference and reference[r].get(metric)
                ]
                entry[key] = _median(ratios)
            per_client[client.name] = entry
        if per_client:
            summary[scenario.name] = per_client
    return summary


# Reporting ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _cell(entry: dict[str, Any] | None, metric: str = "cpu_us_per_op", ratio: bool = True) -> str:
    if entry is None:
        return ""
    if entry["status"] == "n/a":
        return "n/a"
    if entry["status"] == "error":
        return "error"
    text = _fmt(entry[metric])
    if ratio and entry.get("cpu_ratio") is not None:
        text += f" ({entry['cpu_ratio']:.2f}x)"
    if entry["rounds_ok"] < entry["rounds"]:
        text += f" [{entry['rounds_ok']}/{entry['rounds']}]"
    return text


def _ordered_clients(names: set[str]) -> list[Client]:
    # wsclient first in each flavor, async flavor then sync, baselines last in each flavor.
    return [
        client
        for flavor in ("async", "sync")
        for client in CLIENTS
        if client.name in names and client.flavor == flavor
    ]


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None

    def git(*words: str) -> str:
        try:
            return subprocess.run(
                ["git", *words], capture_output=True, text=True, cwd=REPO, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_src_dirty": bool(git("status", "--porcelain", "--", "src")),
    }


def _targets(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, checked against this run (medians of per-round ratios)."""
    lines = [
        "| target | scenario | result | figures |",
        "| --- | --- | --- | --- |",
    ]

    def entry(scenario: str, client: str) -> dict[str, Any] | None:
        found = summary.get(scenario, {}).get(client)
        return found if found and found["status"] == "ok" else None

    def add(target: str, scenario: str, ok: bool, figures: str, margin: float) -> None:
        # margin: the measured figure over the target's threshold.
        verdict = "met" if ok else "**missed**"
        if 0.95 <= margin <= 1.05:
            verdict += " (within 5%: noise)"
        lines.append(f"| {target} | {scenario} | {verdict} | {figures} |")

    # idle_1000 is there for the memory target; its CPU column (a connect and one round
    # trip) is not one of the CPU scenarios.
    cpu_scenarios = [scenario for scenario in SCENARIOS if scenario.name != "idle_1000"]
    for scenario in cpu_scenarios:
        mine = entry(scenario.name, "wsclient-async")
        if mine is None:
            continue
        for other, factor, label in (
            ("aiohttp", 1.0, "async CPU/msg below aiohttp"),
            ("websockets-async", 2.0, "async CPU/msg at most half of websockets asyncio"),
        ):
            theirs = entry(scenario.name, other)
            if theirs is None or theirs["cpu_ratio"] is None:
                continue
            figures = (
                f"wsclient {_fmt(mine['cpu_us_per_op'])} us, {other} "
                f"{_fmt(theirs['cpu_us_per_op'])} us ({theirs['cpu_ratio']:.2f}x wsclient)"
            )
            met = theirs["cpu_ratio"] >= factor if factor > 1 else theirs["cpu_ratio"] > factor
            raw = entry(scenario.name, "raw-asyncio")
            if not met and raw is not None:
                # The baseline does the least any client must: a target below it is out of
                # reach for a Python client on this loop, whatever wsclient does.
                threshold = theirs["cpu_us_per_op"] / factor
                figures += f"; raw asyncio {_fmt(raw['cpu_us_per_op'])} us"
                if raw["cpu_us_per_op"] > threshold:
                    figures += f", above the {_fmt(threshold)} us target: out of reach"
            add(label, scenario.name, met, figures, theirs["cpu_ratio"] / factor)
    mine = entry("rt_text16", "wsclient-async")
    raw = entry("rt_text16", "raw-asyncio")
    if mine and raw and raw["cpu_ratio"]:
        add(
            "small round trips within 2x of raw asyncio",
            "rt_text16",
            1 / raw["cpu_ratio"] <= 2.0,
            f"wsclient {_fmt(mine['cpu_us_per_op'])} us = {1 / raw['cpu_ratio']:.2f}x raw "
            f"{_fmt(raw['cpu_us_per_op'])} us",
            1 / raw["cpu_ratio"] / 2.0,
        )
    for scenario in cpu_scenarios:
        mine = entry(scenario.name, "wsclient-sync")
        if mine is None:
            continue
        for other in ("websockets-sync", "websocket-client"):
            theirs = entry(scenario.name, other)
            if theirs is None or theirs["cpu_ratio"] is None:
                continue
            add(
                f"sync CPU/msg below {other}",
                scenario.name,
                theirs["cpu_ratio"] > 1.0,
                f"wsclient {_fmt(mine['cpu_us_per_op'])} us, {other} "
                f"{_fmt(theirs['cpu_us_per_op'])} us ({theirs['cpu_ratio']:.2f}x wsclient)",
                theirs["cpu_ratio"],
            )
    aiohttp = entry("large_1m", "aiohttp")
    for flavor in ("wsclient-async", "wsclient-sync"):
        mine = entry("large_1m", flavor)
        if mine and aiohttp:
            add(
                f"1 MiB: {flavor} MB/s at least aiohttp's",
                "large_1m",
                mine["mb_per_s"] >= aiohttp["mb_per_s"],
                f"{_fmt(mine['mb_per_s'])} MB/s against {_fmt(aiohttp['mb_per_s'])} MB/s",
                mine["mb_per_s"] / aiohttp["mb_per_s"],
            )
    for flavor in ("wsclient-async", "wsclient-sync"):
        mine = entry("idle_1000", flavor)
        if mine and mine.get("rss_per_conn_kib") is not None:
            add(
                f"{flavor}: at most 10 KiB RSS per idle connection",
                "idle_1000",
                mine["rss_per_conn_kib"] <= 10,
                f"{mine['rss_per_conn_kib']:.1f} KiB per connection",
                mine["rss_per_conn_kib"] / 10,
            )
    return lines


def render_markdown(meta: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    machine = meta["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    present = {name for per_client in summary.values() for name in per_client}
    clients = _ordered_clients(present)
    pinning = (
        f"client and peer pinned to CPU {meta['cpu']} (runner on the other CPUs)"
        if meta["cpu"] is not None
        else "no CPU pinning"
    )
    dirty = " with uncommitted changes in src/" if machine["git_src_dirty"] else ""
    out = [
        "# wsclient benchmark results",
        "",
        f"- Date: {meta['date']}; mode: {'quick' if meta['quick'] else 'full'}, "
        f"{meta['rounds']} rounds, {meta['elapsed_s'] / 60:.1f} min",
        f"- Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['platform']}; "
        f"load average {meta['loadavg_before']} before, {meta['loadavg_after']} after",
        f"- Python {machine['python']} ({machine['python_implementation']}); wsclient at "
        f"{machine['git_commit']}{dirty} (src/ copied at the start, content hash "
        f"{meta['wsclient_snapshot']})",
        f"- Versions: {versions}",
        f"- Peer: picows server on {meta['peer_loop']} (echo, firehose, permessage-deflate "
        f"echo with zlib) and raw-TCP echo, one process; {pinning}",
        "",
        "Client CPU is user+sys time of the client process (all its threads) over the timed "
        "section only, divided by the number of messages (or handshakes). Values are medians "
        "over the rounds; `(N.NNx)` is the median over rounds of the client's CPU divided by "
        "wsclient's of the same flavor in the same round (above 1: the client costs more than "
        "wsclient). `[k/n]`: only k of n rounds succeeded. `n/a`: the client cannot do it.",
        "",
        "## Client CPU per message (us)",
        "",
        "| scenario | " + " | ".join(client.name for client in clients) + " |",
        "| --- | " + " | ".join("---:" for _ in clients) + " |",
    ]
    for scenario in SCENARIOS:
        if scenario.name not in summary:
            continue
        cells = [_cell(summary[scenario.name].get(client.name)) for client in clients]
        out.append(f"| {scenario.name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Throughput (wall clock)",
        "",
        "Messages (or handshakes) per second; MB/s of payload in one direction for large "
        "messages. Wall time on a shared, noisy machine: read the CPU table first.",
        "",
        "| scenario | " + " | ".join(client.name for client in clients) + " |",
        "| --- | " + " | ".join("---:" for _ in clients) + " |",
    ]
    for scenario in SCENARIOS:
        if scenario.name not in summary:
            continue
        metric = "mb_per_s" if scenario.size >= 16 * 1024 else "ops_per_s"
        cells = [_cell(summary[scenario.name].get(c.name), metric, False) for c in clients]
        unit = "MB/s" if metric == "mb_per_s" else "per s"
        out.append(f"| {scenario.name} ({unit}) | " + " | ".join(cells) + " |")
    out += ["", "## Scenarios in detail", ""]
    for scenario in SCENARIOS:
        per_client = summary.get(scenario.name)
        if not per_client:
            continue
        count = meta["counts"][scenario.name]
        if scenario.name == "concurrent_1000":
            count_text = f"{CONCURRENT_CONNECTIONS:,} connections x {ROUND_TRIPS_EACH}"
        else:
            count_text = f"{count:,} {scenario.unit}s"
        out += [
            f"### {scenario.name}: {scenario.title}",
            "",
            f"{count_text} per run.",
            "",
            "| client | CPU us/op | x wsclient CPU | wall us/op | ops/s | MB/s | p50 us | "
            "p99 us | client CPU % | ctx switches/op | peer CPU us/op | peer CPU % | "
            "RSS KiB/conn |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: |",
        ]
        for client in _ordered_clients(set(per_client)):
            entry = per_client[client.name]
            if entry["status"] != "ok":
                detail = entry.get("reason") or "; ".join(entry.get("errors", []))
                out.append(f"| {client.name} | {entry['status']}: {detail} |" + " |" * 12)
                continue

            def pct(value: float | None) -> str:
                return "-" if value is None else f"{value * 100:.0f}"

            ratio = entry["cpu_ratio"]
            out.append(
                f"| {client.name} | {_fmt(entry['cpu_us_per_op'])} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | {_fmt(entry['wall_us_per_op'])} | "
                f"{_fmt(entry['ops_per_s'])} | {_fmt(entry['mb_per_s'])} | "
                f"{_fmt(entry['p50_us'])} | {_fmt(entry['p99_us'])} | "
                f"{pct(entry['client_cpu_share'])} | {_fmt(entry['switches_per_op'], 2)} | "
                f"{_fmt(entry['server_cpu_us_per_op'])} | "
                f"{pct(entry['server_cpu_share'])} | {_fmt(entry['rss_per_conn_kib'])} |"
            )
        out.append("")
    out += [
        "## Is the peer the bottleneck?",
        "",
        "The peer's CPU (all its threads, from /proc schedstat) over each client's timed "
        "section. With client and peer on one CPU, the peer's share is time the client could "
        "not use; the client's CPU per message does not depend on it. Loopback TCP charges "
        "the delivery of each segment to the sender, so part of the peer's time is the "
        "kernel delivering its replies to the client.",
        "",
        "| scenario | peer CPU us/op (median over clients) | peer CPU % (min-max) | "
        "wsclient-async CPU us/op | wsclient-sync CPU us/op |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for scenario in SCENARIOS:
        per_client = summary.get(scenario.name)
        if not per_client:
            continue
        ok = [
            entry
            for name, entry in per_client.items()
            if entry["status"] == "ok"
            and entry.get("server_cpu_share") is not None
            and not CLIENT_BY_NAME[name].baseline
        ]
        if not ok:
            continue
        shares = [entry["server_cpu_share"] for entry in ok]
        per_op = _median([entry["server_cpu_us_per_op"] for entry in ok])
        mine = [
            _fmt(per_client[name]["cpu_us_per_op"])
            if per_client.get(name, {}).get("status") == "ok"
            else "-"
            for name in ("wsclient-async", "wsclient-sync")
        ]
        out.append(
            f"| {scenario.name} | {_fmt(per_op)} | {min(shares) * 100:.0f}-"
            f"{max(shares) * 100:.0f} | {mine[0]} | {mine[1]} |"
        )
    out += ["", "## The issue's targets", "", *_targets(summary), ""]
    return "\n".join(out)


def update_readme(markdown: str) -> None:
    """Copy the header and the CPU table into README.md between its result markers."""
    readme = HERE / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        return
    lines = markdown.splitlines()
    cut = next(i for i, line in enumerate(lines) if line.startswith("## Throughput"))
    excerpt = "\n".join(lines[2:cut]).strip()
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{excerpt}\n{end}{after}")


# Main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a few minutes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; quick 3)")
    parser.add_argument("--clients", default="", help="comma-separated subset of clients")
    parser.add_argument("--scenarios", default="", help="comma-separated subset of scenarios")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to a CPU")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per client run")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where to write results")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    args.timeout = args.timeout or (180 if args.quick else 900)
    clients = [CLIENT_BY_NAME[name] for name in args.clients.split(",") if name] or CLIENTS
    scenarios = [SCENARIO_BY_NAME[n] for n in args.scenarios.split(",") if n] or SCENARIOS
    args.cpu, runner_cpus = choose_cpus(args.no_pin)
    if runner_cpus:
        os.sched_setaffinity(0, runner_cpus)

    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "rounds": rounds,
        "cpu": args.cpu,
        "machine": machine_info(),
        "counts": {s.name: s.quick if args.quick else s.full for s in scenarios},
        "loadavg_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    snapshot = Path(tempfile.mkdtemp(prefix="wsclient-bench-"))
    meta["wsclient_snapshot"] = snapshot_wsclient(snapshot)
    args.env = dict(os.environ)
    args.env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(snapshot), os.environ.get("PYTHONPATH", "")])
    )
    peer = Peer(args.cpu)
    peer.start()
    meta["peer_loop"] = peer.info.get("loop", "asyncio")
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for round_index in range(rounds):
            for scenario_index, scenario in enumerate(scenarios):
                shift = (round_index + scenario_index) % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    reason = client.reason_unsupported(scenario)
                    result = {"na": reason} if reason else run_one(client, scenario, peer, args)
                    runs.append(
                        {
                            "round": round_index,
                            "scenario": scenario.name,
                            "client": client.name,
                            "result": result,
                        }
                    )
                    if "cpu_us_per_op" in result:
                        status = f"cpu {result['cpu_us_per_op']:9.1f} us/op"
                    else:
                        status = "n/a" if "na" in result else f"ERROR {result.get('error')}"
                    print(
                        f"[round {round_index + 1}/{rounds}] {scenario.name:16} "
                        f"{client.name:17} {status}",
                        flush=True,
                    )
    finally:
        peer.stop()
        shutil.rmtree(snapshot, ignore_errors=True)
    meta["elapsed_s"] = time.monotonic() - started
    meta["loadavg_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    meta["peer_restarts"] = peer.restarts
    summary = aggregate(runs, rounds)
    markdown = render_markdown(meta, summary)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1) + "\n"
    )
    (args.output_dir / "RESULTS.md").write_text(markdown)
    if not args.no_readme and args.output_dir.resolve() == HERE:
        update_readme(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
