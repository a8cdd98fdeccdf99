"""Scaling of one fit with n: random intercept and slope, groups of 10 rows, n = 10³ ... 10⁶.

    PYTHONPATH=. python benchmarks/bench_scaling.py [--max-n 1000000] [--repeats 3]

For each n: simulate y = 1 + 0.5 x + b₀ + b₁ x + ε (x = 0..9 within a group, b ~ N(0,
diag(1, 0.1²)), ε ~ N(0, 1)), build the model once (`Model.from_formula`, timed), fit once
to compile (timed, compilation included), then time `repeats` warm fits
(`Model.fit_params`, jit-compiled) and keep the median. The per-iteration cost of the
blocked evaluator is O(m₁p₁³) with m₁ = n/10 groups, so the time should grow linearly
in n: the script fits log(time) = a + b log(n) over n ≥ 10⁴ and reports the slope b.

Writes benchmarks/scaling.csv (read by notebooks/05_batch_fitting.ipynb, so the plot needs
no rerun of 10⁶) and the marked section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

import lmm_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_single import run_conditions, write_results  # noqa: E402

FORMULA = "y ~ x + (x | g)"
CSV = Path(__file__).resolve().parent / "scaling.csv"
BEGIN = "<!-- bench_scaling: begin (written by benchmarks/bench_scaling.py; edits are overwritten) -->"
END = "<!-- bench_scaling: end -->"
SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)
GROUP_SIZE = 10


def simulate(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = n // GROUP_SIZE
    g = np.repeat(np.arange(groups), GROUP_SIZE)
    x = np.tile(np.arange(GROUP_SIZE, dtype=float), groups)
    b = rng.standard_normal((groups, 2)) * np.array([1.0, 0.1])
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def time_one(n: int, repeats: int) -> dict:
    data = simulate(n)
    start = time.perf_counter()
    model = lmm_jax.Model.from_formula(FORMULA, data)
    build = time.perf_counter() - start
    start = time.perf_counter()
    params = jax.block_until_ready(model.fit_params())
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(model.fit_params())
        warm.append(time.perf_counter() - start)
    return dict(n=n, groups=n // GROUP_SIZE, build_s=build, first_fit_s=first,
                warm_fit_s=statistics.median(warm), repeats=repeats,
                iterations=int(params.iterations), status=int(params.status))


def loglog_slope(rows: list[dict], min_n: int = 10_000) -> float:
    """b in log(time) = a + b log(n), least squares over n ≥ min_n."""
    use = [r for r in rows if r["n"] >= min_n]
    return float(np.polyfit(np.log([r["n"] for r in use]), np.log([r["warm_fit_s"] for r in use]), 1)[0])


def report(rows: list[dict], slope: float, load_before: float) -> str:
    lines = ["| n | groups | build design (s) | first fit, compile incl. (s) | warm fit (s) | µs per row | Newton iterations |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['groups']:,} | {r['build_s']:.3f} | {r['first_fit_s']:.2f} | "
                     f"{r['warm_fit_s']:.4f} | {1e6 * r['warm_fit_s'] / r['n']:.2f} | {r['iterations']} |")
    return "\n".join([
        BEGIN, "", *run_conditions(load_before),
        f"`{FORMULA}`, groups of {GROUP_SIZE} rows, REML; warm fit = median of the repeats of "
        "`Model.fit_params()` (compiled).", "", *lines, "",
        f"Log-log slope of the warm fit time over n ≥ 10⁴: **{slope:.2f}** (1 = linear).", "", END])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=SIZES[-1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and the CSV")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = []
    for n in (s for s in SIZES if s <= args.max_n):
        rows.append(time_one(n, args.repeats if n < 1_000_000 else max(1, args.repeats - 1)))
        print(rows[-1], file=sys.stderr, flush=True)
    slope = loglog_slope(rows)
    section = report(rows, slope, load_before)
    print(section)
    if not args.no_write:
        with CSV.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_results(section, BEGIN, END)


if __name__ == "__main__":
    main()
