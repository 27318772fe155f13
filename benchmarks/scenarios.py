"""What the benchmark measures: the scenarios, the clients, and which client supports what."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    """One workload with fixed counts.

    Attributes:
        name: Identifier used on the command line and in the JSON.
        title: Heading in the Markdown report.
        unit: What one counted operation is ("msg": one message echoed or received,
            "handshake": one connect + close, "connection": one connect + round trip).
        full: Count in a full run.
        quick: Count in a ``--quick`` run.
        size: Payload size in bytes (approximate for JSON).
        async_only: Only asyncio clients run it.
        deflate: Uses the permessage-deflate endpoint.
    """

    name: str
    title: str
    unit: str
    full: int
    quick: int
    size: int
    async_only: bool = False
    deflate: bool = False


# For concurrent_1000 the count is the number of connections; each does ROUND_TRIPS_EACH.
CONCURRENT_CONNECTIONS = 1000
ROUND_TRIPS_EACH = 10
# idle_1000 measures memory once every connection has been idle this long: background
# work a client does after a message (a reader thread lingering, say) is over by then.
IDLE_SETTLE_SECONDS = 2.5
PIPELINE_DEPTH = 64

SCENARIOS: list[Scenario] = [
    Scenario("rt_text16", "Round trips, 16-byte text, one at a time", "msg", 20_000, 5_000, 16),
    Scenario(
        "pipelined_1k",
        f"1 KiB binary, pipelined {PIPELINE_DEPTH} at a time",
        "msg",
        PIPELINE_DEPTH * 400,
        PIPELINE_DEPTH * 100,
        KIB,
    ),
    Scenario("large_1m", "1 MiB binary echo, one at a time", "msg", 512, 128, MIB),
    Scenario("firehose_64", "Firehose: server pushes 64 B binary", "msg", 100_000, 40_000, 64),
    Scenario(
        "firehose_16k", "Firehose: server pushes 16 KiB binary", "msg", 10_000, 4_000, 16 * KIB
    ),
    Scenario(
        "concurrent_1000",
        f"{CONCURRENT_CONNECTIONS:,} concurrent connections x {ROUND_TRIPS_EACH} round trips "
        "(16 B text)",
        "msg",
        CONCURRENT_CONNECTIONS,
        CONCURRENT_CONNECTIONS,
        16,
        async_only=True,
    ),
    Scenario(
        "idle_1000",
        f"{CONCURRENT_CONNECTIONS:,} idle connections: connect + one 16 B round trip each, "
        f"then RSS after {IDLE_SETTLE_SECONDS} s of silence",
        "connection",
        CONCURRENT_CONNECTIONS,
        CONCURRENT_CONNECTIONS,
        16,
    ),
    Scenario(
        "handshakes", "Handshakes: connect + close, one at a time", "handshake", 1_000, 300, 0
    ),
    Scenario(
        "json_2k",
        "2 KB JSON round trips (dumps + send + receive + loads)",
        "msg",
        10_000,
        3_000,
        2 * KIB,
    ),
    Scenario(
        "json_2k_deflate",
        "2 KB JSON round trips with permessage-deflate",
        "msg",
        10_000,
        3_000,
        2 * KIB,
        deflate=True,
    ),
]
SCENARIO_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclass(frozen=True)
class Client:
    """One client library (one flavor of it).

    Attributes:
        name: Identifier.
        flavor: "async" or "sync"; ratios compare with wsclient of the same flavor.
        distribution: Package whose version is reported.
        unsupported: Scenario name -> why the client cannot run it (reported as n/a).
        baseline: A raw-TCP baseline, not a WebSocket client.
    """

    name: str
    flavor: str
    distribution: str
    unsupported: dict[str, str]
    baseline: bool = False

    def supports(self, scenario: Scenario) -> bool:
        return self.reason_unsupported(scenario) is None

    def reason_unsupported(self, scenario: Scenario) -> str | None:
        if scenario.async_only and self.flavor != "async":
            return "async clients only"
        return self.unsupported.get(scenario.name)


_NO_DEFLATE = {"json_2k_deflate": "no permessage-deflate support"}

CLIENTS: list[Client] = [
    Client("wsclient-async", "async", "wsclient", {}),
    Client("wsclient-sync", "sync", "wsclient", {}),
    Client("websockets-async", "async", "websockets", {}),
    Client("websockets-sync", "sync", "websockets", {}),
    Client("aiohttp", "async", "aiohttp", {}),
    Client("aiosonic", "async", "aiosonic", dict(_NO_DEFLATE)),
    Client("picows", "async", "picows", dict(_NO_DEFLATE)),
    Client("websocket-client", "sync", "websocket-client", dict(_NO_DEFLATE)),
    Client("raw-asyncio", "async", "python", {}, baseline=True),
    Client("raw-socket", "sync", "python", {}, baseline=True),
]
CLIENT_BY_NAME = {client.name: client for client in CLIENTS}
REFERENCE = {"async": "wsclient-async", "sync": "wsclient-sync"}

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def json_documents(count: int = 64, target: int = 2048) -> list[dict[str, object]]:
    """Deterministic, varied JSON documents of about ``target`` bytes each."""
    rng = random.Random(20240605)
    documents: list[dict[str, object]] = []
    for index in range(count):
        items: list[dict[str, object]] = []
        document: dict[str, object] = {
            "id": index,
            "type": "order.updated",
            "timestamp": 1_700_000_000 + index * 17,
            "customer": {
                "id": rng.randrange(10**9),
                "name": f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()}",
                "vip": rng.random() < 0.2,
            },
            "items": items,
        }
        while len(json.dumps(document)) < target - 140:
            items.append(
                {
                    "sku": f"SKU-{rng.randrange(10**6):06d}",
                    "name": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}",
                    "quantity": rng.randint(1, 9),
                    "price": round(rng.uniform(1, 500), 2),
                    "tags": rng.sample(_WORDS, 2),
                }
            )
        documents.append(document)
    return documents
