"""The blocked (fast) evaluator equals the dense textbook evaluator, and the fit through
each evaluator reproduces the lme4 reference cases of up to ~1,000 rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from conftest import case_data, cases_of_kind, load_case
from lmm_jax.blocked import (blocked_profile, blocked_profile_and_xtvx_inverse, blocked_random_effects,
                             cross_products)
from lmm_jax.dense import dense_profile, dense_random_effects, dense_v0, dense_xtvx_inverse
from lmm_jax.likelihood import profiled_deviance
from lmm_jax.model import deviance_function

DESIGNS = {
    "slope_and_crossed": "y ~ x + f + (1 + x | g1) + (1 | g2)",
    "three_crossed": "y ~ x + (1 | g1) + (1 | g2) + (0 + x | g3)",
    "nested_and_uncorrelated": "y ~ x + (x || g2) + (1 | g2/g3)",
    "vector_term_second": "y ~ 1 + (1 | g1) + (1 + x | g3)",
}


# the evaluators jitted (shape static): one compile per model, not one per primitive
dense_profile_jit, blocked_profile_jit = (jax.jit(f, static_argnums=2) for f in (dense_profile, blocked_profile))
dense_effects_jit, blocked_effects_jit = (jax.jit(f, static_argnums=2)
                                          for f in (dense_random_effects, blocked_random_effects))


def random_frame(seed: int, n: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n) * 3 + 10,
        "x": rng.normal(size=n),
        "f": rng.choice(["a", "b", "c"], size=n),
        "g1": rng.integers(0, 12, size=n).astype(str),
        "g2": rng.choice(list("PQRSTU"), size=n),
        "g3": rng.integers(0, 4, size=n),
    })


@pytest.mark.parametrize("name", list(DESIGNS))
@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("seed", [0, 1])
def test_blocked_equals_dense(name, method, seed):
    rng = np.random.default_rng(100 + seed)
    weights = rng.uniform(0.5, 2.0, size=90)
    model = lmm_jax.Model.from_formula(DESIGNS[name], random_frame(seed), method, weights=weights)
    n, p = model.arrays.X.shape
    cp = cross_products(model.arrays, model.shape)
    for _ in range(3):
        theta = jnp.asarray(rng.normal(size=model.shape.n_theta))
        dense = dense_profile_jit(theta, model.arrays, model.shape)
        fast = blocked_profile_jit(theta, cp, model.shape)
        for a, b in zip(dense, fast):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(profiled_deviance(fast, n, p, model.shape.reml),
                                   profiled_deviance(dense, n, p, model.shape.reml), rtol=1e-12)
        modes, cond_cov = dense_effects_jit(theta, model.arrays, model.shape, 2.5)
        effects = blocked_effects_jit(theta, cp, model.shape, 2.5)
        np.testing.assert_allclose(np.concatenate([m.ravel() for m in effects.modes]), modes,
                                   rtol=1e-8, atol=1e-9)
        start = 0
        for m_k, d, blocks in zip(model.shape.n_levels, model.shape.dims, effects.cond_cov):
            for level in range(m_k):
                sl = slice(start + level * d, start + (level + 1) * d)
                np.testing.assert_allclose(blocks[level], cond_cov[sl, sl], rtol=1e-8, atol=1e-10)
            start += m_k * d


@pytest.mark.parametrize("name", list(DESIGNS))
def test_profile_and_xtvx_inverse_from_one_factor_equal_dense(name):
    """The batch fits' (profile, (X'V₀⁻¹X)⁻¹) from one factor of S equal the dense formulas."""
    model = lmm_jax.Model.from_formula(DESIGNS[name], random_frame(2))
    cp = cross_products(model.arrays, model.shape)
    both = jax.jit(blocked_profile_and_xtvx_inverse, static_argnums=2)
    theta = jnp.asarray(np.random.default_rng(7).normal(size=model.shape.n_theta))
    profiled, xtvx_inv = both(theta, cp, model.shape)
    for a, b in zip(dense_profile_jit(theta, model.arrays, model.shape), profiled):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9)
    dense = jax.jit(dense_xtvx_inverse, static_argnums=2)(theta, model.arrays, model.shape)
    np.testing.assert_allclose(xtvx_inv, dense, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_known_scale_blocked_equals_dense(method):
    """The known-scale criterion (σ² = 1, W⁻¹ = diag(D) known) through both evaluators, on a
    random crossed design with a vector term, equals the textbook -2ℓ from V₀ directly:
    log|V₀| + r'V₀⁻¹r + d log 2π (+ log|X'V₀⁻¹X| - log|X'X| for REML)."""
    rng = np.random.default_rng(7)
    variances = rng.uniform(0.2, 3.0, size=90)
    model = lmm_jax.Model.from_formula(DESIGNS["slope_and_crossed"], random_frame(3), method,
                                       weights=1.0 / variances, known_scale=True)
    assert model.shape.known_scale and model.shape.reml == (method == "REML")
    blocked = jax.jit(deviance_function(model.arrays, model.shape, "blocked"))
    dense = jax.jit(deviance_function(model.arrays, model.shape, "dense"))
    X, y = np.asarray(model.arrays.X), np.asarray(model.arrays.y)
    n, p = X.shape
    for _ in range(3):
        theta = jnp.asarray(rng.normal(size=model.shape.n_theta))
        v0 = np.asarray(jax.jit(dense_v0, static_argnums=2)(theta, model.arrays, model.shape))
        v_inv_x = np.linalg.solve(v0, X)
        beta = np.linalg.solve(X.T @ v_inv_x, v_inv_x.T @ y)
        resid = y - X @ beta
        expected = (np.linalg.slogdet(v0)[1] + resid @ np.linalg.solve(v0, resid)
                    + (n - p if method == "REML" else n) * np.log(2 * np.pi))
        if method == "REML":
            expected += np.linalg.slogdet(X.T @ v_inv_x)[1] - np.linalg.slogdet(X.T @ X)[1]
        np.testing.assert_allclose(float(blocked(theta)), float(dense(theta)), rtol=1e-12)
        np.testing.assert_allclose(float(dense(theta)), expected, rtol=1e-10)


