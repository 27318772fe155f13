"""Run the Autobahn client conformance suite against wsclient, one flavor or both.

Usage (from anywhere; paths are resolved from this file's location)::

    python tools/autobahn.py                        # both flavors, the whole suite
    python tools/autobahn.py --flavor sync          # one flavor
    python tools/autobahn.py --cases '1.*,9.1.*'    # a subset, by case id or glob
    python tools/autobahn.py --write-summary        # also write docs/conformance.md
    python tools/autobahn.py --alternative-offers   # also rerun the runner-difference
                                                    # cases with an offer kosoku can answer
    python tools/autobahn.py --outdir DIR --from-reports --write-summary
                                                    # grade and summarize DIR's runs again

Theory of operation: for each flavor the script starts ``kosoku -m fuzzingserver`` (the
``kosoku`` package runs the Autobahn case files) on a free port of 127.0.0.1 and waits, with
a deadline, until it accepts connections. A conformance client built only on wsclient's
public API then asks ``/getCaseCount``, runs every case on its own connection
(``/runCase?case=N&agent=NAME``), echoing each message with its type, and finally asks
``/updateReports``, after which kosoku writes its reports and exits. Cases run one after the
other: the performance cases (9.x, 12.x, 13.x) are graded on time, and running cases side
by side on a 2-core machine would only make them compete for the CPU.

The script then reads the reports (``index.json`` and one JSON file per case), checks the
close of every case itself (kosoku grades a close OK even when it had to drop the TCP
connection: we require that the client sent a Close and received one, and that the TCP
connection ended without a timeout or a drop by the server), prints a per-section table and
the wall time, and exits 1 when a case is below the bar (see :func:`evaluate`: every case
OK, but for three informational cases and the runner differences in ``RUNNER_DIFFERENCES``,
each accepted only when its report shows that difference on the wire), 2 on bad usage.

``--cases`` takes comma-separated case ids or ``*`` globs; they go to kosoku's ``-i``
option, so case numbers then count within the selection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fnmatch
import importlib.metadata
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SUMMARY_PATH = REPO_ROOT / "docs" / "conformance.md"
FLAVORS = ("async", "sync")
HOST = "127.0.0.1"

#: The largest message in the suite is 16 MiB (9.1.6, 9.2.6).
MAX_SIZE = 16 * 1024 * 1024
#: kosoku ends a case after about 20 s; a client that waits longer than this is stuck.
CASE_RECEIVE_TIMEOUT = 60.0
SERVER_START_TIMEOUT = 30.0
SERVER_EXIT_TIMEOUT = 120.0
#: What run_flavor records beside kosoku's reports, so that a run can be graded again.
RUN_RECORD = "wsclient-run.json"

GRADES = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

#: Informational by design: the case text leaves the outcome open.
INFORMATIONAL_BY_DESIGN = {
    "7.1.6": "a large message, then a ping, then Close, while the client may still be "
    "echoing: the order in which the echo and the pong come back is left open",
    "7.13.1": "close code 5000: RFC 6455 §7.4.2 defines no codes above 4999",
    "7.13.2": "close code 65535: RFC 6455 §7.4.2 defines no codes above 4999",
}

#: Why the conformance client compresses every message (see ``_connect_options``).
COMPRESS_ALL_NOTE = (
    "The conformance client compresses every message (`DeflateOptions(min_size=0)`; the "
    "library's default sends messages under 128 bytes uncompressed). kosoku 0.1.0 ends the "
    "12.x/13.x cases with 16- and 64-byte messages (`12.*.1`, `12.*.2`, `13.*.1`, `13.*.2`) "
    "in ERROR "
    '("Strings must be encoded before hashing") when an echo comes back uncompressed, which '
    "RFC 7692 allows (RSV1 tells per message whether it is compressed, so that an endpoint "
    "can choose not to compress). Compressing every echo also makes those cases exercise "
    "wsclient's compressor, which is what they are for."
)


@dataclass(frozen=True)
class RunnerDifference:
    """A case group where kosoku itself is at odds with the RFCs, checked on the wire."""

    name: str
    patterns: tuple[str, ...]
    behavior: str
    explanation: str
    #: Returns ``None`` when the report shows exactly this difference, else what is off.
    check: Callable[[CaseOutcome], str | None]
    in_conformance_md: bool


def _extension_header(http: str) -> str | None:
    for line in http.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            return value.strip()
    return None


def _window_bits(header: str | None, name: str) -> int | None:
    match = re.search(rf"\b{name}\s*=\s*\"?(\d+)", header or "")
    return int(match.group(1)) if match else None


def _check_offer_declined(case: CaseOutcome) -> str | None:
    offer = _extension_header(str(case.report.get("httpRequest") or ""))
    response = _extension_header(str(case.report.get("httpResponse") or ""))
    if not offer or "permessage-deflate" not in offer:
        return "the client did not offer permessage-deflate"
    if response is not None:
        return f"the server accepted an extension ({response!r})"
    if case.behavior_close != "OK" or case.close_problem is not None:
        return f"close: {case.behavior_close} {case.close_problem or ''}".strip()
    return None


def _check_window_above_offer(case: CaseOutcome) -> str | None:
    offer = _extension_header(str(case.report.get("httpRequest") or ""))
    response = _extension_header(str(case.report.get("httpResponse") or ""))
    offered = _window_bits(offer, "client_max_window_bits")
    answered = _window_bits(response, "client_max_window_bits")
    if offered is None or answered is None or answered <= offered:
        return f"not a window above the offer (offer {offer!r}, response {response!r})"
    if case.report.get("rxFrameStats"):
        return "the client sent frames on a connection it should have refused"
    if "HandshakeError" not in case.client_error or "exceeds the offered" not in case.client_error:
        return f"the client did not refuse the handshake ({case.client_error or 'no error'})"
    return None


RUNNER_DIFFERENCES = (
    RunnerDifference(
        name="kosoku declines the default offer",
        patterns=("13.2.*", "13.5.*", "13.6.*"),
        behavior="UNIMPLEMENTED",
        explanation=(
            "In these groups the server wants the client to use no context takeover. The "
            "original Autobahn server then answers any permessage-deflate offer with "
            "`client_no_context_takeover`, which RFC 7692 §7.1.1.2 lets a server add even "
            "when the offer did not have it (wsclient accepts it). kosoku 0.1.0 instead "
            "declines an offer without `client_no_context_takeover`: its 101 response has no "
            "Sec-WebSocket-Extensions header, and it grades UNIMPLEMENTED at once. Listed in "
            "shared/CONFORMANCE.md; the default offer is not reshaped for the runner."
        ),
        check=_check_offer_declined,
        in_conformance_md=True,
    ),
    RunnerDifference(
        name="kosoku answers a window above the offer",
        patterns=("13.4.*",),
        behavior="FAILED",
        explanation=(
            "The server asks the client for a 15-bit window. wsclient offers "
            "`client_max_window_bits=12`, and kosoku answers `client_max_window_bits=15`, "
            "although RFC 7692 §7.1.2.2 lets a server answer a value offered with this "
            'parameter only "with a value equal to or smaller than the received value". '
            "wsclient refuses a response that its offer did not allow (HandshakeError: "
            "client_max_window_bits=15 exceeds the offered 12), before any frame, and kosoku "
            "grades FAILED. Not listed in shared/CONFORMANCE.md: the clients measured there "
            "offer `client_max_window_bits` without a value, which allows 15."
        ),
        check=_check_window_above_offer,
        in_conformance_md=False,
    ),
)


# The conformance client -------------------------------------------------------------------


#: Supplementary runs (``--alternative-offers``): the cases of RUNNER_DIFFERENCES again, with
#: an offer that kosoku answers validly, to show that wsclient passes them when the runner
#: does exercise them. Case globs -> DeflateOptions arguments.
ALTERNATIVE_OFFERS: dict[tuple[str, ...], dict[str, Any]] = {
    # kosoku then accepts (13.2, 13.5), and asks for a 15-bit window (13.6), which a bare
    # client_max_window_bits allows.
    ("13.2.*", "13.5.*", "13.6.*"): {
        "client_no_context_takeover": True,
        "client_max_window_bits": None,
    },
    # A bare client_max_window_bits lets kosoku answer client_max_window_bits=15.
    ("13.4.*",): {"client_max_window_bits": None},
}


def _connect_options(offer: dict[str, Any] | None = None) -> dict[str, Any]:
    from wsclient import DeflateOptions

    return {
        # kosoku counts an unprompted ping as one of the case's events.
        "start_keepalive": False,
        "max_size": MAX_SIZE,
        # The default offer, but every message compressed: see COMPRESS_ALL_NOTE.
        "compression": DeflateOptions(min_size=0, **(offer or {})),
    }


async def _run_client_async(
    url: str, agent: str, options: dict[str, Any], progress: bool
) -> tuple[int, dict[int, str]]:
    from wsclient import ConnectionDisconnected, MessageType, WebSocketClient, WebSocketError

    errors: dict[int, str] = {}
    async with WebSocketClient() as client:
        conn = await client.connect(f"{url}/getCaseCount", start_keepalive=False)
        count = int(await conn.receive_text(CASE_RECEIVE_TIMEOUT))
        await conn.close()
        for number in range(1, count + 1):
            try:
                conn = await client.connect(f"{url}/runCase?case={number}&agent={agent}", **options)
                async with conn:
                    while True:
                        # Disconnected while receiving or echoing: the case is over.
                        try:
                            message = await conn.receive(CASE_RECEIVE_TIMEOUT)
                            if message.type is MessageType.TEXT:
                                await conn.send_text(message.text)
                            else:
                                assert isinstance(message.data, bytes)
                                await conn.send_bytes(message.data)
                        except ConnectionDisconnected:
                            break
            except (WebSocketError, OSError) as exc:
                errors[number] = f"{type(exc).__name__}: {exc}"
            if progress:
                _progress(number, count)
        conn = await client.connect(f"{url}/updateReports?agent={agent}", start_keepalive=False)
        await conn.close()
    return count, errors


def _run_client_sync(
    url: str, agent: str, options: dict[str, Any], progress: bool
) -> tuple[int, dict[int, str]]:
    from wsclient import ConnectionDisconnected, MessageType, WebSocketError
    from wsclient.sync import WebSocketClient

    errors: dict[int, str] = {}
    with WebSocketClient() as client:
        conn = client.connect(f"{url}/getCaseCount", start_keepalive=False)
        count = int(conn.receive_text(CASE_RECEIVE_TIMEOUT))
        conn.close()
        for number in range(1, count + 1):
            try:
                conn = client.connect(f"{url}/runCase?case={number}&agent={agent}", **options)
                with conn:
                    while True:
                        try:
                            message = conn.receive(CASE_RECEIVE_TIMEOUT)
                            if message.type is MessageType.TEXT:
                                conn.send_text(message.text)
                            else:
                                assert isinstance(message.data, bytes)
                                conn.send_bytes(message.data)
                        except ConnectionDisconnected:
                            break
            except (WebSocketError, OSError) as exc:
                errors[number] = f"{type(exc).__name__}: {exc}"
            if progress:
                _progress(number, count)
        conn = client.connect(f"{url}/updateReports?agent={agent}", start_keepalive=False)
        conn.close()
    return count, errors


def _progress(number: int, count: int) -> None:
    if number % 50 == 0 or number == count:
        print(f"  {number}/{count} cases", file=sys.stderr, flush=True)


# The fuzzing server -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _kosoku_command() -> list[str]:
    script = Path(sys.executable).with_name("kosoku")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from kosoku._cli import main; main()"]


@contextlib.contextmanager
def fuzzing_server(outdir: Path, cases: Sequence[str] | None) -> Iterator[tuple[str, Any]]:
    """Start kosoku's fuzzing server; yield its URL and process, stop it on the way out.

    The server exits by itself once the client has asked ``/updateReports``; it is
    killed only when it is still running after that (or after an error).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    selection: list[str] = []
    for pattern in cases or ():
        selection += ["-i", pattern]
    for _attempt in range(3):
        port = _free_port()
        log = (outdir / "kosoku.log").open("w")
        command = [*_kosoku_command(), "-m", "fuzzingserver", "-o", str(outdir), *selection]
        process = subprocess.Popen(
            [*command, f"{HOST}:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if _wait_until_listening(process, port):
                break
        except BaseException:
            _stop(process)
            log.close()
            raise
        _stop(process)
        log.close()
    else:
        raise RuntimeError(f"kosoku did not start; see {outdir / 'kosoku.log'}")
    try:
        yield f"ws://{HOST}:{port}", process
    finally:
        try:
            process.wait(SERVER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        _stop(process)
        log.close()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False  # it exited: most likely the port was taken meanwhile
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.05)
    raise TimeoutError(f"kosoku did not accept connections within {SERVER_START_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Results ----------------------------------------------------------------------------------


@dataclass
class CaseOutcome:
    """One case of one flavor, as graded by kosoku and checked by this script."""

    case_id: str
    number: int
    behavior: str
    behavior_close: str
    duration_ms: int
    report: dict[str, Any]
    client_error: str = ""
    close_problem: str | None = None
    #: "ok", "informational" (by design), "runner" (a runner difference) or "below".
    verdict: str = "below"
    note: str = ""
    difference: RunnerDifference | None = None

    @property
    def grade(self) -> str:
        """The behaviour grade, with ERROR (and anything unknown) counted as FAILED."""
        return self.behavior if self.behavior in GRADES else "FAILED"


@dataclass
class FlavorRun:
    flavor: str
    agent: str
    outdir: Path
    wall_time: float
    case_count: int
    cases: dict[str, CaseOutcome] = field(default_factory=dict)
    #: Client errors of case numbers without a report.
    orphan_errors: dict[int, str] = field(default_factory=dict)
    #: The Sec-WebSocket-Extensions offer, when it is not the default one.
    offer: str | None = None
    #: When the run started.
    date: str = ""

    @property
    def label(self) -> str:
        return self.flavor if self.offer is None else f"{self.flavor} (offer: {self.offer})"

    @property
    def below_bar(self) -> list[CaseOutcome]:
        return [case for case in self.cases.values() if case.verdict == "below"]

    def by_verdict(self, verdict: str) -> list[CaseOutcome]:
        return [case for case in self.cases.values() if case.verdict == verdict]

    def problems(self) -> list[str]:
        """Everything that puts this run below the bar, one line each."""
        lines = [
            f"{self.flavor}: case {number}: client error without a report: {error}"
            for number, error in sorted(self.orphan_errors.items())
        ]
        if len(self.cases) != self.case_count:
            lines.append(
                f"{self.flavor}: {len(self.cases)} case reports for {self.case_count} cases"
            )
        for case in self.below_bar:
            lines.append(
                f"{self.flavor}: {case.case_id}: behavior={case.behavior} "
                f"behaviorClose={case.behavior_close}"
                + (f"; close: {case.close_problem}" if case.close_problem else "")
                + (f"; client: {case.client_error}" if case.client_error else "")
                + (f"; {case.note}" if case.note else "")
                + f" [{case.duration_ms} ms]"
            )
        return lines


def _case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def _matches(case_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(case_id, pattern) for pattern in patterns)


def close_problem(report: dict[str, Any]) -> str | None:
    """Check the close of a case ourselves; ``None`` when the client closed cleanly.

    The client must have sent a Close and received kosoku's, and the TCP connection must
    have ended without kosoku running into a handshake or drop timeout or dropping it.
    """
    if report.get("wasOpenHandshakeTimeout"):
        return "opening handshake timed out"
    if report.get("wasCloseHandshakeTimeout"):
        return "closing handshake timed out (the client did not answer the Close)"
    if report.get("wasServerConnectionDropTimeout"):
        return "TCP connection not closed in time"
    if not report.get("wasClean"):
        return f"not clean: {report.get('wasNotCleanReason') or 'no reason given'}"
    if not (report.get("rxFrameStats") or {}).get("8"):
        return "the client sent no Close frame"
    if not (report.get("txFrameStats") or {}).get("8"):
        return "the client received no Close frame"
    if report.get("droppedByMe"):
        return "kosoku had to drop the TCP connection"
    return None


def evaluate(case: CaseOutcome, *, strict: bool = False) -> None:
    """Set ``case.verdict`` (and ``case.note``) from the bar.

    The bar: behaviour and close behaviour OK, a clean close (:func:`close_problem`) and no
    client error, except 7.1.6, 7.13.1 and 7.13.2, which are INFORMATIONAL by design, and
    the :data:`RUNNER_DIFFERENCES`, each accepted only when the report shows exactly that
    difference on the wire (and never when ``strict``).
    """
    case.close_problem = close_problem(case.report)
    close_ok = case.behavior_close == "OK" and case.close_problem is None
    for difference in () if strict else RUNNER_DIFFERENCES:
        if case.behavior == difference.behavior and _matches(case.case_id, difference.patterns):
            problem = difference.check(case)
            if problem is None:
                case.verdict = "runner"
                case.difference = difference
            else:
                case.note = f"not the known runner difference: {problem}"
            return
    if case.client_error:
        return
    if case.case_id in INFORMATIONAL_BY_DESIGN:
        close_ok = close_ok or (
            case.behavior_close == "INFORMATIONAL" and case.close_problem is None
        )
        if case.behavior in ("OK", "INFORMATIONAL") and close_ok:
            case.verdict = "informational" if case.behavior == "INFORMATIONAL" else "ok"
        return
    if case.behavior == "OK" and close_ok:
        case.verdict = "ok"


def read_reports(
    outdir: Path, agent: str, errors: dict[int, str], *, strict: bool = False
) -> dict[str, CaseOutcome]:
    """Read kosoku's index.json and per-case reports for ``agent``, and grade each case."""
    index_path = outdir / "index.json"
    if not index_path.exists():
        return {}
    entries: dict[str, Any] = json.loads(index_path.read_text()).get(agent, {})
    cases: dict[str, CaseOutcome] = {}
    for case_id in sorted(entries, key=_case_key):
        entry = entries[case_id]
        report_path = outdir / entry["reportfile"]
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        report.pop("wirelog", None)  # large, and not needed once the run is graded
        number = int(report.get("case") or 0)
        case = CaseOutcome(
            case_id=case_id,
            number=number,
            behavior=entry["behavior"],
            behavior_close=entry["behaviorClose"],
            duration_ms=int(entry.get("duration") or 0),
            report=report,
            client_error=errors.get(number, ""),
        )
        evaluate(case, strict=strict)
        cases[case_id] = case
    return cases


def run_flavor(
    flavor: str,
    *,
    cases: Sequence[str] | None = None,
    outdir: Path | None = None,
    progress: bool = False,
    offer: dict[str, Any] | None = None,
) -> FlavorRun:
    """Run the suite (or the ``cases`` selection) against one flavor and grade it.

    ``offer`` changes the permessage-deflate offer (DeflateOptions arguments); the run is
    then graded strictly (no runner difference accepted).
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, not {flavor!r}")
    if outdir is None:
        outdir = Path(tempfile.mkdtemp(prefix=f"autobahn-{flavor}-"))
    agent = f"wsclient-{flavor}"
    options = _connect_options(offer)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()
    with fuzzing_server(outdir, cases) as (url, process):
        if flavor == "async":
            count, errors = asyncio.run(_run_client_async(url, agent, options, progress))
        else:
            count, errors = _run_client_sync(url, agent, options, progress)
        try:
            process.wait(SERVER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            errors[0] = f"kosoku did not exit within {SERVER_EXIT_TIMEOUT} s of updateReports"
    record = {
        "date": date,
        "flavor": flavor,
        "agent": agent,
        "wall_time": time.monotonic() - started,
        "case_count": count,
        "errors": {str(number): error for number, error in errors.items()},
        "offer": options["compression"].offer() if offer is not None else None,
    }
    (outdir / RUN_RECORD).write_text(json.dumps(record, indent=1))
    return load_run(outdir)


def load_run(outdir: Path) -> FlavorRun:
    """Grade a finished run again from its reports (what ``run_flavor`` wrote in ``outdir``)."""
    record = json.loads((outdir / RUN_RECORD).read_text())
    errors = {int(number): error for number, error in record["errors"].items()}
    strict = record["offer"] is not None
    results = read_reports(outdir, record["agent"], errors, strict=strict)
    reported = {case.number for case in results.values()}
    orphans = {number: error for number, error in errors.items() if number not in reported}
    return FlavorRun(
        record["flavor"],
        record["agent"],
        outdir,
        record["wall_time"],
        record["case_count"],
        results,
        orphans,
        record["offer"],
        record.get("date", ""),
    )


def run_alternative_offers(
    flavor: str, *, outdir: Path | None = None, progress: bool = False
) -> list[FlavorRun]:
    """Run the :data:`ALTERNATIVE_OFFERS` selections against one flavor (graded strictly)."""
    base = outdir or Path(tempfile.mkdtemp(prefix=f"autobahn-{flavor}-offers-"))
    runs = []
    for index, (patterns, offer) in enumerate(ALTERNATIVE_OFFERS.items()):
        runs.append(
            run_flavor(
                flavor,
                cases=patterns,
                outdir=base / f"offer{index + 1}",
                progress=progress,
                offer=offer,
            )
        )
    return runs


# Summary ----------------------------------------------------------------------------------

COLUMNS = (*GRADES, "close not OK", "unclean", "below bar")


def _sections(run: FlavorRun) -> dict[str, Counter[str]]:
    sections: dict[str, Counter[str]] = {}
    for case in run.cases.values():
        counter = sections.setdefault(case.case_id.split(".")[0], Counter())
        counter[case.grade] += 1
        if case.behavior_close != "OK":
            counter["close not OK"] += 1
        if case.close_problem is not None:
            counter["unclean"] += 1
        if case.verdict == "below":
            counter["below bar"] += 1
    return dict(sorted(sections.items(), key=lambda item: int(item[0])))


def table_rows(run: FlavorRun) -> list[list[str]]:
    """Rows of the per-section table: section, the five grades, close columns, below bar."""
    rows: list[list[str]] = []
    total: Counter[str] = Counter()
    for section, counter in _sections(run).items():
        total.update(counter)
        rows.append([section, *(str(counter[column]) for column in COLUMNS)])
    rows.append(["total", *(str(total[column]) for column in COLUMNS)])
    return rows


def _slowest(run: FlavorRun, count: int) -> list[CaseOutcome]:
    return sorted(run.cases.values(), key=lambda case: case.duration_ms, reverse=True)[:count]


def _id_ranges(cases: Sequence[CaseOutcome], *, markdown: bool = False) -> str:
    groups: dict[str, list[str]] = {}
    for case in cases:
        prefix = case.case_id.rsplit(".", 1)[0]
        groups.setdefault(prefix, []).append(case.case_id)
    quote = "`" if markdown else ""
    parts = []
    for prefix, ids in groups.items():
        if len(ids) > 1:
            parts.append(f"{quote}{prefix}.*{quote} ({len(ids)})")
        else:
            parts.append(f"{quote}{ids[0]}{quote}")
    return ", ".join(parts)


def format_text(runs: Sequence[FlavorRun]) -> str:
    lines: list[str] = []
    header = ["section", *COLUMNS]
    for run in runs:
        rows = table_rows(run)
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        offer = f", offer: {run.offer}" if run.offer else ""
        lines.append(f"{run.flavor} flavor ({run.agent}): {len(run.cases)} cases{offer}")
        for row in [header, *rows]:
            cells = (cell.rjust(width) for cell, width in zip(row, widths, strict=True))
            lines.append("  " + "  ".join(cells))
        lines.append(f"  wall time: {run.wall_time:.1f} s; reports in {run.outdir}")
        informational = run.by_verdict("informational")
        if informational:
            lines.append(f"  informational by design: {_id_ranges(informational)}")
        for difference in RUNNER_DIFFERENCES:
            accepted = [case for case in run.cases.values() if case.difference is difference]
            if accepted:
                lines.append(f"  runner difference, {difference.name}: {_id_ranges(accepted)}")
        slowest = ", ".join(f"{c.case_id} {c.duration_ms / 1000:.2f} s" for c in _slowest(run, 3))
        lines.append(f"  slowest: {slowest}")
        lines.append("")
    for run in runs:
        problems = run.problems()
        if problems:
            lines.append(f"BELOW THE BAR ({run.label}, {len(problems)}):")
            lines.extend("  " + problem for problem in problems)
        else:
            lines.append(f"{run.label}: every case meets the bar")
    return "\n".join(lines)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def format_markdown(runs: Sequence[FlavorRun], supplementary: Sequence[FlavorRun] = ()) -> str:
    dates = sorted(run.date for run in runs if run.date)
    now = dates[0] if dates else datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Autobahn conformance",
        "",
        "The Autobahn client suite (517 cases), run against both flavors by",
        "`python tools/autobahn.py --write-summary` with the fuzzing server of the `kosoku`",
        "package (`kosoku -m fuzzingserver`). `pytest -m autobahn` runs the same check",
        "(`tests/test_autobahn.py`). The conformance client uses only the public API: one",
        "connection per case, every message echoed with its type, keepalive off (kosoku",
        "counts an unprompted ping as an event of the case), `max_size` 16 MiB (the largest",
        "message in the suite), and the default permessage-deflate offer.",
        "",
        COMPRESS_ALL_NOTE,
        "",
        f"- Date: {now}",
        f"- wsclient {_version('wsclient')}, kosoku {_version('kosoku')}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count() or 1} CPUs",
        "",
        "Columns: the behaviour grade of each case; *close not OK*: kosoku's close grade is",
        "not OK; *unclean*: our own check of the close failed (the client must send a Close",
        "and receive one, and the TCP connection must end without a timeout or a drop by the",
        "server; in 13.4.\\* no connection opens, see below); *below bar*: the case does not",
        "meet the bar (below).",
        "",
    ]
    header = ["section", *COLUMNS]
    for run in runs:
        lines += [f"## {run.flavor} flavor", ""]
        lines += [f"{len(run.cases)} cases, wall time {run.wall_time:.0f} s.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in table_rows(run):
            if row[0] == "total":
                row = [f"**{cell}**" for cell in row]
            lines.append("| " + " | ".join(row) + " |")
        slowest = ", ".join(f"{c.case_id} ({c.duration_ms / 1000:.2f} s)" for c in _slowest(run, 5))
        lines += ["", f"Slowest cases: {slowest}; kosoku ends a case after about 20 s.", ""]
    lines += [
        "## The bar",
        "",
        "Every case OK, for behaviour and for close behaviour, with a clean close, except:",
        "",
        "### Informational by design",
        "",
    ]
    for case_id, reason in INFORMATIONAL_BY_DESIGN.items():
        grades = ", ".join(
            f"{run.flavor}: {run.cases[case_id].behavior}/{run.cases[case_id].behavior_close}"
            for run in runs
            if case_id in run.cases
        )
        lines.append(f"- {case_id} ({grades or 'not run'}): {reason}.")
    for difference in RUNNER_DIFFERENCES:
        listed = "" if difference.in_conformance_md else " (new: not in CONFORMANCE.md)"
        patterns = ", ".join(pattern.replace("*", "\\*") for pattern in difference.patterns)
        lines += ["", f"### Runner difference: {difference.name}{listed}", ""]
        lines += [f"Cases {patterns}, graded {difference.behavior}. {difference.explanation}", ""]
        lines.append(
            "Accepted only when the case report shows exactly this on the wire (checked for "
            "every case by `tools/autobahn.py`):"
        )
        lines.append("")
        for run in runs:
            accepted = [case for case in run.cases.values() if case.difference is difference]
            if not accepted:
                lines.append(f"- {run.flavor}: no case.")
                continue
            example = accepted[0].report
            offer = _extension_header(str(example.get("httpRequest") or ""))
            response = _extension_header(str(example.get("httpResponse") or ""))
            lines.append(
                f"- {run.flavor}: {len(accepted)} cases ({_id_ranges(accepted, markdown=True)}); "
                "e.g. "
                f"{accepted[0].case_id}: offer `{offer}`, response "
                + (f"`{response}`" if response else "without Sec-WebSocket-Extensions")
                + (f", client: {accepted[0].client_error}" if accepted[0].client_error else "")
                + "."
            )
    if supplementary:
        lines += [
            "",
            "## Supplementary runs: the same cases with an offer kosoku answers validly",
            "",
            "`python tools/autobahn.py --alternative-offers` runs the cases of both runner",
            "differences again with another offer, graded strictly (every case OK), to show",
            "that wsclient passes them whenever the runner does exercise them.",
            "",
            "| flavor | cases | offer | OK | below bar | wall time |",
            "|---|---|---|---|---|---|",
        ]
        for run in supplementary:
            lines.append(
                f"| {run.flavor} | {_id_ranges(list(run.cases.values()), markdown=True)} | "
                f"`{run.offer}` | "
                f"{len(run.by_verdict('ok'))} | {len(run.below_bar)} | {run.wall_time:.0f} s |"
            )
    lines += ["", "## Result", ""]
    for run in [*runs, *supplementary]:
        problems = run.problems()
        if problems:
            lines.append(f"- {run.label}: **{len(problems)} case(s) below the bar**:")
            lines.extend(f"  - {problem}" for problem in problems)
        else:
            lines.append(f"- {run.label}: every case meets the bar.")
    lines.append("")
    return "\n".join(lines)


# Command line -----------------------------------------------------------------------------


def parse_cases(value: str) -> list[str]:
    patterns = [part.strip() for part in value.split(",") if part.strip()]
    for pattern in patterns:
        if not all(part == "*" or part.isdigit() for part in pattern.split(".")):
            raise argparse.ArgumentTypeError(f"invalid case id or glob: {pattern!r}")
    return patterns


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the Autobahn client suite (kosoku) against wsclient."
    )
    parser.add_argument("--flavor", choices=[*FLAVORS, "both"], default="both")
    parser.add_argument(
        "--cases", type=parse_cases, default=None, help="comma-separated case ids or globs"
    )
    parser.add_argument("--outdir", type=Path, default=None, help="report directory")
    parser.add_argument(
        "--write-summary",
        action="store_true",
        help=f"write {SUMMARY_PATH.relative_to(REPO_ROOT)}",
    )
    parser.add_argument(
        "--alternative-offers",
        action="store_true",
        help="also run the runner-difference cases with an offer kosoku answers validly",
    )
    parser.add_argument(
        "--from-reports",
        action="store_true",
        help="run nothing: grade (and summarize) the runs already in --outdir again",
    )
    parser.add_argument("--verbose", action="store_true", help="show wsclient's log")
    args = parser.parse_args(argv)
    if args.write_summary and args.cases:
        parser.error("--write-summary needs the whole suite (no --cases)")
    if args.from_reports and args.outdir is None:
        parser.error("--from-reports needs --outdir")
    # Failing the connection is what many cases expect: keep wsclient's warnings quiet.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)
    flavors = FLAVORS if args.flavor == "both" else (args.flavor,)
    base = args.outdir or Path(tempfile.mkdtemp(prefix="autobahn-"))
    started = time.monotonic()
    runs: list[FlavorRun] = []
    supplementary: list[FlavorRun] = []
    for flavor in flavors:
        if args.from_reports:
            runs.append(load_run(base / flavor))
            records = sorted((base / f"{flavor}-offers").glob(f"offer*/{RUN_RECORD}"))
            supplementary += [load_run(record.parent) for record in records]
            continue
        print(f"running the {flavor} flavor...", file=sys.stderr, flush=True)
        runs.append(run_flavor(flavor, cases=args.cases, outdir=base / flavor, progress=True))
    if args.alternative_offers and not args.from_reports:
        for flavor in flavors:
            print(f"running the {flavor} flavor with other offers...", file=sys.stderr)
            supplementary += run_alternative_offers(flavor, outdir=base / f"{flavor}-offers")
    print(format_text([*runs, *supplementary]))
    print(f"total wall time: {time.monotonic() - started:.1f} s")
    if args.write_summary:
        SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_PATH.write_text(format_markdown(runs, supplementary))
        print(f"wrote {SUMMARY_PATH}")
    return 1 if any(run.problems() for run in [*runs, *supplementary]) else 0


if __name__ == "__main__":
    sys.exit(main())
