"""Throughput of the running service at concurrency 1, 4 and 16, with batching on (MAX_BATCH_SIZE 8) and off (1).

Both servers run at once (each idle while the other is measured) and the runs alternate between them."""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench import load
from bench.common import Section, Target

CONCURRENCY = (1, 4, 16)
BATCH_SIZES = (1, 8)


def run(args: argparse.Namespace) -> Section:
    """Service images/s at concurrency 1, 4, 16 against two servers, MAX_BATCH_SIZE 1 and 8, runs alternating; checks
    batching is no slower at C=16."""
    config = args.service_config
    section = Section("throughput", f"service throughput ({config}, bottle_xs or synthetic 900x900, img/s)")
    n = 24 if args.quick else 96
    server_args = load.parse_args(["--config", config, "--device", "cpu", "-n", str(n), *args.server_flags])
    workload = load.build_workload(server_args)
    results: dict[int, dict[int, load.RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp, ExitStack() as servers:
        urls = {}  # both servers live at once; runs alternate between them, so drifts in load hit both alike
        for batch in BATCH_SIZES:
            folder = Path(tmp) / f"batch{batch}"
            folder.mkdir()
            urls[batch] = servers.enter_context(load.running_server(server_args, folder, batch))
        for c in CONCURRENCY:
            for batch in BATCH_SIZES:
                server_args.concurrency = c
                server_args.warmup = c
                run = load.bench_url(urls[batch], server_args, workload, f"batch={batch} C={c}", batch, True)
                results.setdefault(c, {})[batch] = run
    section.rows.append(load.COLUMNS)
    for c in CONCURRENCY:
        for batch in BATCH_SIZES:
            section.rows.append(load.table_row(results[c][batch]))
    for c in CONCURRENCY:
        off, on = results[c][1].images_per_s, results[c][8].images_per_s
        section.rows.append(f"C={c:<3} batching on / off: {on / off if off else float('nan'):.2f}x")
    off16, on16 = results[16][1].images_per_s, results[16][8].images_per_s
    if on16 > 0:
        section.targets.append(Target("C=16: unbatched img/s / batched img/s (batching no slower)", off16 / on16, 1.0))
    section.data = {
        "config": config,
        "requests": n,
        "runs": {f"C{c}-batch{b}": vars(results[c][b]) for c in CONCURRENCY for b in BATCH_SIZES},
    }
    return section