SMALL_CASES = [c for c in cases_of_kind("lmm") if load_case(c)["nobs"] <= 1000]


@pytest.mark.parametrize("case_id", SMALL_CASES)
def test_dense_fit_matches_reference(case_id):
    case = load_case(case_id)
    model = lmm_jax.Model.from_formula(case["formula"], case_data(case), case["method"])
    params = model.fit_params(evaluator="dense")
    np.testing.assert_allclose(params.beta, case["fixed"]["estimate"], rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(params.sigma2), case["sigma"], rtol=1e-4)
    np.testing.assert_allclose(params.theta, case["theta"], rtol=1e-4, atol=1e-6)
    assert abs(float(params.loglik) - case["loglik"]) < 1e-4
    n_params = len(params.beta) + len(params.theta) + 1
    assert abs(-2 * float(params.loglik) + 2 * n_params - case["aic"]) < 2e-4
    assert abs(-2 * float(params.loglik) + np.log(case["nobs"]) * n_params - case["bic"]) < 2e-4
    xtvx_inverse = jax.jit(dense_xtvx_inverse, static_argnums=2)  # jitted: one compile, not one per op
    se = np.sqrt(params.sigma2 * np.diag(xtvx_inverse(params.theta, model.arrays, model.shape)))
    np.testing.assert_allclose(se, case["fixed"]["se"], rtol=1e-4)
    assert bool(params.singular) == case["singular"]
    modes, cond_cov = dense_effects_jit(params.theta, model.arrays, model.shape, params.sigma2)
    first = model.design.terms[0]
    ref = case["ranef"][first.group]
    column = ref["terms"].index(first.column_names[0])
    expected = np.asarray(ref["values"])[:, column]
    order = [ref["levels"].index(level) for level in first.levels]
    got = np.asarray(modes[: first.n_levels * first.dim]).reshape(first.n_levels, first.dim)[:, 0]
    np.testing.assert_allclose(got, expected[order], rtol=1e-3, atol=1e-3 * np.max(np.abs(expected)) + 1e-12)
    expected_sd = np.asarray(ref["cond_sd"])[:, column][order]
    got_sd = np.sqrt(np.diag(cond_cov)[: first.n_levels * first.dim : first.dim])
    np.testing.assert_allclose(got_sd, expected_sd, rtol=1e-3, atol=1e-9)
