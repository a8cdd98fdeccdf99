"""The Schur complement's Cholesky parts (`schur_cholesky.py`) and their derivative rule equal
plain autodiff through `jnp.linalg.cholesky`: values, gradients, Hessians; a crossed model
that uses the rule equals the dense evaluator; and BFGS fits (large models' optimiser)
equal exact-Newton fits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lmm_jax
from lmm_jax.blocked import blocked_profile, cross_products, rest_size
from lmm_jax.dense import dense_profile
from lmm_jax.arrays import bounded_mask, canonical_theta
from lmm_jax.model import _quasi_newton_start, deviance_function, fit_arrays, minimize_with_boundary, optimizer_hessian
from lmm_jax.schur_cholesky import MIN_REST_SIZE, schur_cholesky_parts
from lmm_jax.start_search import VALUE_HESSIAN_MAX_THETA, quasi_newton_start
from test_sparse_schur import FORMULA, crossed_frame

Q2, T = 9, 3


def plain_parts(schur, q2):
    factor = jnp.linalg.cholesky(schur)
    return jnp.sum(jnp.log(jnp.diag(factor)[:q2])), factor[q2:, q2:]


def schur_of(x):
    """A smooth map from 3 parameters to SPD (Q2 + T) matrices, like S(θ)."""
    rng = np.random.default_rng(7)
    a, b, c = (jnp.asarray(rng.normal(size=(Q2 + T, Q2 + T))) for _ in range(3))
    m = x[0] * a + jnp.sin(x[1]) * b + x[2] ** 2 * c
    return m @ m.T + (1.0 + x[0] ** 2) * jnp.eye(Q2 + T)


def summary(parts_function):
    """A scalar that reads every output: the criterion's own use of them and more."""
    def f(x):
        half_logdet, l_tt = parts_function(schur_of(x), Q2)
        return half_logdet + jnp.sum(jnp.log(jnp.diag(l_tt))) + l_tt[-1, -1] ** 2 + jnp.sum(l_tt * jnp.arange(T * T).reshape(T, T))
    return f


def test_values_equal_the_plain_factor():
    s = schur_of(jnp.array([0.3, -1.1, 0.8]))
    for mine, plain in zip(schur_cholesky_parts(s, Q2), plain_parts(s, Q2)):
        np.testing.assert_allclose(mine, plain, rtol=1e-13)


def test_gradient_and_hessian_equal_autodiff_through_the_factor():
    x = jnp.array([0.3, -1.1, 0.8])
    mine, plain = summary(schur_cholesky_parts), summary(plain_parts)
    np.testing.assert_allclose(jax.jit(jax.grad(mine))(x), jax.jit(jax.grad(plain))(x), rtol=1e-10)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(jax.grad(mine)))(x), jax.jit(jax.hessian(plain))(x), rtol=1e-9)
    # forward mode (jvp) too, and the whole output pytree
    tangent = jnp.array([0.2, 0.5, -1.0])
    _, mine_dot = jax.jit(lambda y: jax.jvp(lambda z: schur_cholesky_parts(schur_of(z), Q2), (y,), (tangent,)))(x)
    _, plain_dot = jax.jit(lambda y: jax.jvp(lambda z: plain_parts(schur_of(z), Q2), (y,), (tangent,)))(x)
    for a, b in zip(mine_dot, plain_dot):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def large_model():
    """An InstEval in miniature big enough for BFGS (r ≥ QUASI_NEWTON_MIN_REST); no fit."""
    data = crossed_frame(seed=4, students=300, teachers=130, per_student=4)
    return lmm_jax.Model.from_formula(FORMULA, data)


@pytest.fixture(scope="module")
def medium_model():
    """Big enough for the derivative rule (q₂ = 70 x 2 + 7 ≥ MIN_REST_SIZE), small enough to
    fit quickly."""
    data = crossed_frame(seed=4, students=150, teachers=70, per_student=4)
    return lmm_jax.Model.from_formula(FORMULA, data, weights=np.linspace(0.5, 2.0, len(data)))


def test_large_models_use_bfgs():
    model = large_model()
    assert optimizer_hessian(model.arrays, model.shape) == "bfgs"
    assert optimizer_hessian(model.arrays, model.shape, "dense") == "exact"
    sleep = lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)", lmm_jax.datasets.load("sleepstudy"))
    assert optimizer_hessian(sleep.arrays, sleep.shape) == "exact"


