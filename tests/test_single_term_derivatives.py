"""The closed-form gradient and Hessian of one-term models (`single_term_derivatives.py`)
equal autodiff of the criterion, through the blocked and the dense evaluators; fits using
them equal fits by autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax import model as model_module
from lmm_jax import single_term_derivatives
from lmm_jax.model import criterion, deviance_function, fit_arrays
from lmm_jax.newton import value_grad_hess

FORMULAS = {
    "intercept": "y ~ x + (1 | g)",
    "slope": "y ~ x + f + (1 + x | g)",
    "three_effects": "y ~ x + (1 + x + z | g)",
    "diagonal": "y ~ x + diag(1 + x + z | g)",
    "ar1": "y ~ x + ar1(0 + f | g)",
    "compound_symmetry": "y ~ 1 + cs(0 + f | g)",
}


def random_frame(seed: int, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 15, size=n)
    return pd.DataFrame({
        "y": rng.normal(size=n) * 2 + rng.normal(size=15)[g] + 5,
        "x": rng.normal(size=n),
        "z": rng.uniform(size=n),
        "f": rng.choice(["a", "b", "c"], size=n),
        "g": g.astype(str),
    })


def closed_form(model):
    return single_term_derivatives.value_grad_hess_function(
        model.arrays, model.shape, lambda profiled: criterion(profiled, model.arrays, model.shape))


def assert_same_derivatives(got, expected):
    value, grad, hess = (np.asarray(a) for a in got)
    want_value, want_grad, want_hess = (np.asarray(a) for a in expected)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-9 * np.max(np.abs(want_grad)))
    np.testing.assert_allclose(hess, want_hess, rtol=1e-8, atol=1e-9 * np.max(np.abs(want_hess)))
    np.testing.assert_allclose(hess, hess.T, rtol=0, atol=1e-12 * np.max(np.abs(hess)))


SLOW = pytest.mark.slow  # same code path as a fast case; kept for `pytest -m slow`
CASES = [("intercept", "REML"), ("slope", "REML"), ("three_effects", "REML"), ("ar1", "ML"),
         pytest.param("diagonal", "REML", marks=SLOW), pytest.param("compound_symmetry", "REML", marks=SLOW),
         pytest.param("slope", "ML", marks=SLOW)]


@pytest.mark.parametrize(("name", "method"), CASES)
def test_equals_autodiff(name, method):
    rng = np.random.default_rng(len(name))
    weights = rng.uniform(0.5, 2.0, size=120)
    model = lmm_jax.Model.from_formula(FORMULAS[name], random_frame(1), method, weights=weights)
    assert single_term_derivatives.applies(model.arrays, model.shape)
    evaluate = jax.jit(closed_form(model))
    blocked = jax.jit(value_grad_hess(deviance_function(model.arrays, model.shape, "blocked")))
    for _ in range(3):
        theta = jnp.asarray(rng.normal(size=model.shape.n_theta))
        assert_same_derivatives(evaluate(theta), blocked(theta))


def test_equals_autodiff_of_the_dense_evaluator():
    """Against the textbook formula's derivatives too (not only the blocked factor's)."""
    rng = np.random.default_rng(11)
    model = lmm_jax.Model.from_formula(FORMULAS["slope"], random_frame(2), weights=rng.uniform(0.5, 2.0, 120))
    dense = jax.jit(value_grad_hess(deviance_function(model.arrays, model.shape, "dense")))
    theta = jnp.asarray([0.7, -0.3, 0.4])
    assert_same_derivatives(jax.jit(closed_form(model))(theta), dense(theta))


def test_singular_covariance_at_the_boundary():
    """θ with zero factor entries (G singular, as at a singular fit's boundary retry): the
    formulas never invert G."""
    model = lmm_jax.Model.from_formula(FORMULAS["three_effects"], random_frame(2))
    evaluate = jax.jit(closed_form(model))
    blocked = jax.jit(value_grad_hess(deviance_function(model.arrays, model.shape)))
    for theta in ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.8, 0.0, 0.0, 0.0, 0.0, 0.3], [0.0, 0.2, 0.1, 0.5, 0.0, 0.0]):
        assert_same_derivatives(evaluate(jnp.asarray(theta)), blocked(jnp.asarray(theta)))


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_known_scale_one_level_per_row(method):
    """The Fay-Herriot form: σ² = 1 known, weights 1/D, one area per row."""
    rng = np.random.default_rng(5)
    n = 40
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "area": np.arange(n)})
    variances = rng.uniform(0.2, 2.0, size=n)
    model = lmm_jax.Model.from_formula("y ~ x + (1 | area)", data, method, weights=1.0 / variances,
                                       known_scale=True)
    evaluate = jax.jit(closed_form(model))
    blocked = jax.jit(value_grad_hess(deviance_function(model.arrays, model.shape)))
    for theta in (0.3, 1.0, 2.5):
        assert_same_derivatives(evaluate(jnp.asarray([theta])), blocked(jnp.asarray([theta])))


def test_used_only_for_one_small_term():
    data = random_frame(3)
    data["h"] = np.arange(len(data)) % 7
    two_terms = lmm_jax.Model.from_formula("y ~ x + (1 | g) + (1 | h)", data)
    assert not single_term_derivatives.applies(two_terms.arrays, two_terms.shape)
    assert model_module.closed_form_derivatives(two_terms.arrays, two_terms.shape) is None
    wide = lmm_jax.Model.from_formula("y ~ 1 + (1 + x + z + I(x * z) + I(x ** 2) | g)", data)
    assert wide.shape.dims == (5,)
    assert not single_term_derivatives.applies(wide.arrays, wide.shape)
    one = lmm_jax.Model.from_formula(FORMULAS["slope"], data)
    assert model_module.closed_form_derivatives(one.arrays, one.shape, "dense") is None
    assert model_module.closed_form_derivatives(one.arrays, one.shape) is not None


@pytest.mark.parametrize("name", [pytest.param("slope", marks=SLOW), "three_effects"])
def test_fit_equals_fit_by_autodiff(name, monkeypatch):
    """The same optimiser with either derivative gives the same estimates; both fits are
    singular (the data have no random slopes), so the boundary retry is compared too."""
    model = lmm_jax.Model.from_formula(FORMULAS[name], random_frame(4))
    closed = fit_arrays(model.arrays, model.shape, model.initial_theta())
    monkeypatch.setattr(model_module, "closed_form_derivatives", lambda *args, **kwargs: None)
    fit_arrays.clear_cache()
    try:
        autodiff = fit_arrays(model.arrays, model.shape, model.initial_theta())
    finally:
        fit_arrays.clear_cache()
    assert int(closed.status) <= 1 and int(autodiff.status) <= 1
    np.testing.assert_allclose(closed.objective, autodiff.objective, rtol=1e-12)
    np.testing.assert_allclose(closed.theta, autodiff.theta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(closed.beta, autodiff.beta, rtol=1e-7, atol=1e-9)
    assert bool(closed.singular) and bool(autodiff.singular)
