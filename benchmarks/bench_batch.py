"""Batch timing: 10,000 sleepstudy-shaped REML fits with `lmm_jax.fit_batch` against loops of lme4 and mixedlm.

    PYTHONPATH=. python benchmarks/bench_batch.py [--fits 10000] [--peer-fits 200]

The responses are simulated from the sleepstudy REML fit (tests/test_batch.py's
`simulate_sleepstudy`, fixed seed) and share sleepstudy's design (180 rows, 18 subjects,
random intercept and slope). Measured, in this one run:

* lmm_jax: a fresh Python process that imports lmm_jax, reads the responses and makes one
  `fit_batch` call over all of them; the time of that call (JIT compilation included) and,
  for information, of a second identical call in the same process (compiled, warm); then a
  second fresh process that finds the program in the persistent compilation cache the first
  one filled (`lmm_jax.enable_compilation_cache`, a new empty folder per run);
* lme4: `refit(fit, y)` over the first `--peer-fits` responses in one Rscript process,
  timed inside R after an untimed first `lmer` (benchmarks/lme4_refit.R), scaled to all fits;
* mixedlm: `mixedlm.lmer(formula, df)` with the response replaced, over the same responses,
  in this process after one warm-up fit, scaled to all fits.

Ratios are peer time / lmm_jax time (compile included). Each peer's REML criteria are
compared with lmm_jax's for the same responses. The table goes into its own marked section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import lmm_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_single import DATA, ROOT, run_conditions, write_results  # noqa: E402
from test_batch import simulate_sleepstudy  # noqa: E402

FORMULA = "Reaction ~ Days + (Days | Subject)"
BEGIN = "<!-- bench_batch: begin (written by benchmarks/bench_batch.py; edits are overwritten) -->"
END = "<!-- bench_batch: end -->"
GOAL = "goal (issue 6): ≤ 0.6 s for 10,000 fits on 2 cores, ≥ 100x lme4, ≥ 30x mixedlm"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, jax, lmm_jax
lmm_jax.enable_compilation_cache(sys.argv[3])
Y = np.load(sys.argv[1]); data = lmm_jax.datasets.load("sleepstudy")
t1 = time.perf_counter()
out = lmm_jax.fit_batch({formula!r}, data, responses=Y, progress=False)
t2 = time.perf_counter()
again = lmm_jax.fit_batch({formula!r}, data, responses=Y, progress=False)
t3 = time.perf_counter()
np.save(sys.argv[2], -2.0 * out.loglik)
print(json.dumps(dict(imports=t1 - t0, first=t2 - t1, warm=t3 - t2, converged=int(out.converged.sum()),
                      singular=int(out.singular.sum()))))
"""


def bench_lmm_jax(Y: np.ndarray, workdir: Path) -> tuple[list[dict], np.ndarray]:
    """Two fresh processes sharing a new, empty compilation cache: the first compiles (and
    fills the cache), the second loads the compiled program. Each imports, then calls
    fit_batch twice (the first call's time includes compiling or loading, the second is warm)."""
    np.save(workdir / "Y.npy", Y)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    results = []
    for _ in range(2):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD.format(formula=FORMULA), str(workdir / "Y.npy"),
                              str(workdir / "crit.npy"), str(workdir / "jax-cache")], env=env, check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["process"] = time.perf_counter() - start
        results.append(result)
    return results, np.load(workdir / "crit.npy")


def bench_lme4(Y: np.ndarray, workdir: Path) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    np.savetxt(workdir / "Y.csv", Y, delimiter=",", header=",".join(f"y{i}" for i in range(Y.shape[1])),
               comments="")
    out = subprocess.run(["Rscript", str(ROOT / "benchmarks" / "lme4_refit.R"), str(DATA / "sleepstudy.csv"),
                          FORMULA, str(workdir / "Y.csv")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_mixedlm(Y: np.ndarray) -> dict | None:
    if importlib.util.find_spec("mixedlm") is None:
        return None
    import mixedlm

    data = lmm_jax.datasets.load("sleepstudy")
    mixedlm.lmer(FORMULA, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Model is singular" for some responses
        start = time.perf_counter()
        criteria = [float(mixedlm.lmer(FORMULA, data.assign(Reaction=y)).REMLcrit()) for y in Y.T]
        seconds = time.perf_counter() - start
    return dict(seconds=seconds, fits=Y.shape[1], criteria=criteria)


def report(n_fits, jax_results, peers, load_before) -> str:
    cold, cached = jax_results
    first = cold["first"]
    lines = ["| tool | what | fits run | time (s) | scaled to all fits (s) | peer / lmm_jax | max abs REML crit. − lmm_jax |",
             "|---|---|---:|---:|---:|---:|---:|",
             f"| lmm_jax | one `fit_batch` call, fresh process, empty compilation cache (compile included) | {n_fits} | "
             f"{first:.2f} | {first:.2f} | 1.00 | |",
             f"| lmm_jax | the same call again in that process (compiled) | {n_fits} | {cold['warm']:.2f} | "
             f"{cold['warm']:.2f} | {cold['warm'] / first:.2f} | |",
             f"| lmm_jax | whole process (start-up, imports, both calls) | {n_fits} | {cold['process']:.2f} | | | |",
             f"| lmm_jax | one `fit_batch` call, second fresh process, program loaded from the cache | {n_fits} | "
             f"{cached['first']:.2f} | {cached['first']:.2f} | {cached['first'] / first:.2f} | |",
             f"| lmm_jax | whole second process (start-up, imports, both calls) | {n_fits} | {cached['process']:.2f} | | | |"]
    for name, what, result, diff in peers:
        if result is None:
            lines.append(f"| {name} | skipped: not installed | | | | | |")
            continue
        scaled = result["seconds"] * n_fits / result["fits"]
        lines.append(f"| {name} | {what} | {result['fits']} | {result['seconds']:.2f} | {scaled:.1f} | "
                     f"{scaled / first:.1f} | {diff:.1e} |")
    return "\n".join([
        BEGIN, "", *run_conditions(load_before, f"; {GOAL}", backend=False),
        f"lmm_jax: {cold['converged']} of {n_fits} fits converged, {cold['singular']} singular.", "",
        *lines, "", "Ratios are against the first row (compile included, empty cache).", "", END])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--peer-fits", type=int, default=200)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    Y = simulate_sleepstudy(lmm_jax.datasets.load("sleepstudy"), args.fits)
    peer_Y = Y[:, :args.peer_fits]
    with tempfile.TemporaryDirectory() as tmp:
        print("timing lmm_jax ...", file=sys.stderr, flush=True)
        jax_results, jax_crit = bench_lmm_jax(Y, Path(tmp))
        print("timing lme4 ...", file=sys.stderr, flush=True)
        lme4 = bench_lme4(peer_Y, Path(tmp))
    print("timing mixedlm ...", file=sys.stderr, flush=True)
    mixed = bench_mixedlm(peer_Y)

    def diff(result):
        return None if result is None else float(np.max(np.abs(np.asarray(result["criteria"]) - jax_crit[:args.peer_fits])))

    peers = [("lme4", "`refit()` loop in one Rscript, timed in R", lme4, diff(lme4)),
             ("mixedlm", "`mixedlm.lmer` loop, warm", mixed, diff(mixed))]
    section = report(args.fits, jax_results, peers, load_before)
    print(section)
    write_results(section, BEGIN, END)


if __name__ == "__main__":
    main()
