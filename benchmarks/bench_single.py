"""Single-fit timings of lmm_jax against lme4, mixedlm and statsmodels (REML).

    PYTHONPATH=. python benchmarks/bench_single.py [--quick] [--only sleepstudy]

Two kinds of time are measured for each model, all in this one run:

* warm: median wall time of one whole fit (formula + data frame -> fitted model)
  called again in a process that has already fitted the same model once, so
  imports, JIT compilation (lmm_jax) and lazy loading (R) are excluded;
* cold: median wall time of a fresh process that imports the package, reads the
  CSV and fits once (what a command-line user waits for); the command line
  (`python -m lmm_jax.cli fit`) after one untimed run that fills its compilation
  cache, as a user's second fit of a model of that shape.

Ratios are peer time / lmm_jax time of the same kind (> 1: lmm_jax is faster).
Every peer's REML criterion (-2 log restricted likelihood) is compared with
lmm_jax's, so that the timings compare fits of the same model to the same
optimum. The table is printed and written into a marked section of
benchmarks/RESULTS.md. Peers that are not installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

import lmm_jax

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "lmm_jax" / "datasets" / "data"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- bench_single: begin (written by benchmarks/bench_single.py; edits are overwritten) -->"
END = "<!-- bench_single: end -->"
WARM_BUDGET_S = 10.0  # stop repeating a warm fit after this much timed work (at least 3 fits)
PACKAGES = ("jax", "jaxlib", "numpy", "scipy", "pandas", "formulaic", "mixedlm", "statsmodels")

# name -> (lme4 formula, statsmodels fixed-effects formula, grouping column, statsmodels re_formula)
CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", "Reaction ~ Days", "Subject", "~Days"),
    "mathachieve": ("MathAch ~ cSES * Sector + MEANSES + (cSES | School)",
                    "MathAch ~ cSES * Sector + MEANSES", "School", "~cSES"),
}


def lmm_jax_fit():
    """The whole-fit entry point of this checkout, its label and a cold-process snippet.

    `lmm_jax.fit` when present; else `Model.fit` when its results module exists;
    else `Model.fit_params` fetched to the host (the fit without the summaries).
    Files are looked up in this checkout: an editable install of another checkout
    could otherwise supply a missing submodule.
    """
    if getattr(lmm_jax, "fit", None) is not None:
        return lmm_jax.fit, "lmm_jax.fit", "lmm_jax.fit(f, d)"
    if (Path(lmm_jax.__file__).parent / "results.py").is_file():
        return (lambda f, d, method="REML": lmm_jax.Model.from_formula(f, d, method).fit(),
                "Model.fit", "lmm_jax.Model.from_formula(f, d).fit()")
    return (lambda f, d, method="REML": jax.device_get(lmm_jax.Model.from_formula(f, d, method).fit_params()),
            "Model.fit_params (no lmm_jax.fit here)",
            "import jax; jax.device_get(lmm_jax.Model.from_formula(f, d).fit_params())")


def timed(fn) -> float:
    """Wall time of one call of fn()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_median(fn, repeats: int) -> tuple[float, int]:
    """Median wall time of fn() over up to `repeats` calls after one untimed warm-up call."""
    fn()
    times = [timed(fn)]
    while len(times) < repeats and (len(times) < 3 or sum(times) < WARM_BUDGET_S):
        times.append(timed(fn))
    return statistics.median(times), len(times)


