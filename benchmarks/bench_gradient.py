"""The cost of differentiating a fit, relative to the fit itself (issue 7).

    PYTHONPATH=. python benchmarks/bench_gradient.py [--repeats 50]

For each model, all compiled (`jax.jit`) and timed warm (after one untimed call), in
this one run so that the ratios compare like with like on a loaded machine:

* fit: `model.fit_params(y)` (the trust-region Newton fit);
* value and gradient of a scalar loss of (β̂, σ̂², θ̂) w.r.t. (y, X, weights) through the
  fit: the fit, then one reverse pass through the implicit-function-theorem rule
  (a JVP of ∇_θD, a k x k solve with the Hessian at θ̂, and β̂, σ̂² as closed forms);
* the same gradient at a finished fit (`implicit.estimates_at_optimum`): the derivative's
  own cost, without the optimiser;
* one forward-mode directional derivative (jvp) of all estimates through the fit;
* the full Jacobian of β̂ w.r.t. y (jacrev: p reverse passes) through the fit.

The calls are timed round-robin (each round calls the fit and every derivative once), so
that a round's ratios compare calls made within milliseconds of each other; reported are
the minimum time over rounds (the least disturbed call) and the median over rounds of each
ratio to the same round's fit. Printed, and written into a marked section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import lmm_jax
from lmm_jax.implicit import estimates_at_optimum

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_single  # noqa: E402
from bench_single import machine, package_versions, timed, write_results  # noqa: E402

BEGIN = "<!-- bench_gradient: begin (written by benchmarks/bench_gradient.py; edits are overwritten) -->"
END = "<!-- bench_gradient: end -->"
CASES = {name: formula for name, (formula, *_rest) in bench_single.CASES.items()}


def loss(params) -> jnp.ndarray:
    """A scalar of every estimate, so that no derivative is pruned away."""
    return jnp.sum(params.beta ** 2) + params.sigma2 + jnp.sum(params.theta ** 2)


def timings(model, repeats: int) -> list[tuple[str, float, float]]:
    """(what, minimum seconds, median ratio to the fit) for the fit and each derivative."""
    arrays = model.arrays
    y, X, w = arrays.y, arrays.X, arrays.weights
    fit = jax.jit(lambda y: model.fit_params(y))
    through_fit = jax.jit(jax.value_and_grad(lambda y, X, w: loss(model.fit_params(y, X, w)),
                                             argnums=(0, 1, 2)))
    finished = fit(y)

    def at_finished(y, X, w):
        return loss(estimates_at_optimum(model.with_arrays(y, X, w), model.shape, finished))

    at_fit = jax.jit(jax.value_and_grad(at_finished, argnums=(0, 1, 2)))
    direction = jnp.ones_like(y)
    forward = jax.jit(lambda y: jax.jvp(lambda v: model.fit_params(v), (y,), (direction,)))
    jacobian = jax.jit(jax.jacrev(lambda y: model.fit_params(y).beta))
    cases = [("fit: `model.fit_params(y)`", lambda: fit(y)),
             ("value and gradient of a loss w.r.t. (y, X, weights), through the fit",
              lambda: through_fit(y, X, w)),
             ("the same gradient at a finished fit (no optimiser)", lambda: at_fit(y, X, w)),
             ("jvp of all estimates along one direction in y, through the fit", lambda: forward(y)),
             (f"Jacobian ∂β̂/∂y ({X.shape[1]} x {y.shape[0]}, jacrev), through the fit",
              lambda: jacobian(y))]
    calls = [lambda call=call: jax.block_until_ready(call()) for _, call in cases]
    for call in calls:
        call()  # compile
    rounds = [[timed(call) for call in calls] for _ in range(repeats)]
    return [(what, min(r[i] for r in rounds), statistics.median(r[i] / r[0] for r in rounds))
            for i, (what, _) in enumerate(cases)]


def report(results: dict, load_before: float, repeats: int) -> str:
    lines = ["| model | what | min time (ms) | median ratio to the fit |", "|---|---|---:|---:|"]
    for name, rows in results.items():
        lines += [f"| {name} | {what} | {1e3 * s:.2f} | {ratio:.2f} |" for what, s, ratio in rows]
    return "\n".join([
        BEGIN, "", f"Run {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
        f"{repeats} warm rounds; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after.", "", f"Machine: {machine()}; JAX backend: "
        f"{jax.default_backend()}.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".", "",
        *lines, "", END])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = {}
    for name, formula in CASES.items():
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        model = lmm_jax.Model.from_formula(formula, lmm_jax.datasets.load(name))
        results[name] = timings(model, args.repeats)
    section = report(results, load_before, args.repeats)
    print(section)
    write_results(section, BEGIN, END)


if __name__ == "__main__":
    main()
