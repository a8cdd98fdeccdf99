"""InstEval (73,421 ratings, 2,972 students x 1,128 instructors crossed): one large REML fit,
lmm_jax against lme4 and mixedlm in one run.

    PYTHONPATH=. python benchmarks/bench_insteval.py

Warm times (the model fitted once untimed first): lmm_jax's whole `lmm_jax.fit` and its
`Model.fit_params` (design built once), lme4's `lmer` timed inside R
(benchmarks/lme4_timing.R), mixedlm's `mixedlm.lmer`; each the median of 3 fits. Every
REML criterion is compared with lme4's reference value (tests/reference/insteval_crossed_reml.json).
Goal (issue 6): ≤ 0.6 s warm, matching lme4's criterion to 1e-6 relative.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax

import lmm_jax
from lmm_jax.model import optimizer_hessian

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_single import DATA, ROOT, run_conditions, warm_median, write_results  # noqa: E402

FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"
REFERENCE = json.loads((ROOT / "tests" / "reference" / "insteval_crossed_reml.json").read_text())["reml_criterion"]
BEGIN = "<!-- bench_insteval: begin (written by benchmarks/bench_insteval.py; edits are overwritten) -->"
END = "<!-- bench_insteval: end -->"
REPEATS = 3


def main() -> None:
    load_before = os.getloadavg()[0]
    data = lmm_jax.datasets.load("insteval")
    rows = []
    print("timing lmm_jax ...", file=sys.stderr, flush=True)
    whole, _ = warm_median(lambda: lmm_jax.fit(FORMULA, data), REPEATS)
    model = lmm_jax.Model.from_formula(FORMULA, data)
    params = jax.block_until_ready(model.fit_params())
    core, _ = warm_median(lambda: jax.block_until_ready(model.fit_params()), REPEATS)
    ours = float(params.objective)
    rows.append(("lmm_jax", "`lmm_jax.fit` (formula to full result)", whole, ours))
    rows.append(("lmm_jax", "`Model.fit_params` (design built once)", core, ours))
    if shutil.which("Rscript"):
        print("timing lme4 ...", file=sys.stderr, flush=True)
        out = subprocess.run(["Rscript", str(ROOT / "benchmarks" / "lme4_timing.R"), str(DATA / "insteval.csv.gz"),
                              FORMULA, str(REPEATS)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(("lme4", "`lmer`, timed in R", result["median"], result["criterion"]))
    if importlib.util.find_spec("mixedlm"):
        import mixedlm

        print("timing mixedlm ...", file=sys.stderr, flush=True)
        seconds, _ = warm_median(lambda: mixedlm.lmer(FORMULA, data), REPEATS)
        rows.append(("mixedlm", "`mixedlm.lmer`", seconds, float(mixedlm.lmer(FORMULA, data).REMLcrit())))
    lines = ["| tool | what | warm time (s) | peer / lmm_jax.fit | REML crit. − lme4 reference (relative) |",
             "|---|---|---:|---:|---:|"]
    for tool, what, seconds, crit in rows:
        lines.append(f"| {tool} | {what} | {seconds:.2f} | {seconds / whole:.2f} | {(crit - REFERENCE) / abs(REFERENCE):+.1e} |")
    section = "\n".join([BEGIN, "", *run_conditions(load_before, f"; median of {REPEATS} warm fits each; "
                                                                 "goal (issue 6): ≤ 0.6 s warm"),
                         f"lmm_jax: {int(params.iterations)} trust-region iterations with a "
                         f"{optimizer_hessian(model.arrays, model.shape)} Hessian, status {int(params.status)}.", "",
                         *lines, "", END])
    print(section)
    write_results(section, BEGIN, END)


if __name__ == "__main__":
    main()
