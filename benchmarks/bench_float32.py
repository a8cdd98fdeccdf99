"""Accuracy of `fit_batch(..., dtype="float32")` against float64 on sleepstudy-shaped batches.

    PYTHONPATH=. python benchmarks/bench_float32.py [--fits 2000]

The responses are simulated from the sleepstudy REML fit (tests/test_batch.py's
`simulate_sleepstudy`); both precisions fit the same batch. Reported: the maximum and
99th percentile over the batch of the relative error |x₃₂ - x₆₄| / |x₆₄| of β̂, SE(β̂),
σ̂ and the log-likelihood, and for θ̂ (which may be exactly 0 at a singular fit) the
absolute error and the relative error over the entries with |θ̂₆₄| > 0.05; also how
often the two precisions disagree on singularity, and the times of the warm calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import lmm_jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_batch import FORMULA, simulate_sleepstudy  # noqa: E402


def relative_errors(out32, out64) -> dict[str, np.ndarray]:
    """Per fit: the largest relative error of each estimate (θ: relative where |θ̂₆₄| > 0.05)."""
    def rel(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        err = np.abs(a - b) / np.abs(b)
        return err.max(axis=1) if err.ndim == 2 else err

    theta32, theta64 = np.asarray(out32.theta, float), out64.theta
    away = np.abs(theta64) > 0.05
    theta_rel = np.where(away, np.abs(theta32 - theta64) / np.where(away, np.abs(theta64), 1.0), 0.0)
    return {"beta": rel(out32.beta, out64.beta), "se": rel(out32.se, out64.se),
            "sigma": rel(out32.sigma, out64.sigma), "loglik": rel(out32.loglik, out64.loglik),
            "theta (|θ| > 0.05)": theta_rel.max(axis=1),
            "theta (absolute)": np.abs(theta32 - theta64).max(axis=1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=2000)
    args = parser.parse_args(argv)
    data = lmm_jax.datasets.load("sleepstudy")
    Y = simulate_sleepstudy(data, args.fits)
    outs, times = {}, {}
    for dtype in ("float64", "float32"):
        lmm_jax.fit_batch(FORMULA, data, Y, progress=False, dtype=dtype)  # compile (same chunk shapes)
        start = time.perf_counter()
        outs[dtype] = lmm_jax.fit_batch(FORMULA, data, Y, progress=False, dtype=dtype)
        times[dtype] = time.perf_counter() - start
    out32, out64 = outs["float32"], outs["float64"]
    print(f"{args.fits} sleepstudy-shaped fits; warm time float64 {times['float64']:.2f} s, "
          f"float32 {times['float32']:.2f} s")
    print(f"converged: float64 {out64.converged.sum()}, float32 {out32.converged.sum()}; singular: "
          f"float64 {out64.singular.sum()}, float32 {out32.singular.sum()}, "
          f"disagree {(out32.singular != out64.singular).sum()}")
    print("| estimate | max relative error | 99th percentile |\n|---|---:|---:|")
    for name, err in relative_errors(out32, out64).items():
        print(f"| {name} | {err.max():.1e} | {np.quantile(err, 0.99):.1e} |")


if __name__ == "__main__":
    main()
