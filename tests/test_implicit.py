"""Derivatives of fits w.r.t. y, X and the weights (implicit function theorem, `implicit.py`)
against central finite differences of full refits, along random directions; jit and vmap."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.implicit import conditional_modes, estimates_at_optimum


def _estimates_function(model):
    """(y, X, weights) -> θ̂, β̂, σ̂² and the BLUPs in one vector, and its jitted jvp.

    The refits run eagerly: `fit_params` reuses its compiled fit, one compilation per model.
    """
    def estimates(y, X, weights):
        params = model.fit_params(y, X, weights)
        return _concatenated(model.with_arrays(y, X, weights), model.shape, params)

    def at_this_fit(fit, y, X, weights):
        arrays = model.with_arrays(y, X, weights)
        return _concatenated(arrays, model.shape, estimates_at_optimum(arrays, model.shape, fit))

    fit = model.fit_params()  # differentiate at the fit of the model's own data
    jvp = jax.jit(lambda primals, tangents: jax.jvp(partial(at_this_fit, fit), primals, tangents))
    return estimates, jvp


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
    plus = estimates(*(b + step * t for b, t in zip(base, tangents)))
    minus = estimates(*(b - step * t for b, t in zip(base, tangents)))
    numeric = (plus - minus) / (2 * step)
    floor = 1e-5 * (1.0 + float(jnp.max(jnp.abs(numeric))))
    np.testing.assert_allclose(exact, numeric, rtol=1e-5, atol=floor, err_msg=f"d/d{argument}")


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


@pytest.fixture(scope="module")
def crossed_model():
    rng = np.random.default_rng(11)
    n = 120
    a, b = rng.integers(0, 10, n), rng.integers(0, 8, n)
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + rng.normal(size=10)[a] * 0.8 + rng.normal(size=8)[b] * 0.6 + rng.normal(size=n)
    data = pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})
    return lmm_jax.Model.from_formula("y ~ x + (1 | a) + (1 | b)", data, "REML")


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

    @jax.jit
    def tangent_along(y):  # the whole differentiable fit, optimiser included
        return jax.jvp(lambda v: _concatenated(model.with_arrays(v), model.shape, model.fit_params(v)),
                       (y,), (direction,))

    looped = [tangent_along(v) for v in ys]
    batched = jax.jit(jax.vmap(tangent_along))(ys)
    for i, (value, tangent) in enumerate(looped):
        np.testing.assert_allclose(batched[0][i], value, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(batched[1][i], tangent, rtol=1e-6, atol=1e-10)

    gradient = jax.jit(jax.grad(lambda v: model.fit_params(v).sigma2))
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
    np.testing.assert_allclose(influence["dtheta_dy"].to_numpy().T @ direction, tangent[:k], rtol=1e-8)
    np.testing.assert_allclose(influence["dbeta_dy"].to_numpy().T @ direction, tangent[k:k + p],
                               rtol=1e-8)
    data = lmm_jax.datasets.load("sleepstudy")
    subject = influence["group_deletion"].index[0]
    refit = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)",
                                       data[data.Subject.astype(str) != subject]).fit()
    np.testing.assert_allclose(influence["group_deletion"].iloc[0], refit.fixef - result.fixef,
                               rtol=1e-6, atol=1e-8)
