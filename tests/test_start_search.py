"""The quasi-Newton start (`start_search.py`): halvings per term, then the log-scale parabola, and
the start Hessian from value differences."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmm_jax.start_search import (MAX_HALVINGS, VALUE_HESSIAN_MAX_THETA, VALUE_HESSIAN_STEP, hessian_probe_pattern,
                                  hessian_probe_steps, log_parabola_minimum, quasi_newton_start,
                                  term_scale_search, value_difference_model)


def fake_shape(sizes):
    """The two things the search reads of a `ModelShape`: θ's length and each term's slice."""
    starts = np.cumsum([0] + sizes)
    return SimpleNamespace(n_theta=int(starts[-1]),
                           theta_slices=lambda: [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])])


def test_log_parabola_minimum_is_exact_for_a_parabola():
    u = np.array([1.0, 0.0, -1.0])
    f_up, f_best, f_down = (u - 0.3) ** 2
    assert float(log_parabola_minimum(f_up, f_best, f_down)) == pytest.approx(0.3, abs=1e-15)
    assert float(log_parabola_minimum(2.0, 1.0, 0.5)) == 0.0  # not bracketed: no shift
    assert float(log_parabola_minimum(1.0, 1.0, 1.0)) == 0.0  # flat: no shift


def scale_of(x, block):
    """A term's scale: the root mean square of its θ block (1 at x0 = ones)."""
    return jnp.linalg.norm(x[block]) / np.sqrt(block.stop - block.start)


def test_search_reaches_the_minimum_of_a_quadratic_in_log_scale():
    """Each term's criterion a parabola in log₂ of its scale: where the halvings bracket the
    minimum the refined start is exact; a term whose first halving rises stays at x0, one
    still falling after `MAX_HALVINGS` halvings stays at 2⁻⁶ x0."""
    shape = fake_shape([1, 3, 1, 1])
    blocks = shape.theta_slices()
    targets = np.array([0.3, 0.2, 0.8, 0.001])  # term 1: the scale of a 3-parameter block

    def deviance(x):
        logs = jnp.stack([jnp.log2(scale_of(x, b)) for b in blocks])
        return jnp.sum((logs - np.log2(targets)) ** 2)

    x0 = jnp.ones(6)
    start = np.asarray(jax.jit(lambda x: term_scale_search(deviance, x, shape))(x0))
    expected_scales = [0.3, 0.2, 1.0, 2.0 ** -MAX_HALVINGS]
    np.testing.assert_allclose([float(scale_of(start, b)) for b in blocks], expected_scales, rtol=1e-12)
    np.testing.assert_allclose(start[1:4], start[1], rtol=1e-15)  # a block scales as a whole


def test_search_keeps_the_halved_point_when_the_parabola_misleads():
    """A convex criterion with a kink at its minimum θ = 1/2: the parabola's least point is
    worse there than the bracketing value, so the start stays at 1/2."""
    def deviance(x):
        u = jnp.log2(x[0]) + 1.0
        return 1.0 + jnp.where(u >= 0, 9.0, 4.0) * u ** 2

    start = jax.jit(lambda x: term_scale_search(deviance, x, fake_shape([1])))(jnp.ones(1))
    assert float(start[0]) == 0.5


def test_start_model_from_values_is_exact_on_a_quadratic():
    """For θ of 3 entries the search also returns f, g and H from value differences at its
    start: on a quadratic (no third derivatives) they are the true ones up to rounding, and
    the start is the plain search's. For θ of more than `VALUE_HESSIAN_MAX_THETA` entries,
    or in float32: no model."""
    a = np.array([[4.0, 0.6, -0.3], [0.6, 2.0, 0.2], [-0.3, 0.2, 1.0]])
    centre = np.array([0.3, 0.2, 0.05])

    def deviance(x):
        return 0.5 * (x - centre) @ jnp.asarray(a) @ (x - centre) + 7.0

    shape = fake_shape([1, 1, 1])
    start, model = jax.jit(lambda x: quasi_newton_start(deviance, x, shape))(jnp.ones(3))
    assert np.array_equal(start, jax.jit(lambda x: term_scale_search(deviance, x, shape))(jnp.ones(3)))
    assert float(model.value) == float(deviance(start))
    np.testing.assert_allclose(model.grad, a @ (np.asarray(start) - centre), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model.hess, a, rtol=1e-7, atol=1e-7)
    big = fake_shape([1] * (VALUE_HESSIAN_MAX_THETA + 1))
    assert quasi_newton_start(lambda x: jnp.sum(x ** 2), jnp.ones(big.n_theta), big)[1] is None
    assert quasi_newton_start(lambda x: jnp.sum(x ** 2), jnp.ones(3, jnp.float32), shape)[1] is None


def test_value_difference_model_matches_autodiff_on_a_smooth_criterion():
    """Away from a quadratic the central differences (g, H's diagonal) are accurate to
    O(h²), the forward differences off the diagonal to O(h) (h = `VALUE_HESSIAN_STEP` |x|;
    here 7e-7 and 1e-3 relative): a criterion whose third derivatives are of the order of
    its second."""
    def deviance(x):
        return jnp.sum(jnp.log(x) ** 2) + jnp.log(x[0]) * jnp.log(x[1]) + 0.5 * x[2] * x[0]

    x = jnp.array([0.3, 0.7, 0.1])
    steps = hessian_probe_steps(x)
    values = jnp.stack([deviance(x + row * steps) for row in hessian_probe_pattern(3)])
    model = value_difference_model(deviance(x), values, steps)
    np.testing.assert_allclose(model.grad, jax.grad(deviance)(x), rtol=10 * VALUE_HESSIAN_STEP ** 2)
    hess, exact = model.hess, jax.hessian(deviance)(x)
    np.testing.assert_allclose(np.diag(hess), np.diag(exact), rtol=10 * VALUE_HESSIAN_STEP ** 2)
    np.testing.assert_allclose(hess, exact, rtol=2 * VALUE_HESSIAN_STEP, atol=1e-6)  # rounding: ~4ε|f|/(h_i h_j)