def cold_median(argv: list[str], repeats: int) -> float:
    """Median wall time of running `argv` as a fresh process (start-up, imports, fit, exit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(case, tool, kind, seconds, n=None, criterion=None, note=""):
    return dict(case=case, tool=tool, kind=kind, seconds=seconds, n=n, criterion=criterion, note=note)


def bench_lmm_jax(case, df, repeats, cold_repeats):
    """lmm_jax: the whole fit warm, the pure jitted fit warm, and cold processes."""
    formula = CASES[case][0]
    fit, label, snippet = lmm_jax_fit()
    rows = [row(case, "lmm_jax", "warm", *warm_median(lambda: fit(formula, df), repeats), note=label)]
    model = lmm_jax.Model.from_formula(formula, df)
    params = jax.block_until_ready(model.fit_params())
    seconds, n = warm_median(lambda: jax.block_until_ready(model.fit_params()), repeats)
    rows.append(row(case, "lmm_jax", "warm", seconds, n, float(params.objective),
                    "Model.fit_params only (design built once)"))
    code = f"import pandas as pd, lmm_jax; f = {formula!r}; d = pd.read_csv({str(DATA / case) + '.csv'!r}); {snippet}"
    rows.append(row(case, "lmm_jax", "cold", cold_median([sys.executable, "-c", code], cold_repeats),
                    note=f"python -c '{snippet}'"))
    if (ROOT / "lmm_jax" / "cli.py").is_file():
        argv = [sys.executable, "-m", "lmm_jax.cli", "fit", case, formula]
        cold_median(argv, 1)  # untimed: fills the cache (the goal is the cold process with a warm cache)
        rows.append(row(case, "lmm_jax", "cold", cold_median(argv, cold_repeats),
                        note="python -m lmm_jax.cli fit (cache warm)"))
    return rows


def bench_lme4(case, repeats, cold_repeats, versions):
    """lme4: warm per-fit time measured inside R by lme4_timing.R, and the cold Rscript process."""
    if shutil.which("Rscript") is None:
        return [row(case, "lme4", "-", None, note="skipped: Rscript not found")]
    formula, csv = CASES[case][0], str(DATA / f"{case}.csv")
    script = str(ROOT / "benchmarks" / "lme4_timing.R")
    out = subprocess.run(["Rscript", script, csv, formula, str(repeats)], capture_output=True, text=True)
    if out.returncode != 0:
        return [row(case, "lme4", "-", None, note="skipped: " + out.stderr.strip().splitlines()[-1])]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    versions.update(R=result["R"], lme4=result["lme4"], Matrix=result["Matrix"])
    code = f"suppressMessages(library(lme4)); d <- read.csv('{csv}'); invisible(lmer({formula}, d))"
    return [row(case, "lme4", "warm", result["median"], len(result["times"]), result["criterion"], "lmer, timed in R"),
            row(case, "lme4", "cold", cold_median(["Rscript", "-e", code], cold_repeats), note="Rscript -e 'lmer(...)'")]


def bench_mixedlm(case, df, repeats, cold_repeats):
    """mixedlm (Rust backend): warm `mixedlm.lmer` in this process, and a cold process."""
    if importlib.util.find_spec("mixedlm") is None:
        return [row(case, "mixedlm", "-", None, note="skipped: not installed")]
    import mixedlm

    formula = CASES[case][0]
    seconds, n = warm_median(lambda: mixedlm.lmer(formula, df), repeats)
    criterion = float(mixedlm.lmer(formula, df).REMLcrit())
    code = f"import pandas as pd, mixedlm; mixedlm.lmer({formula!r}, pd.read_csv({str(DATA / case) + '.csv'!r}))"
    return [row(case, "mixedlm", "warm", seconds, n, criterion, "mixedlm.lmer"),
            row(case, "mixedlm", "cold", cold_median([sys.executable, "-c", code], cold_repeats),
                note="python -c 'mixedlm.lmer(...)'")]


def bench_statsmodels(case, df, repeats):
    """statsmodels MixedLM: warm `smf.mixedlm(...).fit(reml=True)` (model building included)."""
    if importlib.util.find_spec("statsmodels") is None:
        return [row(case, "statsmodels", "-", None, note="skipped: not installed")]
    import statsmodels.formula.api as smf

    _, fixed, group, re_formula = CASES[case]

    def fit():
        return smf.mixedlm(fixed, df, groups=df[group], re_formula=re_formula).fit(reml=True)

    seconds, n = warm_median(fit, repeats)
    return [row(case, "statsmodels", "warm", seconds, n, -2.0 * float(fit().llf), "smf.mixedlm(...).fit()")]


def run_case(case, repeats, cold_repeats, versions):
    """All measurements of one model, lmm_jax first."""
    df = lmm_jax.datasets.load(case)
    rows = bench_lmm_jax(case, df, repeats, cold_repeats)
    rows += bench_lme4(case, repeats, cold_repeats, versions)
    rows += bench_mixedlm(case, df, repeats, cold_repeats)
    rows += bench_statsmodels(case, df, repeats)
    return rows


def table(rows) -> list[str]:
    """Markdown table: time, ratio to lmm_jax's first time of the same kind, criterion difference."""
    lines = ["| model | tool | kind | time (ms) | fits | peer / lmm_jax | REML crit. − lmm_jax | what |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = next((x for x in rows if x["case"] == r["case"] and x["tool"] == "lmm_jax" and x["kind"] == r["kind"]), None)
        obj = next((x["criterion"] for x in rows if x["case"] == r["case"] and x["tool"] == "lmm_jax"
                    and x["criterion"] is not None), None)
        ms = "–" if r["seconds"] is None else f"{1000 * r['seconds']:.1f}"
        ratio = "" if r["seconds"] is None or ref is None else f"{r['seconds'] / ref['seconds']:.2f}"
        diff = "" if r["criterion"] is None or obj is None else f"{r['criterion'] - obj:+.1e}"
        lines.append(f"| {r['case']} | {r['tool']} | {r['kind']} | {ms} | {r['n'] or ''} | {ratio} | {diff} | {r['note']} |")
    return lines


def machine() -> str:
    """CPU model and core count."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def package_versions() -> dict[str, str]:
    """Versions of Python, lmm_jax (with its git commit) and the installed peers."""
    versions = {"python": platform.python_version()}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    versions["lmm_jax"] = f"{lmm_jax.__version__} ({commit.stdout.strip() or 'no git'})"
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_conditions(load_before: float, extra: str = "", backend: bool = True) -> list[str]:
    """The lines every RESULTS.md section opens with: date, load average (other work on the
    machine) before and after, `extra` (e.g. the goal), the machine and the package versions."""
    load = f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    backend_text = f"; JAX backend: {jax.default_backend()}" if backend else ""
    return [f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {load}{extra}.", "",
            f"Machine: {machine()}{backend_text}.", "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".", ""]


def report(rows, versions, args, load_before: float) -> str:
    """The RESULTS.md section: conditions of the run (load average: other work on the machine), then the table."""
    options = f"repeats ≤ {args.repeats} warm (≤ {WARM_BUDGET_S:.0f} s each), {args.cold} cold" + (" (--quick)" if args.quick else "")
    load = f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    return "\n".join([
        BEGIN, "", f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {options}; {load}.", "",
        f"Machine: {machine()}; JAX backend: {jax.default_backend()}.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
        *table(rows), "", END])


def write_results(section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section of RESULTS.md marked by `begin`/`end` (or append it), leaving the rest alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nSee README.md for what each number means.\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 warm repeats and 1 cold run per measurement")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="run only this model (repeatable)")
    args = parser.parse_args(argv)
    args.repeats, args.cold = (5, 1) if args.quick else (30, 5)
    versions, load_before = package_versions(), os.getloadavg()[0]
    rows = []
    for case in args.only or CASES:
        print(f"timing {case} ...", file=sys.stderr, flush=True)
        rows += run_case(case, args.repeats, args.cold, versions)
    section = report(rows, versions, args, load_before)
    print(section)
    write_results(section)
    print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
