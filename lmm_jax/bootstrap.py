"""Parametric bootstrap of a fitted model (lme4's `bootMer`, `confint(method = "boot")`).

From the estimates (θ̂, β̂, σ̂) draw nsim responses

    y* = Xβ̂ + Σ_k Z_k b*_k + ε*,   b*_k = σ̂ Λ_k(θ̂) u_k,  u_k ~ N(0, I),   ε*_i ~ N(0, σ̂²/w_i)

(new random effects and new residuals, lme4's `simulate(use.u = FALSE)`), refit each by
the same criterion (REML or ML) with the design fixed (`batch.fit_responses`: one compiled
program, `lax.map` over vmapped groups, host-side chunks with a progress bar), and report
each refit on lme4's profile scale ψ* = (sd/cor per term, σ, β) (`sdcor.theta_to_sdcor`).
Percentile intervals are the empirical α/2 and 1 - α/2 quantiles of the ψ* (lme4's
`boot.type = "perc"`; `boot` interpolates order statistics slightly differently); "basic"
and "logbasic" reflect them about the estimate (`bootstrap_limits`).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import ModelArrays, ModelShape, relative_factors
from .batch import fit_responses
from .sdcor import n_variance, theta_to_sdcor

CHUNK_SIZE = 1024  # refits per compiled call (one progress-bar step)


def simulate_responses(key, arrays: ModelArrays, shape: ModelShape, theta, beta, sigma,
                       nsim: int) -> jnp.ndarray:
    """(nsim, n) responses drawn from the model at (θ, β, σ) (module docstring)."""
    keys = jax.random.split(key, len(shape.structures) + 1)
    n = arrays.y.shape[0]
    y = jnp.broadcast_to(arrays.X @ beta, (nsim, n))
    for k, (lam, codes, values, m) in enumerate(zip(relative_factors(theta, shape), arrays.codes,
                                                    arrays.values, shape.n_levels)):
        u = jax.random.normal(keys[k], (nsim, m, lam.shape[0]), dtype=y.dtype)
        b = sigma * u @ lam.T
        y = y + jnp.sum(values[None] * b[:, codes], axis=-1)
    noise = jax.random.normal(keys[-1], (nsim, n), dtype=y.dtype)
    return y + sigma * noise / jnp.sqrt(arrays.weights)


@partial(jax.jit, static_argnames=("shape",))
def refits_on_sdcor_scale(params, shape: ModelShape) -> jnp.ndarray:
    """Batched FitParams -> (B, K + p) rows of ψ* = (sd/cor, σ, β)."""
    k = n_variance(shape)
    variance = jax.vmap(lambda t, s2: theta_to_sdcor(t, jnp.sqrt(s2), shape)[:k])(
        params.theta, params.sigma2)
    return jnp.concatenate([variance, params.beta], axis=1)


def refit_chunks(ys_fn, n_total: int, arrays: ModelArrays, shape: ModelShape, theta0,
                 batch_size: int = 64, chunk_size: int = CHUNK_SIZE, progress: bool = True,
                 desc: str = "bootstrap"):
    """Fit `ys_fn(start, size)` -> (size, n) responses for start = 0, size, ... < n_total,
    in equal chunks (one compilation); returns (ψ* rows, converged) for the n_total fits."""
    n_chunks = math.ceil(n_total / chunk_size)
    per_chunk = batch_size * math.ceil(math.ceil(n_total / n_chunks) / batch_size)
    chunks = range(n_chunks)
    if progress and n_chunks > 1:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="chunk")
    rows, converged = [], []
    for c in chunks:
        params, _ = fit_responses(ys_fn(c * per_chunk, per_chunk), arrays, shape, theta0,
                                  batch_size=batch_size)
        rows.append(np.asarray(refits_on_sdcor_scale(params, shape)))
        converged.append(np.asarray(params.status) <= 1)
    return np.concatenate(rows)[:n_total], np.concatenate(converged)[:n_total]


def bootstrap_replicates(result, nsim: int, seed: int = 0, batch_size: int = 64,
                         chunk_size: int = CHUNK_SIZE, progress: bool = True):
    """(nsim, K + p) bootstrap refits of a `FitResult` on the ψ scale, and their convergence."""
    if not isinstance(nsim, (int, np.integer)) or nsim < 2:
        raise ValueError(f"nsim must be an integer >= 2, got {nsim!r}")
    model = result.model
    params = result.params
    arrays, shape = model.arrays, model.shape
    key = jax.random.PRNGKey(seed)
    simulate = jax.jit(partial(simulate_responses, shape=shape), static_argnames=("nsim",))

    def responses(start, size):
        return simulate(jax.random.fold_in(key, start), arrays, theta=params.theta,
                        beta=params.beta, sigma=jnp.sqrt(params.sigma2), nsim=size)

    return refit_chunks(responses, nsim, arrays, shape, model.initial_theta(),
                        batch_size=min(batch_size, nsim), chunk_size=chunk_size, progress=progress)


BOOT_TYPES = ("perc", "basic", "logbasic")


def bootstrap_limits(replicates: np.ndarray, estimate: np.ndarray, level: float,
                     boot_type: str = "perc", positive=None, bounded=None):
    """Per column, bootstrap limits from the refits ψ* (rows; NaN rows ignored) and the
    estimate ψ̂, with q_a the empirical a-quantile of ψ* and a = (1 - level)/2:

        perc:     [q_a, q_{1-a}]                      (lme4's default, boot.type = "perc")
        basic:    [2ψ̂ - q_{1-a}, 2ψ̂ - q_a]            (lme4's boot.type = "basic")
        logbasic: basic on log ψ for the `positive` columns (SDs, σ):
                  [ψ̂²/q_{1-a}, ψ̂²/q_a]; basic elsewhere

    Where q_a of a positive column is 0 (at least a share a of the refits singular), the
    log-scale upper limit is +∞ (`confint` warns). `bounded` columns (correlations) are clipped
    to [-1, 1]. Percentile intervals
    reproduce the estimator's bias and skew; for a random-intercept SD from 20 groups they
    cover 90% at a nominal 95%, the log-scale basic interval 96.6% (tests/test_confint_coverage.py).
    """
    if boot_type not in BOOT_TYPES:
        raise ValueError(f"boot_type must be one of {BOOT_TYPES}, got {boot_type!r}")
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(replicates, [alpha, 1.0 - alpha], axis=0)
    if boot_type == "perc":
        return low, high
    lower, upper = 2.0 * estimate - high, 2.0 * estimate - low
    if boot_type == "logbasic" and positive is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            lower = np.where(positive, estimate ** 2 / high, lower)
            upper = np.where(positive, np.where(low > 0, estimate ** 2 / low, np.inf), upper)
    if bounded is not None:
        lower, upper = np.where(bounded, np.clip(lower, -1, 1), lower), np.where(bounded, np.clip(upper, -1, 1), upper)
    return lower, upper
