"""Derivatives of fits w.r.t. y, X and the weights (implicit function theorem, `implicit.py`)
against central finite differences of full refits, along random directions; jit and vmap."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.arrays import bounded_mask
from lmm_jax.blocked import blocked_profile, cross_products
from lmm_jax.exported_programs import HOST_COMPILER_OPTIONS
from lmm_jax.implicit import conditional_modes, estimates_at_optimum

from conftest import load_case


def _estimates_function(model):
    """(y, X, weights) -> θ̂, β̂, σ̂² and the BLUPs in one vector, and its jitted jvp.

    The refits run eagerly: `fit_params` reuses its compiled fit, one compilation per model.
    """
    def estimates(y, X, weights):
        params = model.fit_params(y, X, weights)
        return _concatenated(model.with_arrays(y, X, weights), model.shape, params)

    fit = model.fit_params()  # differentiate at the fit of the model's own data
    at_this_fit = partial(_estimates_at_fit, model, fit)
    jvp = jax.jit(lambda primals, tangents: jax.jvp(at_this_fit, primals, tangents))
    return estimates, jvp


def _estimates_at_fit(model, fit, y, X, weights):
    """θ̂, β̂, σ̂², BLUPs of a finished `fit` of (y, X, weights), differentiable (no refit)."""
    arrays = model.with_arrays(y, X, weights)
    return _concatenated(arrays, model.shape, estimates_at_optimum(arrays, model.shape, fit))


def _concatenated(arrays, shape, params):
    blups = conditional_modes(arrays, shape, params)
    return jnp.concatenate([params.theta, params.beta, params.sigma2[None], blups])


def _sparse_direction(rng, shape, n_entries, column=None):
    """A random direction touching `n_entries` entries (of one column for a matrix)."""
    direction = np.zeros(shape)
    rows = rng.choice(shape[0], n_entries, replace=False)
    index = (rows,) if column is None else (rows, column)
    direction[index] = rng.normal(size=n_entries)
    return jnp.asarray(direction)


def _check_directional(model, functions, argument, direction, step):
    """jvp along `direction` in `argument` == central differences of refits (1e-5 relative)."""
    estimates, jvp = functions
    names = ("y", "X", "weights")
    base = _base(model)
    which = names.index(argument)
    tangents = tuple(direction if i == which else jnp.zeros_like(b) for i, b in enumerate(base))
    _, exact = jvp(base, tangents)
    _assert_matches_refits(estimates, base, tangents, step, exact, f"d/d{argument}")


def _assert_matches_refits(estimates, base, tangents, step, exact, message):
    """`exact` == (estimates(base + step t) - estimates(base - step t)) / 2 step, 1e-5 relative."""
    plus = estimates(*(b + step * t for b, t in zip(base, tangents)))
    minus = estimates(*(b - step * t for b, t in zip(base, tangents)))
    numeric = (plus - minus) / (2 * step)
    floor = 1e-5 * (1.0 + float(jnp.max(jnp.abs(numeric))))
    np.testing.assert_allclose(exact, numeric, rtol=1e-5, atol=floor, err_msg=message)


def _base(model):
    return model.arrays.y, model.arrays.X, model.arrays.weights


def _check_all(model, functions, x_column, seed):
    rng = np.random.default_rng(seed)
    n = model.arrays.y.shape[0]
    y_scale = float(jnp.std(model.arrays.y))
    x_scale = float(jnp.std(model.arrays.X[:, x_column]))
    for _ in range(2):
        _check_directional(model, functions, "y", _sparse_direction(rng, (n,), 6), 1e-5 * y_scale)
    _check_directional(model, functions, "X",
                       _sparse_direction(rng, model.arrays.X.shape, 4, x_column), 1e-5 * x_scale)
    _check_directional(model, functions, "weights", _sparse_direction(rng, (n,), 4), 1e-5)


@pytest.fixture(scope="module")
def sleepstudy_model():
    data = lmm_jax.datasets.load("sleepstudy")
    return lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)", data, "REML")


@pytest.fixture(scope="module")
def sleepstudy_functions(sleepstudy_model):
    return _estimates_function(sleepstudy_model)


def _crossed_model(method, seed=11):
    """120 rows, two crossed random intercepts (10 and 8 levels, unbalanced cells)."""
    rng = np.random.default_rng(seed)
    n = 120
    a, b = rng.integers(0, 10, n), rng.integers(0, 8, n)
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + rng.normal(size=10)[a] * 0.8 + rng.normal(size=8)[b] * 0.6 + rng.normal(size=n)
    data = pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})
    return lmm_jax.Model.from_formula("y ~ x + (1 | a) + (1 | b)", data, method)


@pytest.fixture(scope="module")
def crossed_model():
    return _crossed_model("REML")


def test_sleepstudy_derivatives_match_refits(sleepstudy_model, sleepstudy_functions):
    estimates = sleepstudy_functions[0](*_base(sleepstudy_model))
    assert np.all(np.abs(np.asarray(estimates)[[0, 2]]) > 1e-2)  # an interior fit
    np.testing.assert_allclose(sleepstudy_model.blups(), estimates[-36:], rtol=1e-12)
    _check_all(sleepstudy_model, sleepstudy_functions, x_column=1, seed=0)


def test_crossed_derivatives_match_refits(crossed_model):
    functions = _estimates_function(crossed_model)
    assert np.all(np.abs(functions[0](*_base(crossed_model))[:2]) > 1e-2)  # an interior fit
    _check_all(crossed_model, functions, x_column=1, seed=1)


def test_jit_vmap_and_reverse_mode(sleepstudy_model):
    """vmap over 3 perturbed y equals a loop; reverse mode (grad σ̂²) . v == jvp."""
    model = sleepstudy_model
    rng = np.random.default_rng(3)
    y, X, weights = _base(model)
    ys = y + 5.0 * jnp.asarray(rng.normal(size=(3,) + y.shape))
    direction = jnp.asarray(rng.normal(size=y.shape))

    # three large programs: compiled with the package's faster-compiling host options (what
    # is checked is how jit, vmap and the derivative rules compose, not XLA's defaults)
    jit = partial(jax.jit, compiler_options=HOST_COMPILER_OPTIONS)

    def tangent_along(y):  # the whole differentiable fit, optimiser included
        return jax.jvp(lambda v: _concatenated(model.with_arrays(v), model.shape, model.fit_params(v)),
                       (y,), (direction,))

    single = jit(tangent_along)
    looped = [single(v) for v in ys]
    batched = jit(jax.vmap(tangent_along))(ys)
    for i, (value, tangent) in enumerate(looped):
        np.testing.assert_allclose(batched[0][i], value, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(batched[1][i], tangent, rtol=1e-6, atol=1e-10)

    gradient = jit(jax.grad(lambda v: model.fit_params(v).sigma2))
    sigma2_index = model.shape.n_theta + X.shape[1]
    np.testing.assert_allclose(gradient(ys[0]) @ direction, looped[0][1][sigma2_index], rtol=1e-8)


def test_boundary_entries_are_held_fixed():
    """A singular fit: the bounded θ entry at 0 has zero derivative, and refits agree."""
    rng = np.random.default_rng(5)
    n = 60
    g = np.arange(n) % 6
    x = rng.normal(size=n)
    noise = rng.normal(size=n)
    noise -= np.bincount(g, noise)[g] / 10  # equal group means: no between-group variation
    data = pd.DataFrame({"y": 2.0 + x + noise, "x": x, "g": [f"g{i}" for i in g]})
    model = lmm_jax.Model.from_formula("y ~ x + (1 | g)", data)
    assert bool(model.fit_params().singular) and float(model.fit_params().theta[0]) == 0.0
    functions = _estimates_function(model)
    direction = jnp.asarray(rng.normal(size=n))
    y, X, weights = _base(model)
    _, tangent = functions[1]((y, X, weights), (direction, jnp.zeros_like(X), jnp.zeros(n)))
    assert float(tangent[0]) == 0.0
    _check_directional(model, functions, "y", direction, 1e-5 * float(jnp.std(y)))


def test_influence(sleepstudy_model, sleepstudy_functions):
    """∂β̂/∂y, ∂θ̂/∂y agree with the jvp; leave-one-subject-out agrees with a refit (exactly
    here: sleepstudy is balanced, so GLS β̂ does not depend on θ and only the deletion is tested)."""
    model = sleepstudy_model
    result = model.fit()
    influence = result.influence()
    direction = jnp.asarray(np.random.default_rng(4).normal(size=model.arrays.y.shape))
    y, X, weights = _base(model)
    _, tangent = sleepstudy_functions[1]((y, X, weights), (direction, jnp.zeros_like(X),
                                                           jnp.zeros_like(weights)))
    k, p = model.shape.n_theta, X.shape[1]
    assert list(influence["dtheta_dy"].columns) == [  # lme4's names(getME(m, "theta")), as fit_batch's
        "Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    assert list(influence["dbeta_dy"].columns) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(influence["dtheta_dy"].to_numpy().T @ direction, tangent[:k], rtol=1e-8)
    np.testing.assert_allclose(influence["dbeta_dy"].to_numpy().T @ direction, tangent[k:k + p],
                               rtol=1e-8)
    data = lmm_jax.datasets.load("sleepstudy")
    subject = influence["group_deletion"].index[0]
    refit = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)",
                                       data[data.Subject.astype(str) != subject]).fit()
    np.testing.assert_allclose(influence["group_deletion"].iloc[0], refit.fixef - result.fixef,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("design", ["sleepstudy", "crossed"])
def test_ml_derivatives_match_refits(design):
    """The same checks for ML fits (σ̂² = r²/n, no log|X'V₀⁻¹X| term in the criterion)."""
    if design == "sleepstudy":
        model = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)",
                                           lmm_jax.datasets.load("sleepstudy"), "ML")
    else:
        model = _crossed_model("ML", seed=12)  # seed 11's ML fit is singular
    functions = _estimates_function(model)
    theta = functions[0](*_base(model))[:model.shape.n_theta]
    assert np.all(np.abs(np.asarray(theta)[np.asarray(bounded_mask(model.shape))]) > 1e-2)
    _check_all(model, functions, x_column=1, seed=7)


