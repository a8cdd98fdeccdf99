"""A statistician's session: ten different models fitted once each in one fresh process.

    PYTHONPATH=. python benchmarks/bench_session.py [--repeat 1]

What a new user waits for is not a warm refit but the first fit of each model they try.
In one fresh process each, this times the import and each of the ten fits below, and the
whole process from launch to exit:

- lmm_jax with an empty compilation cache (a new folder), then again with the cache filled by
  that run (a second process of the same session: the stored programs are loaded);
- lme4 in one `Rscript` (skipped without R and lme4);
- the `mixedlm` package in one Python process (skipped when not installed).

Every tool gets OPENBLAS_NUM_THREADS=1. Prints a markdown table of seconds and the ratios to
lme4's, for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = [  # (data set, formula, REML)
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject)", False),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)", True),
    ("dyestuff", "Yield ~ 1 + (1 | Batch)", True),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", True),
    ("orthodont", "distance ~ age + Sex + (age | Subject)", True),
    ("rail", "travel ~ 1 + (1 | Rail)", True),
    ("mathachieve", "MathAch ~ SES * Sector + (SES | School)", True),
    ("mathachieve", "MathAch ~ SES + MEANSES + (1 | School)", False),
    ("bodyweight", "weight ~ Time * Diet + (Time | Rat)", True),
]
FACTORS = {"sleepstudy": ["Subject"], "rail": ["Rail"], "bodyweight": ["Rat", "Diet"],
           "mathachieve": ["School"]}

LMM_JAX_CHILD = """
import json, sys, time
start = time.perf_counter()
import lmm_jax
imported = time.perf_counter()
fits = []
for name, formula, reml in json.loads(sys.argv[1]):
    data = lmm_jax.datasets.load(name)
    t0 = time.perf_counter()
    lmm_jax.fit(formula, data, method="REML" if reml else "ML").loglik
    fits.append(time.perf_counter() - t0)
print(json.dumps(dict(import_s=imported - start, fits=fits)))
"""

MIXEDLM_CHILD = """
import json, sys, time
start = time.perf_counter()
import mixedlm, pandas as pd
imported = time.perf_counter()
fits = []
for path, formula, reml in json.loads(sys.argv[1]):
    data = pd.read_csv(path)
    t0 = time.perf_counter()
    mixedlm.lmer(formula, data, REML=reml)
    fits.append(time.perf_counter() - t0)
print(json.dumps(dict(import_s=imported - start, fits=fits)))
"""

R_CHILD = """
args <- commandArgs(TRUE)
start <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
imported <- proc.time()[["elapsed"]]
models <- read.csv(args[1], stringsAsFactors = FALSE)
fits <- numeric(0)
for (i in seq_len(nrow(models))) {
  data <- read.csv(models$path[i], stringsAsFactors = TRUE)
  for (f in strsplit(models$factors[i], ";")[[1]]) data[[f]] <- factor(data[[f]])
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(as.formula(models$formula[i]), data, REML = models$reml[i])
  fits <- c(fits, proc.time()[["elapsed"]] - t0)
}
cat(sprintf('{"import_s": %.6f, "fits": [%s]}\\n', imported - start, paste(sprintf("%.6f", fits), collapse = ",")))
"""


def run_child(command: list[str], env: dict) -> dict:
    """The child's JSON line, and its whole wall time from launch to exit."""
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(result, wall_s=wall)


def write_csvs(folder: Path) -> dict[str, Path]:
    import lmm_jax

    paths = {}
    for name in sorted({name for name, _, _ in MODELS}):
        paths[name] = folder / f"{name}.csv"
        lmm_jax.datasets.load(name).to_csv(paths[name], index=False)
    return paths


def session_runs(folder: Path) -> dict[str, dict]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("LMM_JAX_CACHE", None)
    runs = {}
    cache = folder / "cache"
    env_cache = dict(env, LMM_JAX_CACHE_DIR=str(cache))
    models = json.dumps(MODELS)
    runs["lmm_jax, empty cache"] = run_child([sys.executable, "-c", LMM_JAX_CHILD, models], env_cache)
    runs["lmm_jax, cache filled"] = run_child([sys.executable, "-c", LMM_JAX_CHILD, models], env_cache)
    paths = write_csvs(folder)
    if shutil.which("Rscript"):
        table = folder / "models.csv"
        rows = ["path,formula,reml,factors"] + [
            f'{paths[name]},"{formula}",{"TRUE" if reml else "FALSE"},{";".join(FACTORS.get(name, []))}'
            for name, formula, reml in MODELS]
        table.write_text("\n".join(rows) + "\n")
        script = folder / "session.R"
        script.write_text(R_CHILD)
        runs["lme4 (Rscript)"] = run_child(["Rscript", str(script), str(table)], env)
    try:
        import mixedlm  # noqa: F401
    except ImportError:
        pass
    else:
        mixed = json.dumps([(str(paths[name]), formula, reml) for name, formula, reml in MODELS])
        runs["mixedlm"] = run_child([sys.executable, "-c", MIXEDLM_CHILD, mixed], env)
    return runs


def table(runs: dict[str, dict]) -> str:
    reference = runs.get("lme4 (Rscript)")
    lines = ["| tool | process wall (s) | import (s) | ten fits (s) | median fit (s) | slowest fit (s) "
             "| wall / lme4's |", "|---|---:|---:|---:|---:|---:|---:|"]
    for tool, run in runs.items():
        ratio = f"{run['wall_s'] / reference['wall_s']:.2f}" if reference else "-"
        lines.append(f"| {tool} | {run['wall_s']:.2f} | {run['import_s']:.2f} | {sum(run['fits']):.2f} | "
                     f"{statistics.median(run['fits']):.3f} | {max(run['fits']):.3f} | {ratio} |")
    lines.append("")
    lines.append("| model | " + " | ".join(runs) + " |")
    lines.append("|---|" + "---:|" * len(runs))
    for i, (name, formula, reml) in enumerate(MODELS):
        cells = " | ".join(f"{run['fits'][i]:.3f}" for run in runs.values())
        lines.append(f"| {name} `{formula}` {'REML' if reml else 'ML'} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        runs = session_runs(Path(folder))
    print(f"load average before: {load:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(table(runs))


if __name__ == "__main__":
    main()