def test_profile_and_gradient_through_the_rule_equal_the_dense_evaluator(medium_model):
    assert rest_size(medium_model.shape) >= MIN_REST_SIZE
    theta = jnp.asarray(medium_model.shape.initial_theta()) * 0.6
    cp = cross_products(medium_model.arrays, medium_model.shape)
    for a, b in zip(jax.jit(lambda t: blocked_profile(t, cp, medium_model.shape))(theta),
                    jax.jit(dense_profile, static_argnums=2)(theta, medium_model.arrays, medium_model.shape)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    blocked = deviance_function(medium_model.arrays, medium_model.shape)
    dense = deviance_function(medium_model.arrays, medium_model.shape, "dense")
    np.testing.assert_allclose(jax.jit(jax.grad(blocked))(theta), jax.jit(jax.grad(dense))(theta), rtol=1e-8, atol=1e-8)


BFGS_FORMULAS = {  # θ of 3 and 5 entries: the value-difference start; of 7: gradient probes
    "scalar terms": "y ~ x + (1 | student) + (1 | teacher) + (1 | room)",
    "vector term": FORMULA,
    "two vector terms": "y ~ x + (1 | student) + (1 + x | teacher) + (1 + x | room)",
}


def no_room_effect(model):
    """The medium model's design with a response whose room variance is 0: a singular fit."""
    data = crossed_frame(seed=4, students=150, teachers=70, per_student=4)
    rng = np.random.default_rng(11)
    student, teacher = (data[c].astype(int).to_numpy() for c in ("student", "teacher"))
    y = (1 + 0.5 * data["x"].to_numpy() + 0.6 * rng.normal(size=150)[student]
         + rng.normal(size=70)[teacher] + rng.normal(size=len(data)))
    return model.with_arrays(y=y)


@functools.lru_cache(maxsize=None)
def bfgs_model(terms: str):
    """The medium model's data (and weights) with one of `BFGS_FORMULAS`."""
    data = crossed_frame(seed=4, students=150, teachers=70, per_student=4)
    return lmm_jax.Model.from_formula(BFGS_FORMULAS[terms], data, weights=np.linspace(0.5, 2.0, len(data)))


@pytest.mark.parametrize("start", ["searched", "moments"])
@pytest.mark.parametrize("terms", list(BFGS_FORMULAS))
@pytest.mark.parametrize("response", ["simulated", "no room effect"])
def test_bfgs_fit_equals_the_exact_newton_fit(response, terms, start):
    """The default fit (exact Newton, Hessians through the rule) and a BFGS fit from the
    searched start, or from the moment start (`moment_start.py`, no search: a large model's
    default), reach the same optimum, also when it is singular (the boundary retry): with θ
    of 3 or 5 entries BFGS starts at the log-scale Newton point of the start's value
    differences (the retry from the first minimum's H), with 7 from gradient differences at
    the start."""
    model = bfgs_model(terms)
    arrays, shape = model.arrays, model.shape
    if response == "no room effect":
        arrays = no_room_effect(model)
    exact = fit_arrays(arrays, shape, model.initial_theta())

    @jax.jit
    def bfgs_fit(arrays, theta0):
        deviance = deviance_function(arrays, shape)
        x0, start_hessian = (quasi_newton_start(deviance, theta0, shape, bounded_mask(shape)) if start == "searched"
                             else _quasi_newton_start(deviance, arrays, shape, theta0, bounded_mask(shape)))
        assert (start_hessian is None) == (shape.n_theta > VALUE_HESSIAN_MAX_THETA)
        return minimize_with_boundary(deviance, x0, bounded_mask(shape), lambda t: canonical_theta(t, shape),
                                      200, hessian="bfgs", start_hessian=start_hessian)

    theta, best, _, singular = bfgs_fit(arrays, model.initial_theta())
    assert int(exact.status) <= 1 and int(best.status) <= 1
    # the data have no room slope: the 7-parameter fit is singular with either response
    assert bool(singular) == bool(exact.singular) == (response == "no room effect" or terms == "two vector terms")
    np.testing.assert_allclose(best.fun, exact.objective, rtol=1e-12)
    np.testing.assert_allclose(theta, exact.theta, rtol=1e-5, atol=1e-6)