def test_dyestuff2_singular_fit_derivatives():
    """dyestuff2 (lme4: singular, θ̂ = 0): ∂θ̂ = 0 exactly, β̂ and σ̂² are those of OLS and
    their derivatives (and the BLUPs', all 0) match refits, which stay on the boundary."""
    case = load_case("dyestuff2_reml")
    model = lmm_jax.Model.from_formula(case["formula"], lmm_jax.datasets.load("dyestuff2"))
    params = model.fit_params()
    assert bool(params.singular) and float(params.theta[0]) == 0.0
    np.testing.assert_allclose(params.beta, case["fixed"]["estimate"], rtol=1e-6)
    y, X, weights = _base(model)
    functions = _estimates_function(model)
    rng = np.random.default_rng(8)
    tangents = (jnp.asarray(rng.normal(size=y.shape)), jnp.asarray(rng.normal(size=X.shape)),
                _sparse_direction(rng, y.shape, 5))
    for i, name in enumerate(("y", "X", "weights")):
        _check_directional(model, functions, name, tangents[i], 1e-5)
        along = tuple(t if j == i else jnp.zeros_like(t) for j, t in enumerate(tangents))
        assert float(functions[1]((y, X, weights), along)[1][0]) == 0.0  # ∂θ̂ = 0


def test_jacobians_under_jit_and_vmap(sleepstudy_model, sleepstudy_functions):
    """jit(vmap(jacrev)) over the fits of 3 responses: full Jacobians of (θ̂, β̂, σ̂², b̂)
    w.r.t. y, X and weights; each, applied to a random direction in all three, matches refits.
    (The optimiser itself under vmap is covered by `test_jit_vmap_and_reverse_mode`.)"""
    model, estimates = sleepstudy_model, sleepstudy_functions[0]
    y, X, weights = _base(model)
    rng = np.random.default_rng(9)
    ys = jnp.stack([y] + [y + 5.0 * jnp.asarray(rng.normal(size=y.shape)) for _ in range(2)])
    fits = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[model.fit_params(v) for v in ys])
    jacobians = jax.jit(jax.vmap(jax.jacrev(partial(_estimates_at_fit, model), argnums=(1, 2, 3)),
                                 in_axes=(0, 0, None, None)))
    j_y, j_x, j_w = jacobians(fits, ys, X, weights)
    assert j_y.shape == (3, 42, 180) and j_x.shape == (3, 42, 180, 2) and j_w.shape == (3, 42, 180)
    for i in range(3):
        tangents = (jnp.asarray(rng.normal(size=y.shape)),
                    _sparse_direction(rng, X.shape, 4, 1), _sparse_direction(rng, y.shape, 4))
        exact = j_y[i] @ tangents[0] + jnp.einsum("knp,np->k", j_x[i], tangents[1]) + j_w[i] @ tangents[2]
        _assert_matches_refits(estimates, (ys[i], X, weights), tangents, 1e-5, exact, f"response {i}")


