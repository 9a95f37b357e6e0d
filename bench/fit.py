"""Reference fit and threshold calibration time for K = 1 and K = 4 (the service's upload path, in-process)."""

from __future__ import annotations

import argparse

from bench.common import Section, bench_detector, p50, photo_like
from service.decisions.calibration import fit_and_calibrate


def run(args: argparse.Namespace) -> Section:
    """Time `fit_and_calibrate` (fit and calibrate ms, p50 after one warm-up) for K = 1 and K = 4 photo-like frames."""
    section = Section("fit", f"reference fit + calibration ({args.config}, runtime={args.runtime}, ms)")
    det = bench_detector(args)
    size = tuple(args.image_size)
    section.rows.append(f"{'K':>3} {'fit':>9} {'calibrate':>10} {'total':>9}  calibration method")
    rows = []
    for k in (1, 4):
        images = [photo_like(size, seed) for seed in range(k)]
        runs = [fit_and_calibrate(det, images) for _ in range(max(1, args.repeats // 2) + 1)][1:]  # 1st: warm-up
        fit, calibrate = p50([r.timings_ms["fit"] for r in runs]), p50([r.timings_ms["calibrate"] for r in runs])
        rows.append({"K": k, "fit_ms": fit, "calibrate_ms": calibrate, "method": runs[0].calibration.method})
        section.rows.append(f"{k:3d} {fit:9.1f} {calibrate:10.1f} {fit + calibrate:9.1f}  {runs[0].calibration.method}")
    section.data = {"config": args.config, "runtime": det.runtime.name, "rows": rows}
    return section
