"""The Neyman-Scott problem: ML's σ̂² is inconsistent when the number of means grows with n.

m pairs y_i1, y_i2 ~ N(μ_i, σ²), X = pair indicators (n = 2m, p = m). The OLS pieces of
this fixed-effects-only model, from the pair structure (V₀ = I):

    β̂_i = (y_i1 + y_i2)/2,   r² = Σ_i (y_i1 - y_i2)²/2,   log|V₀| = 0,   log|X'X| = m log 2,

so through `likelihood.profiled_sigma2`: ML σ̂² = r²/(2m) → σ²/2, REML σ̂² = r²/m → σ².
"""

import jax
import jax.numpy as jnp
import numpy as np

import lmm_jax  # noqa: F401  (float64)
from lmm_jax.likelihood import Profiled, profiled_sigma2

SIGMA2 = 2.0


def pair_profile(pairs: jnp.ndarray) -> Profiled:
    """`Profiled` of the model y_ij = μ_i + ε_ij from the (m, 2) array of pairs."""
    m = pairs.shape[0]
    rss = jnp.sum((pairs[:, 0] - pairs[:, 1]) ** 2) / 2.0
    return Profiled(jnp.zeros(()), m * jnp.log(2.0), rss, pairs.mean(axis=1))


def sigma2_estimates(pairs: jnp.ndarray):
    m = pairs.shape[0]
    profiled = pair_profile(pairs)
    return (profiled_sigma2(profiled, 2 * m, m, reml=False),
            profiled_sigma2(profiled, 2 * m, m, reml=True))


def simulate(key, reps, m):
    key_mu, key_e = jax.random.split(key)
    means = 10.0 * jax.random.normal(key_mu, (reps, m, 1))
    return means + jnp.sqrt(SIGMA2) * jax.random.normal(key_e, (reps, m, 2))


def test_pair_profile_matches_least_squares():
    """The pair formulas equal a dense least-squares fit of the indicator model (small m)."""
    pairs = simulate(jax.random.PRNGKey(0), 1, 7)[0]
    y = np.asarray(pairs).ravel()
    X = np.kron(np.eye(7), np.ones((2, 1)))
    beta, rss, _, _ = np.linalg.lstsq(X, y, rcond=None)
    profiled = pair_profile(pairs)
    np.testing.assert_allclose(profiled.beta, beta, rtol=1e-12)
    np.testing.assert_allclose(profiled.rss, rss[0], rtol=1e-12)
    np.testing.assert_allclose(profiled.logdet_xtvx, np.linalg.slogdet(X.T @ X)[1], rtol=1e-12)


def test_ml_tends_to_half_sigma2_and_reml_to_sigma2():
    reps, m = 400, 2000
    pairs = simulate(jax.random.PRNGKey(2024), reps, m)
    ml, reml = jax.vmap(sigma2_estimates)(pairs)
    for estimates, target in ((ml, SIGMA2 / 2.0), (reml, SIGMA2)):
        mean = float(jnp.mean(estimates))
        error = float(jnp.std(estimates)) / np.sqrt(reps)
        assert abs(mean - target) < 4.0 * error, (mean, target, error)
    # each replicate alone is already far from the other target (sd of σ̂²_REML ≈ σ² √(2/m))
    assert float(jnp.max(ml)) < 0.6 * SIGMA2 and float(jnp.min(reml)) > 0.9 * SIGMA2


def test_lax_map_in_batches_equals_vmap():
    pairs = simulate(jax.random.PRNGKey(5), 64, 2000)
    by_vmap = jax.vmap(sigma2_estimates)(pairs)
    by_map = jax.lax.map(sigma2_estimates, pairs, batch_size=16)
    np.testing.assert_allclose(by_map, by_vmap, rtol=1e-12)