# Leave-one-subject-out changes in β̂ = ((Intercept), Days) from lme4 1.1-31 refits (REML) on
# the unbalanced subset of `_unbalanced_sleepstudy` (our own refits agree to 4e-4; lme4 warned
# of max|grad| 0.0027 on one refit).
LME4_DELETION = np.array([
    [0.5891602, -0.7195207], [3.4536754, 0.3583714], [1.8702896, 0.3986070],
    [-2.5106862, 0.4721312], [-2.1765116, 0.2913684], [-1.2900900, 0.1343265],
    [-1.3409457, 0.0590819], [0.8917308, -0.1372079], [-0.4569335, 0.7855296],
    [-2.0511410, -0.5624103], [1.9649059, -0.0146473], [1.0985217, -0.5005075],
    [-0.5342584, 0.2228894], [-2.5905774, -0.0332317], [0.0625699, -0.0911929],
    [2.9558932, -0.5545265], [0.9171062, -0.0982700], [-0.8838566, -0.0110017]])


def _unbalanced_sleepstudy():
    """sleepstudy with subjects k = 0, 1, 2, ... (sorted) keeping 10, 8, 6, 10, ... days,
    a different run of days each: 144 rows, unbalanced in group sizes and in X."""
    data = lmm_jax.datasets.load("sleepstudy")
    levels = sorted(data.Subject.astype(str).unique())
    k = data.Subject.astype(str).map({s: i for i, s in enumerate(levels)}).to_numpy()
    return data[(data.Days.to_numpy() + 3 * k) % 10 < np.array([10, 8, 6])[k % 3]]


