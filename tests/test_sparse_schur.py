"""The sparse Schur-complement product (`sparse_schur.py`) of large crossed designs equals
the dense product and the dense textbook evaluator: values, gradients and the fit."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.blocked import blocked_profile, blocked_summaries, cross_products
from lmm_jax.dense import dense_profile
from lmm_jax.model import deviance_function

FORMULA = "y ~ x + (1 | student) + (1 + x | teacher) + (1 | room)"


def crossed_frame(seed: int = 0, students: int = 150, teachers: int = 40, per_student: int = 4):
    """Each student meets a few of many teachers: B_Z is sparse (an InstEval in miniature)."""
    rng = np.random.default_rng(seed)
    student = np.repeat(np.arange(students), per_student)
    teacher = np.concatenate([rng.choice(teachers, per_student, replace=False) for _ in range(students)])
    room = rng.integers(0, 7, size=student.size)
    x = rng.normal(size=student.size)
    y = (1 + 0.5 * x + rng.normal(size=students)[student] * 0.6 + rng.normal(size=teachers)[teacher]
         + 0.4 * x * rng.normal(size=teachers)[teacher] + 0.3 * rng.normal(size=7)[room]
         + rng.normal(size=student.size))
    return pd.DataFrame({"y": y, "x": x, "student": student.astype(str), "teacher": teacher.astype(str),
                         "room": room.astype(str)})


@pytest.fixture(scope="module")
def model():
    return lmm_jax.Model.from_formula(FORMULA, crossed_frame(), weights=np.linspace(0.5, 2.0, 600))


def without_pairs(arrays):
    return dataclasses.replace(arrays, schur_pairs=None)


def test_crossed_design_uses_the_pairs(model):
    pairs = model.arrays.schur_pairs
    assert pairs is not None
    q2 = 40 * 2 + 7  # teacher (intercept and slope) and room effects
    m1 = 150
    assert pairs.level.size < m1 * q2 * q2 / 8  # far fewer than the dense product's terms
    assert int(jnp.max(pairs.row)) < q2 and bool(jnp.all(pairs.row >= pairs.col))


def test_sparse_equals_dense_product_and_dense_evaluator(model):
    rng = np.random.default_rng(3)
    sparse_cp = cross_products(model.arrays, model.shape)
    dense_cp = cross_products(without_pairs(model.arrays), model.shape)
    blocked, dense = jax.jit(blocked_profile, static_argnums=2), jax.jit(dense_profile, static_argnums=2)
    for _ in range(3):
        theta = jnp.asarray(rng.normal(size=model.shape.n_theta))
        sparse = blocked(theta, sparse_cp, model.shape)
        for a, b in zip(blocked(theta, dense_cp, model.shape), sparse):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11, atol=1e-11)
        for a, b in zip(dense(theta, model.arrays, model.shape), sparse):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-9)


def test_gradient_and_hessian_match(model):
    theta = jnp.asarray(model.shape.initial_theta()) * 0.7
    sparse = deviance_function(model.arrays, model.shape)
    dense = deviance_function(without_pairs(model.arrays), model.shape)
    for derivative, tol in ((jax.grad, 1e-9), (jax.hessian, 1e-8)):  # jitted: one compile, not one per op
        np.testing.assert_allclose(jax.jit(derivative(sparse))(theta), jax.jit(derivative(dense))(theta),
                                   rtol=tol, atol=tol)


def test_fit_with_pairs_equals_fit_without(model):
    sparse = model.fit_params()
    dense = lmm_jax.model.fit_arrays(without_pairs(model.arrays), model.shape, model.initial_theta())
    np.testing.assert_allclose(sparse.objective, dense.objective, rtol=1e-12)
    np.testing.assert_allclose(sparse.theta, dense.theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sparse.beta, dense.beta, rtol=1e-8)


def test_small_designs_keep_the_dense_product():
    data = lmm_jax.datasets.load("sleepstudy")
    assert lmm_jax.Model.from_formula("Reaction ~ Days + (Days | Subject)", data).arrays.schur_pairs is None
    assert lmm_jax.Model.from_formula("y ~ x + (1 | student) + (1 | room)", crossed_frame()).arrays.schur_pairs is None


def test_entries_summed_from_the_observations_equal_the_dense_cross_product(model):
    """C_Z's non-zero entries and the pair products, formed from the rows without the dense
    m₁ x q₂ block, equal that block's entries (a teacher term with 2 columns per level)."""
    cp = jax.jit(cross_products, static_argnums=1)(model.arrays, model.shape)
    pairs, q2 = model.arrays.schur_pairs, 40 * 2 + 7
    c_z = np.asarray(cp.z1tr)[:, :, :q2]  # the dense Z₁'WZ₂ (the dense product's)
    dense_entries = c_z[np.asarray(pairs.entry_level), :, np.asarray(pairs.entry_column)]
    np.testing.assert_allclose(cp.z_entries, dense_entries, rtol=1e-13, atol=1e-13)
    level, row, col = (np.asarray(a) for a in (pairs.level, pairs.row, pairs.col))
    dense_products = c_z[level, :, row][:, :, None] * c_z[level, :, col][:, None, :]
    np.testing.assert_allclose(cp.pair_products, dense_products, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(cp.z1txy, np.asarray(cp.z1tr)[:, :, q2:], rtol=0, atol=0)
    assert np.count_nonzero(c_z) == np.count_nonzero(dense_entries)  # every non-zero is listed


@pytest.mark.parametrize("formula", [FORMULA, "y ~ x + (1 + x | student) + (1 | teacher) + (1 | room)"])
def test_summaries_from_the_pairs_equal_those_from_the_dense_factor(formula):
    """(X'V₀⁻¹X)⁻¹, the BLUPs and the conditional covariances of every term from the pairs
    (`level_entry_sums`, `level_pair_sums` and one S_ZZ⁻¹) equal those from the dense B of
    the dense product, with a 2 x 2 term after the first and as the first (p₁ = 2)."""
    model = lmm_jax.Model.from_formula(formula, crossed_frame(teachers=120), weights=np.linspace(0.5, 2.0, 600))
    assert model.arrays.schur_pairs is not None
    rng = np.random.default_rng(4)
    summaries = jax.jit(lambda theta, arrays: blocked_summaries(theta, cross_products(arrays, model.shape),
                                                                model.shape, 1.7))
    for scale in (0.6, 0.05):  # a regular and a nearly singular θ
        theta = jnp.asarray(model.shape.initial_theta() * scale + 0.1 * scale * rng.normal(size=model.shape.n_theta))
        sparse = jax.tree_util.tree_leaves(summaries(theta, model.arrays))
        dense = jax.tree_util.tree_leaves(summaries(theta, without_pairs(model.arrays)))
        assert len(sparse) == len(dense) == 7  # (X'V₀⁻¹X)⁻¹, 3 terms' modes and covariances
        for a, b in zip(sparse, dense):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12 * float(np.max(np.abs(b))))
