"""The finite-sample null distribution of the restricted likelihood-ratio statistic for
one variance component (Crainiceanu & Ruppert 2004, JRSS-B 66:165), simulated in JAX.

For y = Xβ + Zb + ε, b ~ N(0, σ²λΣ), ε ~ N(0, σ²I), with n rows, p = rank(X), K columns
of Z, and μ_1..μ_K the eigenvalues of Σ^{1/2} Z'(I - X(X'X)⁻¹X') Z Σ^{1/2} (scaled so that
max μ = 1, which only rescales λ), the RLRT of H0: λ = 0 is distributed as

    sup_{λ≥0}  (n-p) log(1 + N(λ)/D(λ)) - Σ_s log(1 + λ μ_s),
    N(λ) = Σ_s λμ_s/(1+λμ_s) w_s²,    D(λ) = Σ_s w_s²/(1+λμ_s) + χ²_{n-p-K},

with w_s iid N(0, 1) independent of the χ². As RLRsim's RLRTSim does, the supremum is
taken over a grid (λ = 0 and `gridlength - 1` values log-spaced on [e^lo, e^hi]); then,
unlike RLRsim (which stops at the first grid point where the profile decreases), the
best grid point of each draw is refined by golden-section search in log λ between its
grid neighbours, so each draw is the global grid maximum, refined.

All draws are vectorised: a chunk of draws is a (chunk x K) matrix, its profile on the
grid one matrix product; chunks run through `jax.lax.map`, so memory stays bounded.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _config  # noqa: F401  (float64)

GOLDEN_STEPS = 40
CHUNK_ELEMENTS = 2 ** 21  # draws per chunk x max(K, grid): bounds a chunk's memory (~16 MB)


def lambda_grid(gridlength: int = 200, log_lo: float = -10.0, log_hi: float = 8.0) -> np.ndarray:
    """λ = 0 then `gridlength - 1` values e^lo .. e^hi, equally spaced in log λ (RLRsim's)."""
    return np.concatenate([[0.0], np.exp(np.linspace(log_lo, log_hi, gridlength - 1))])


def profile(lam: jnp.ndarray, w2: jnp.ndarray, chi_rest: jnp.ndarray, mu: jnp.ndarray,
            n0: int) -> jnp.ndarray:
    """(n-p) log(1 + N/D) - Σ log(1 + λμ) for draws w2 (..., K) at λ (broadcast over draws)."""
    lm = lam[..., None] * mu
    numerator = jnp.sum(lm / (1.0 + lm) * w2, axis=-1)
    denominator = jnp.sum(w2 / (1.0 + lm), axis=-1) + chi_rest
    return n0 * jnp.log1p(numerator / denominator) - jnp.sum(jnp.log1p(lm), axis=-1)


def _chunk_statistics(key, mu, grid, n0, df_rest, chunk: int):
    """RLRT draws for one chunk (`statistics` of fresh normal and χ² variates).

    n0 = n - p and df_rest = n - p - K are traced (one compiled program per K and chunk)."""
    k_w, k_chi = jax.random.split(key)
    w2 = jax.random.normal(k_w, (chunk, mu.shape[0])) ** 2
    gamma = jax.random.gamma(k_chi, jnp.maximum(df_rest, 1.0) / 2.0, (chunk,))
    chi_rest = jnp.where(df_rest > 0, 2.0 * gamma, 0.0)  # χ²_{df} = 2 Gamma(df/2)
    return statistics(w2, chi_rest, mu, grid, n0)


def statistics(w2, chi_rest, mu, grid, n0):
    """The RLRT of each draw (rows of w2 (draws, K), chi_rest (draws,)): the maximum of
    `profile` over the grid, refined by golden-section search between the best point's
    grid neighbours (in log λ)."""
    lm = grid[:, None] * mu[None, :]  # (g, K)
    numerator = w2 @ (lm / (1.0 + lm)).T
    denominator = w2 @ (1.0 / (1.0 + lm)).T + chi_rest[:, None]
    values = n0 * jnp.log1p(numerator / denominator) - jnp.sum(jnp.log1p(lm), axis=1)
    best = jnp.argmax(values, axis=1)
    log_grid = jnp.log(grid[1:])  # the refinement works on the positive grid points
    lo = log_grid[jnp.clip(best - 2, 0, log_grid.shape[0] - 1)]
    hi = log_grid[jnp.clip(best, 0, log_grid.shape[0] - 1)]
    refined = _golden_max(lambda t: profile(jnp.exp(t), w2, chi_rest, mu, n0), lo, hi)
    return jnp.maximum(jnp.max(values, axis=1), refined)


def _golden_max(f, lo, hi):
    """max of a unimodal f on [lo, hi] (elementwise over draws), GOLDEN_STEPS iterations."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def step(_, bounds):
        a, b = bounds
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        keep_left = f(c) > f(d)
        return jnp.where(keep_left, a, c), jnp.where(keep_left, d, b)

    a, b = jax.lax.fori_loop(0, GOLDEN_STEPS, step, (lo, hi))
    return f(0.5 * (a + b))


@partial(jax.jit, static_argnames=("chunk", "n_chunks"))
def _simulate(key, mu, grid, n0, df_rest, chunk: int, n_chunks: int):
    keys = jax.random.split(key, n_chunks)
    draws = jax.lax.map(lambda k: _chunk_statistics(k, mu, grid, n0, df_rest, chunk), keys)
    return draws.reshape(-1)


def simulate_null(mu, n: int, p: int, nsim: int, seed: int = 0, grid=None) -> np.ndarray:
    """`nsim` draws of the RLRT null distribution for eigenvalues `mu` (K,), n rows, rank(X) = p.

    Pure JAX underneath (`_simulate`: jit-compiled per (K, chunk) shape); `seed` feeds
    `jax.random.PRNGKey`, so the draws are reproducible but not RLRsim's (R's RNG).
    """
    mu = np.asarray(mu, dtype=float)
    mu = mu / mu.max()
    grid = lambda_grid() if grid is None else np.asarray(grid, dtype=float)
    k = mu.shape[0]
    chunk = int(max(1, CHUNK_ELEMENTS // max(k, grid.shape[0])))
    n_chunks = -(-nsim // chunk)
    draws = _simulate(jax.random.PRNGKey(seed), jnp.asarray(mu), jnp.asarray(grid),
                      jnp.asarray(float(n - p)), jnp.asarray(float(max(0, n - p - k))), chunk,
                      n_chunks)
    return np.asarray(draws)[:nsim]
