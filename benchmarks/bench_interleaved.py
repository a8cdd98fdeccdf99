"""Warm whole fits of lmm_jax and mixedlm alternated call by call in one process (REML).

    PYTHONPATH=. python benchmarks/bench_interleaved.py [sleepstudy|mathachieve] [--calls 200]

This VM's speed moves ~2x within minutes, so bench_single.py's tool-after-tool medians can
disagree by more than the difference being measured; alternating the two tools' calls gives
both the same phases. Prints the median time of each and mixedlm / lmm_jax (> 1: lmm_jax
is faster). Run it with another checkout first on PYTHONPATH to compare two versions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lmm_jax

FORMULAS = {"sleepstudy": "Reaction ~ Days + (Days | Subject)",
            "mathachieve": "MathAch ~ cSES * Sector + MEANSES + (cSES | School)"}
WARMUP_CALLS = 30


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="sleepstudy", choices=sorted(FORMULAS))
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    import mixedlm

    data, formula = lmm_jax.datasets.load(args.dataset), FORMULAS[args.dataset]
    ours, theirs = (lambda: lmm_jax.fit(formula, data)), (lambda: mixedlm.lmer(formula, data))
    for _ in range(WARMUP_CALLS):
        ours(), theirs()
    pairs = [(timed(ours), timed(theirs)) for _ in range(args.calls)]
    ours_ms, theirs_ms = (1e3 * statistics.median(times) for times in zip(*pairs))
    print(f"{args.dataset} ({lmm_jax.__file__}): lmm_jax.fit {ours_ms:.3f} ms, mixedlm.lmer {theirs_ms:.3f} ms, "
          f"mixedlm / lmm_jax {theirs_ms / ours_ms:.2f}")


if __name__ == "__main__":
    main()
