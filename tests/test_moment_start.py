"""The moment start of a large model's BFGS fit (`moment_start.py`): the MINQUE(0) estimates
from the blocked cross products equal the same estimates from explicit sparse Z matrices, θ
is their relative SDs on Λ's diagonal, and the fit uses it only from lme4's default θ₀."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import lmm_jax
from lmm_jax import moment_start
from lmm_jax.arrays import bounded_mask
from lmm_jax.blocked import cross_products
from lmm_jax.conditioning import conditioned
from lmm_jax.model import _quasi_newton_start, deviance_function, optimizer_hessian
from lmm_jax.start_search import quasi_newton_start
from test_sparse_schur import crossed_frame


def minque0_reference(design, known_scale: bool = False):
    """MINQUE(0) written directly: Z_g as sparse matrices, K_gh = ||Z_g'WZ_h - F_g A F_h'||²
    with the level-by-level matrix formed densely, c_g, Q_g and e'We as in the module's
    docstring; solved for (σ_g², σ²), or σ_g² with σ² = 1 known."""
    y, X, w = design.y, design.X, design.weights
    n, p = X.shape
    zs = [sp.csc_matrix((t.values[:, j], (np.arange(n), t.codes)), shape=(n, t.n_levels))
          for t in design.terms for j in range(t.values.shape[1])]
    W = sp.diags(w)
    A = np.linalg.inv(X.T @ (w[:, None] * X))
    F = [np.asarray(z.T @ W @ X) for z in zs]
    e = y - X @ (A @ (X.T @ (w * y)))
    K = np.array([[np.sum(((zg.T @ W @ zh).toarray() - fg @ A @ fh.T) ** 2) for zh, fh in zip(zs, F)]
                  for zg, fg in zip(zs, F)])
    c = np.array([(z.T @ W @ z).diagonal().sum() - np.trace(A @ f.T @ f) for z, f in zip(zs, F)])
    Q = np.array([np.sum((z.T @ (w * e)) ** 2) for z in zs])
    if known_scale:
        return np.linalg.solve(K, Q - c), 1.0
    system = np.block([[K, c[:, None]], [c[None, :], np.array([[n - p]])]])
    solution = np.linalg.solve(system, np.append(Q, e @ (w * e)))
    return solution[:-1], solution[-1]


def small_frame():
    """Few levels: the blocked evaluator's dense Z₁'WR (no pair lists)."""
    return crossed_frame(seed=0, students=40, teachers=12, per_student=4)


def large_frame():
    """An InstEval in miniature: pair lists, and big enough for BFGS."""
    return crossed_frame(seed=4, students=300, teachers=130, per_student=4)


CASES = {
    "dense, one term": (small_frame, "y ~ x + (1 + x | student)", {}),
    "dense, scalar terms": (small_frame, "y ~ x + (1 | student) + (1 | teacher)", {}),
    "dense, vector terms": (small_frame, "y ~ x + (1 + x | student) + (1 | teacher) + (1 + x | room)", {}),
    "pairs, scalar terms": (large_frame, "y ~ x + (1 | student) + (1 | teacher) + (1 | room)", {}),
    "pairs, vector terms": (large_frame, "y ~ x + (1 | student) + (1 + x | teacher) + (1 | room)", {}),
    "pairs, weights": (large_frame, "y ~ x + (1 | student) + (1 | teacher)", dict(weights=True)),
    "pairs, known scale": (large_frame, "y ~ x + (1 | student) + (1 | teacher)", dict(weights=True, known_scale=True)),
}


def case_model(name: str) -> lmm_jax.Model:
    frame, formula, options = CASES[name]
    data = frame()
    weights = np.linspace(0.5, 2.0, len(data)) if options.get("weights") else None
    return lmm_jax.Model.from_formula(formula, data, weights=weights, known_scale=options.get("known_scale", False))


def estimates(model: lmm_jax.Model):
    arrays, shape = model.arrays, model.shape
    return jax.jit(lambda a: moment_start.component_variances(cross_products(a, shape), a, shape,
                                                              a.X.shape[0]))(arrays)


@pytest.mark.parametrize("name", list(CASES))
def test_estimates_equal_those_from_explicit_z(name):
    model = case_model(name)
    assert (model.host_arrays.schur_pairs is None) == name.startswith("dense")
    variances, scale = estimates(model)
    expected_variances, expected_scale = minque0_reference(model.design, model.shape.known_scale)
    np.testing.assert_allclose(variances, expected_variances, rtol=1e-10)
    assert float(scale) == pytest.approx(expected_scale, rel=1e-12)


def test_start_is_each_relative_sd_on_the_factors_diagonal():
    """θ_g = σ_g/σ at Λ_k's diagonal entries, 0 off the diagonal, and `MIN_RELATIVE_SD` where
    the estimate is below it (here the student slopes', negative)."""
    model = case_model("dense, vector terms")
    variances, scale = (np.asarray(a) for a in estimates(model))
    shape = model.shape
    theta = np.asarray(jax.jit(lambda a: moment_start.moment_start(cross_products(a, shape), a, shape,
                                                                   a.X.shape[0]))(model.arrays))
    diagonal = np.array([True, False, True, True, True, False, True])  # (1 + x | ·), (1 | ·), (1 + x | ·)
    assert np.all(theta[~diagonal] == 0.0)
    assert variances.min() < 0
    expected = np.sqrt(np.maximum(variances / scale, moment_start.MIN_RELATIVE_SD ** 2))
    np.testing.assert_allclose(theta[diagonal], expected, rtol=1e-14)


def test_defined_for_lme4s_structure_only():
    data = small_frame()
    assert moment_start.applies(lmm_jax.Model.from_formula("y ~ x + (1 + x | student)", data).shape)
    assert not moment_start.applies(lmm_jax.Model.from_formula("y ~ x + diag(1 + x | student)", data).shape)


def bfgs_starts(model, theta0):
    """(the fit's start and H: `model._quasi_newton_start`; the search's from θ₀; the value-
    difference start at the moment estimate, no search)."""
    shape, bounded = model.shape, bounded_mask(model.shape)

    @jax.jit
    def starts(arrays, theta0):
        deviance = deviance_function(arrays, shape)
        data = conditioned(arrays)[0]  # the fit's moments are those of the conditioned arrays
        moments = moment_start.moment_start(cross_products(data, shape), data, shape, arrays.X.shape[0])
        return (_quasi_newton_start(deviance, arrays, shape, theta0, bounded),
                quasi_newton_start(deviance, theta0, shape, bounded),
                quasi_newton_start(deviance, moments, shape, bounded, search=False))

    return starts(model.arrays, jnp.asarray(theta0))


BFGS_FORMULA = "y ~ x + (1 | student) + (1 + x | teacher) + (1 | room)"  # r ≥ QUASI_NEWTON_MIN_REST


def test_the_fit_starts_from_the_moments_only_from_the_default_theta0():
    model = lmm_jax.Model.from_formula(BFGS_FORMULA, large_frame())
    assert optimizer_hessian(model.arrays, model.shape) == "bfgs"
    default = model.shape.initial_theta()
    fit_start, searched, from_moments = bfgs_starts(model, default)
    for a, b in zip(fit_start, from_moments):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(searched[0], from_moments[0], rtol=1e-3)
    fit_start, searched, _ = bfgs_starts(model, 0.5 * default)
    for a, b in zip(fit_start, searched):
        np.testing.assert_array_equal(a, b)


def test_a_singular_moment_system_falls_back_to_the_search():
    """Two terms on one grouping factor: K is singular, the estimates NaN, and the fit's start
    is the search's from θ₀."""
    data = large_frame()
    data["teacher_copy"] = data["teacher"]
    model = lmm_jax.Model.from_formula("y ~ x + (1 | student) + (1 + x | teacher) + (1 | teacher_copy)", data)
    assert np.all(np.isnan(np.asarray(estimates(model)[0])))
    fit_start, searched, _ = bfgs_starts(model, model.shape.initial_theta())
    for a, b in zip(fit_start, searched):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_insteval_estimates_equal_those_from_explicit_z():
    data = lmm_jax.datasets.load("insteval")
    model = lmm_jax.Model.from_formula("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", data)
    variances, scale = estimates(model)
    expected_variances, expected_scale = minque0_reference(model.design)
    np.testing.assert_allclose(variances, expected_variances, rtol=1e-10)
    assert float(scale) == pytest.approx(expected_scale, rel=1e-12)
