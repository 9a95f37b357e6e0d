"""The station's Prometheus metrics: each part's stage times, its verdicts and codes, the handshake state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STAGE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
STAGES = ("acquire", "prepare", "request", "decode", "queue", "predict", "encode", "output", "total")


class StationMetrics:
    """One registry per station (tests build several). `stage` is one of STAGES."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage_seconds = Histogram(
            "station_stage_seconds",
            "Seconds per part and stage: acquire (trigger -> frame), prepare (frame -> request), request (the HTTP "
            "round trip), the service's decode/queue/predict/encode, output (response -> output written), total",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=self.registry,
        )
        self.results = Counter(
            "station_results",
            "Parts by verdict (OK, NG, ERROR) and error code",
            ["verdict", "code"],
            registry=self.registry,
        )
        self.refused_triggers = Counter(
            "station_refused_triggers", "Triggers refused because the station was not ready", registry=self.registry
        )
        self.changeovers = Counter(
            "station_changeovers", "Product changeovers by outcome (done, failed)", ["outcome"], registry=self.registry
        )
        self.state = Gauge("station_state", "The handshake state (see docs/plc.md)", registry=self.registry)
        self.protocol_restarts = Counter(
            "station_protocol_restarts",
            "Restart attempts of protocol adapters (modbus, opcua, mqtt) that stopped unexpectedly",
            ["protocol"],
            registry=self.registry,
        )
        self.outbox_dropped = Counter(
            "station_outbox_dropped",
            "Results dropped from a full outbox (the oldest first) before the broker took them",
            ["protocol"],
            registry=self.registry,
        )
        self.outbox_size = Gauge(
            "station_outbox_results",
            "Results waiting for the broker's acknowledgement",
            ["protocol"],
            registry=self.registry,
        )

    def observe_stages(self, stage_ms: dict[str, float]) -> None:
        """Record a part's stage times (milliseconds; stages not in STAGES are ignored)."""
        for stage, ms in stage_ms.items():
            if stage in STAGES:
                self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
