"""Coverage of the profile and bootstrap 95% intervals for a random-intercept SD (issue 3).

500 data sets from y_ij = μ + v_i + ε_ij, m = 20 groups of 10, σ_v = σ = 1. For each, the
profile interval of sd_(Intercept) (ML profile, as lme4) and the parametric-bootstrap
intervals from NSIM REML refits are computed in compiled, batched code (the profile root
search `lax.map`ped over data sets; the 500 x NSIM refits through `bootstrap.refit_chunks`).
The profile interval and the bootstrap's log-scale basic interval must cover σ_v = 1 in
95% ± 3 SE of the replicates; lme4's percentile interval is reported and under-covers.
NSIM = 200 keeps the test under ~2 minutes on 2 cores (100,000 refits).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import lmm_jax
from lmm_jax.bootstrap import bootstrap_limits, refit_chunks, simulate_responses
from lmm_jax.profile import ml_estimates, profile_limits

N_REPLICATES = 500
NSIM = 200
GROUPS, PER_GROUP = 20, 10
TRUE_SD = 1.0
LEVEL = 0.95
CHUNK = 512  # refits per compiled call, a multiple of the batch size 64


def _model():
    groups = np.repeat(np.arange(GROUPS), PER_GROUP).astype(str)
    data = pd.DataFrame({"y": np.zeros(GROUPS * PER_GROUP), "g": groups})
    return lmm_jax.Model.from_formula("y ~ 1 + (1 | g)", data)


def _true_responses(model, key):
    """Replicate data sets at θ = σ_v/σ = 1, β = 0, σ = 1."""
    return simulate_responses(key, model.arrays, model.shape, jnp.ones(1), jnp.zeros(1), 1.0,
                              N_REPLICATES)


@partial(jax.jit, static_argnames=("shape",))
def _profile_sd_limits(ys, arrays, shape, theta0, z):
    """(lower, upper) of sd_(Intercept) for each row of ys, in one compiled `lax.map`."""
    def one(y):
        a = dataclasses.replace(arrays, y=y)
        psi_hat, d_hat = ml_estimates(a, shape, theta0)
        out = profile_limits(a, shape, psi_hat, d_hat, z, jnp.zeros(1, int))
        return out.lower[0], out.upper[0]

    return jax.lax.map(one, ys, batch_size=50)


def _bootstrap_sd_limits(ys, model, key):
    """Bootstrap limits of sd_(Intercept): NSIM REML refits per data set, all batched.
    The data sets' own fits and the refits share one compiled program (chunks of CHUNK)."""
    fit = partial(refit_chunks, arrays=model.arrays, shape=model.shape,
                  theta0=model.initial_theta(), chunk_size=CHUNK, progress=False)
    padded = jnp.concatenate([ys, jnp.repeat(ys[-1:], CHUNK, axis=0)])
    estimates, _ = fit(lambda start, size: padded[start:start + size], n_total=N_REPLICATES)
    sd, sigma, beta = (jnp.asarray(estimates[:, i]) for i in range(3))
    simulate = jax.jit(jax.vmap(
        lambda k, a, theta, b, s: simulate_responses(k, a, model.shape, theta, b, s, 1),
        in_axes=(0, None, 0, 0, 0)))

    def responses(start, size):
        rows = jnp.arange(start, start + size)
        index = jnp.minimum(rows // NSIM, N_REPLICATES - 1)
        keys = jax.vmap(partial(jax.random.fold_in, key))(rows)
        return simulate(keys, model.arrays, (sd / sigma)[index, None], beta[index, None],
                        sigma[index])[:, 0]

    rows, converged = fit(responses, n_total=N_REPLICATES * NSIM)
    boot_sd = np.where(converged, rows[:, 0], np.nan).reshape(N_REPLICATES, NSIM)
    estimate = np.asarray(sd)
    perc = bootstrap_limits(boot_sd.T, estimate, LEVEL, "perc")
    logbasic = bootstrap_limits(boot_sd.T, estimate, LEVEL, "logbasic", positive=True)
    return perc, logbasic, converged.mean()


@pytest.mark.slow
def test_profile_and_bootstrap_cover_the_true_sd():
    model = _model()
    ys = _true_responses(model, jax.random.PRNGKey(2024))
    z = norm.ppf(0.5 + LEVEL / 2)
    start = time.perf_counter()
    lower, upper = jax.device_get(_profile_sd_limits(ys, model.arrays, model.shape,
                                                     model.initial_theta(), z))
    print(f"profile intervals: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    profile_coverage = _coverage(lower, upper)
    perc, logbasic, converged = _bootstrap_sd_limits(ys, model, jax.random.PRNGKey(7))
    print(f"bootstrap intervals: {time.perf_counter() - start:.1f} s")
    perc_coverage, logbasic_coverage = _coverage(*perc), _coverage(*logbasic)
    band = 3 * np.sqrt(LEVEL * (1 - LEVEL) / N_REPLICATES)
    print(f"coverage: profile {profile_coverage:.3f}, bootstrap logbasic {logbasic_coverage:.3f}, "
          f"bootstrap perc {perc_coverage:.3f}; band {LEVEL - band:.3f}..{LEVEL + band:.3f}; "
          f"refits converged {converged:.4f}")
    assert np.all(np.isfinite(lower)) and np.all(upper > lower)
    assert converged > 0.99
    assert abs(profile_coverage - LEVEL) <= band
    assert abs(logbasic_coverage - LEVEL) <= band
    # finding: lme4's percentile interval under-covers here (0.900 with these seeds): σ̂_v is
    # biased down and skewed, and the bootstrap distribution, drawn at σ̂_v, repeats the bias,
    # so its upper ends fall below σ_v in ~10% of the data sets
    assert 0.85 < perc_coverage < LEVEL - band


def _coverage(lower, upper) -> float:
    return float(np.mean((lower <= TRUE_SD) & (TRUE_SD <= upper)))