@pytest.mark.slow  # a new model shape: compiles the fit, its summaries and influence() (~20 s)
def test_influence_group_deletion_on_unbalanced_design():
    """On an unbalanced design GLS β̂ depends on θ, so `group_deletion`'s first-order θ step
    matters. It is an approximation: against exact refits it is off by 5.5% of the size of
    the change (relative Frobenius norm; at most 0.05 SE per coefficient), while holding θ at
    θ̂ is off by 8.4% (0.06 SE) and 'no change' by 100%. 10% is asserted: a wrong sign
    or scale of the θ step, or a wrong deletion, would miss it."""
    model = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)", _unbalanced_sleepstudy())
    result = model.fit()
    approx = result.influence()["group_deletion"].to_numpy()

    @jax.jit
    def beta_theta_fixed(level):
        weights = jnp.where(model.arrays.codes[0] == level, 0.0, model.arrays.weights)
        data = dataclasses.replace(model.arrays, weights=weights)
        return blocked_profile(result.params.theta, cross_products(data, model.shape), model.shape).beta

    fixed = np.array([beta_theta_fixed(level) for level in range(18)]) - result.fixef.to_numpy()
    size = np.linalg.norm(LME4_DELETION)
    error, fixed_error = (np.linalg.norm(a - LME4_DELETION) / size for a in (approx, fixed))
    assert error < 0.1 and error < 0.8 * fixed_error, (error, fixed_error)
    assert np.max(np.abs(approx - LME4_DELETION) / result.se.to_numpy()) < 0.1


def test_fit_params_first_called_inside_jit():
    """A model whose first `fit_params` call is traced (inside `jax.jit`) fits the same
    outside afterwards: its cached θ₀ is a concrete array, not the trace's tracer."""
    data = lmm_jax.datasets.load("sleepstudy")
    model = lmm_jax.Model.from_formula("Reaction ~ Days + (1 | Subject)", data)
    traced = jax.jit(lambda y: model.fit_params(y).theta)(model.arrays.y)
    np.testing.assert_allclose(model.fit_params().theta, traced, rtol=1e-12)
