"""The quadratic model from criterion values and its log-scale Newton step (`value_differences.py`)."""

import jax
import jax.numpy as jnp
import numpy as np

from lmm_jax.value_differences import (MAX_LOG_STEP, STEP, QuadraticModel, log_scale_newton, probe_pattern,
                                       probe_steps, value_difference_model)


def model_of(deviance, x):
    steps = probe_steps(x)
    values = jnp.stack([deviance(x + row * steps) for row in probe_pattern(x.size)])
    return value_difference_model(deviance(x), values, steps)


def test_model_is_exact_on_a_quadratic():
    """No third derivatives: f₀, g and H are the true ones up to rounding."""
    a = np.array([[4.0, 0.6, -0.3], [0.6, 2.0, 0.2], [-0.3, 0.2, 1.0]])
    centre = np.array([0.3, 0.2, 0.05])

    def deviance(x):
        return 0.5 * (x - centre) @ jnp.asarray(a) @ (x - centre) + 7.0

    x = jnp.array([0.25, 0.5, 0.125])
    model = model_of(deviance, x)
    assert float(model.value) == float(deviance(x))
    np.testing.assert_allclose(model.grad, a @ (np.asarray(x) - centre), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.hess, a, rtol=1e-7, atol=1e-7)


def test_model_matches_autodiff_on_a_smooth_criterion():
    """Away from a quadratic the central differences (g, H's diagonal) are accurate to
    O(h²), the forward differences off the diagonal to O(h) (h = `STEP` |x|; here 7e-7 and
    1e-3 relative): a criterion whose third derivatives are of the order of its second."""
    def deviance(x):
        return jnp.sum(jnp.log(x) ** 2) + jnp.log(x[0]) * jnp.log(x[1]) + 0.5 * x[2] * x[0]

    x = jnp.array([0.3, 0.7, 0.1])
    model = model_of(deviance, x)
    np.testing.assert_allclose(model.grad, jax.grad(deviance)(x), rtol=10 * STEP ** 2)
    hess, exact = model.hess, jax.hessian(deviance)(x)
    np.testing.assert_allclose(np.diag(hess), np.diag(exact), rtol=10 * STEP ** 2)
    np.testing.assert_allclose(hess, exact, rtol=2 * STEP, atol=1e-6)  # rounding: ~4ε|f|/(h_i h_j)


def exact_model(deviance, x):
    return QuadraticModel(deviance(x), jax.grad(deviance)(x), jax.hessian(deviance)(x))


def test_log_scale_newton_is_exact_for_a_quadratic_in_log_scale():
    """f quadratic in (log θ₀, log θ₁, θ₂) (θ₂ linear, as an off-diagonal entry of Λ): from
    the exact model the step lands on the minimum, and H¹ is the Hessian there."""
    a = jnp.array([[3.0, 0.5, 0.4], [0.5, 2.0, -0.3], [0.4, -0.3, 1.5]])
    best = jnp.array([np.log(0.3), np.log(0.6), -0.2])

    def deviance(x):
        u = jnp.stack([jnp.log(x[0]), jnp.log(x[1]), x[2]]) - best
        return 0.5 * u @ a @ u

    log_scale = np.array([True, True, False])
    x_new, hess = log_scale_newton(jnp.array([0.4, 0.5, 0.1]), exact_model(deviance, jnp.array([0.4, 0.5, 0.1])),
                                   log_scale)
    minimum = jnp.array([0.3, 0.6, -0.2])
    np.testing.assert_allclose(x_new, minimum, rtol=1e-12)
    np.testing.assert_allclose(hess, jax.hessian(deviance)(minimum), rtol=1e-10)


def test_log_scale_newton_steps_are_bounded():
    """A far minimum: each log-scale entry moves by at most a factor 2, a linear one by at
    most log 2; an entry at 0 stays linear; a model that is not finite leaves x as it is."""
    def deviance(x):
        return (jnp.log(x[0]) - np.log(1e-3)) ** 2 + (x[1] - 5.0) ** 2 + (x[2] - 4.0) ** 2

    x = jnp.array([0.5, 0.0, 1.0])
    x_new, _ = log_scale_newton(x, exact_model(deviance, x), np.array([True, True, False]))
    np.testing.assert_allclose(x_new, [0.25, MAX_LOG_STEP, 1.0 + MAX_LOG_STEP], rtol=1e-12)
    broken = QuadraticModel(jnp.nan, jnp.full(3, jnp.nan), jnp.full((3, 3), jnp.nan))
    assert np.array_equal(log_scale_newton(x, broken, np.ones(3, bool))[0], x)
