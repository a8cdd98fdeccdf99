"""The quasi-Newton start (`start_search.py`): halvings per term, then the log-scale parabola, and
for few parameters the value-difference model's Newton point."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmm_jax.start_search import (MAX_HALVINGS, VALUE_HESSIAN_MAX_THETA, log_parabola_minimum, quasi_newton_start,
                                  term_scale_search)
from lmm_jax.value_differences import STEP, log_scale_newton, probe_pattern, probe_steps, value_difference_model


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


def test_quasi_newton_start_lands_near_the_minimum_of_a_log_quadratic():
    """For θ of 3 entries the start is the log-scale Newton point of the value-difference
    model at the searched start: on a criterion quadratic in log θ it lands on the minimum
    (up to the differences' O(h) error; the search alone stops 5% away or more),
    with BFGS's H there close to the exact Hessian. For θ of more than
    `VALUE_HESSIAN_MAX_THETA` entries, or in float32: the searched start and no H."""
    a = np.array([[4.0, 0.6, -0.3], [0.6, 2.0, 0.2], [-0.3, 0.2, 1.0]])
    centre = np.array([0.3, 0.2, 0.05])

    def deviance(x):
        u = jnp.log(x) - np.log(centre)
        return 0.5 * u @ jnp.asarray(a) @ u + 7.0

    shape = fake_shape([1, 1, 1])
    positive = np.ones(3, bool)
    start, hess = jax.jit(lambda x: quasi_newton_start(deviance, x, shape, positive))(jnp.ones(3))
    searched = jax.jit(lambda x: term_scale_search(deviance, x, shape))(jnp.ones(3))
    assert np.max(np.abs(np.log(searched / centre))) > 0.05
    np.testing.assert_allclose(start, centre, rtol=1e-4)
    np.testing.assert_allclose(hess, jax.hessian(deviance)(jnp.asarray(centre)), rtol=2 * STEP)  # O(h) off the diagonal
    big = fake_shape([1] * (VALUE_HESSIAN_MAX_THETA + 1))
    ones = np.ones(big.n_theta, bool)
    start, hess = quasi_newton_start(deviance_of_sum, jnp.ones(big.n_theta), big, ones)
    assert hess is None and np.array_equal(start, term_scale_search(deviance_of_sum, jnp.ones(big.n_theta), big))
    assert quasi_newton_start(deviance_of_sum, jnp.ones(3, jnp.float32), shape, positive)[1] is None


def deviance_of_sum(x):
    return jnp.sum((x - 0.3) ** 2)


def test_without_the_search_the_start_is_x0s_value_difference_newton_point():
    """`search=False` (a moment start, `moment_start.py`): no halvings, x0 itself is the
    searched start; for few parameters the start is the Newton point of x0's value
    differences (traced flag: one program serves both)."""
    a = np.array([[4.0, 0.6, -0.3], [0.6, 2.0, 0.2], [-0.3, 0.2, 1.0]])
    centre = np.array([0.3, 0.2, 0.05])

    def deviance(x):
        u = jnp.log(x) - np.log(centre)
        return 0.5 * u @ jnp.asarray(a) @ u + 7.0

    shape, positive = fake_shape([1, 1, 1]), np.ones(3, bool)
    x0 = jnp.array([0.25, 0.25, 0.1])
    starts = jax.jit(lambda x, search: quasi_newton_start(deviance, x, shape, positive, search))
    unsearched, hess = starts(x0, False)
    pattern = probe_pattern(3)
    values = jnp.stack([deviance(x0 + row * probe_steps(x0)) for row in pattern])
    expected, expected_hess = log_scale_newton(x0, value_difference_model(deviance(x0), values, probe_steps(x0)),
                                               positive)
    np.testing.assert_allclose(unsearched, expected, rtol=1e-12)
    np.testing.assert_allclose(hess, expected_hess, rtol=1e-10)
    searched, _ = starts(x0, True)
    np.testing.assert_allclose(searched, quasi_newton_start(deviance, x0, shape, positive)[0], rtol=1e-12)
    assert not np.allclose(searched, unsearched, rtol=1e-6)
    big = fake_shape([1] * (VALUE_HESSIAN_MAX_THETA + 1))
    x_big = jnp.full(big.n_theta, 0.7)
    np.testing.assert_array_equal(term_scale_search(deviance_of_sum, x_big, big, search=False), x_big)
