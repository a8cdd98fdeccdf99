"""Information matrices and SEs of the variance components: against the R Fisher-information
cases and metafor, a dense ½tr(PV_iPV_j), central differences, and at the boundary."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import case_data, load_case

import lmm_jax
from lmm_jax.blocked import blocked_profile, cross_products
from lmm_jax.dense import dense_z_lambda
from lmm_jax.fay_herriot_estimators import area_variance_se
from lmm_jax.information import information_at as host_information
from lmm_jax.variance_scale import deviance_on_variance_scale, engine_parameters

RTOL = 1e-4  # README: SEs and variance components, relative (fits differ from lme4's by ~1e-5)
EXACT = 1e-9  # two exact computations of the same quantity
SLEEP = "Reaction ~ Days + (Days | Subject)"


def information_at(model, phi):
    """`information_matrices` at a given φ (no boundary term), β̂ profiled there."""
    theta, sigma2 = engine_parameters(jnp.asarray(phi), model.shape)
    beta = blocked_profile(theta, cross_products(model.arrays, model.shape), model.shape).beta
    held = (False,) * len(model.shape.dims)
    return host_information(model, theta, sigma2, beta, held)  # the program `fit_information` runs


@pytest.mark.parametrize("case_id", ["dyestuff_fisher_reml", "pastes_fisher_ml"])
def test_expected_information_matches_reference(case_id):
    case = load_case(case_id)
    result = lmm_jax.fit(case["formula"], case_data(case), method=case["method"])
    assert [t.name for t in result.design.terms] + ["Residual"] == case["components"]
    exact = information_at(result.model, case["variance"]).expected  # at lme4's estimates
    np.testing.assert_allclose(exact, case["information"], rtol=EXACT)
    table = result.variance_components()
    assert list(table.group) == case["components"]
    np.testing.assert_allclose(table.estimate, case["variance"], rtol=RTOL)
    np.testing.assert_allclose(table.se_expected, case["se"], rtol=RTOL)
    info = result.fisher_information("expected").to_numpy()
    np.testing.assert_allclose(info[1:, 1:], case["information"], rtol=RTOL)
    np.testing.assert_allclose(info[0, 1:], 0.0)
    np.testing.assert_allclose(info[0, 0], 1.0 / result.vcov.iloc[0, 0], rtol=EXACT)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_known_scale_area_variance_se_matches_metafor(method):
    """Fay-Herriot through the general engine: √(1/I) at metafor's Â is its area_variance_se
    (and fay_herriot's own closed form √(2/tr(PP)) or √(2/Σw²))."""
    case = load_case(f"bcg_fay_herriot_{method.lower()}")
    bcg = lmm_jax.datasets.load("bcg")
    model = lmm_jax.Model.from_formula("yi ~ ablat + (1 | trial)", bcg, method=method,
                                       weights=1 / bcg["vi"], known_scale=True)
    expected = information_at(model, [case["area_variance"]]).expected
    se = float(np.sqrt(1.0 / expected[0, 0]))
    np.testing.assert_allclose(se, case["area_variance_se"], rtol=RTOL)
    closed_form = area_variance_se(method, case["area_variance"], model.arrays.y, model.arrays.X,
                                   jnp.asarray(bcg["vi"].to_numpy()))
    np.testing.assert_allclose(se, closed_form, rtol=EXACT)
    table = model.fit().variance_components()
    assert list(table.index) == ["var_(Intercept)|trial"]  # no σ² row with a known scale


def dense_variance_model(model):
    """Dense V(φ) = Σ_k Z_k(I ⊗ Σ_k)Z_k' + σ²W⁻¹ (n x n) built directly from Z."""
    z = dense_z_lambda(model.initial_theta(), model.arrays, model.shape)  # Λ = I: Z itself
    blocks, start = [], 0
    for m, d in zip(model.shape.n_levels, model.shape.dims):
        blocks.append((z[:, start:start + m * d].reshape(-1, m, d), d))
        start += m * d

    def v_of(phi):
        v, pos = jnp.diag(phi[-1] / model.arrays.weights), 0
        for zk, d in blocks:
            cov = jnp.zeros((d, d))
            for i in range(d):  # varcorr order: variances, then covariances
                cov = cov.at[i, i].set(phi[pos + i])
            pos += d
            for j in range(d):
                for i in range(j + 1, d):
                    cov = cov.at[i, j].set(phi[pos]).at[j, i].set(phi[pos])
                    pos += 1
            v = v + jnp.einsum("nmi,ij,omj->no", zk, cov, zk)
        return v

    return v_of


def dense_expected_information(model, phi, reml):
    """½ tr(P V_i P V_j) (REML, P = V⁻¹ - V⁻¹X(X'V⁻¹X)⁻¹X'V⁻¹) or ½ tr(V⁻¹V_iV⁻¹V_j) (ML)."""
    v_of = dense_variance_model(model)
    v = v_of(phi)
    derivs = jax.jacfwd(v_of)(phi)  # V is linear in φ: V_i exactly
    vinv = jnp.linalg.inv(v)
    x = model.arrays.X
    p_mat = vinv - vinv @ x @ jnp.linalg.solve(x.T @ vinv @ x, x.T @ vinv) if reml else vinv
    pv = jnp.einsum("ab,bci->iac", p_mat, derivs)
    return 0.5 * jnp.einsum("iab,jba->ij", pv, pv)


def central_difference_hessian(f, x, steps):
    """Central differences [f(x+h_i+h_j) - f(x+h_i-h_j) - f(x-h_i+h_j) + f(x-h_i-h_j)] / (4h_ih_j),
    Richardson-extrapolated from steps h and 2h (error O(h⁴))."""
    def at_step(h):
        out = np.zeros((x.size, x.size))
        for i in range(x.size):
            for j in range(x.size):
                def at(si, sj):
                    point = np.array(x, dtype=float)
                    point[i] += si * h[i]
                    point[j] += sj * h[j]
                    return float(f(jnp.asarray(point)))
                out[i, j] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * h[i] * h[j])
        return out

    return (4 * at_step(steps) - at_step(2 * steps)) / 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("balanced", [True, False])
def test_information_against_dense_and_finite_differences(sleep_fits, method, balanced):
    result = sleep_fits[method, balanced]
    model = result.model
    table = result.variance_components()
    phi = np.asarray(table.estimate.to_numpy())
    info = information_at(model, phi)
    np.testing.assert_allclose(info.expected, dense_expected_information(model, jnp.asarray(phi),
                                                                         model.shape.reml), rtol=EXACT)
    np.testing.assert_allclose(table.se_expected, np.sqrt(np.diag(np.linalg.inv(info.expected))),
                               rtol=EXACT)
    gap = np.max(np.abs(table.se_observed / table.se_expected - 1))
    # balanced: the score is linear in the within/between cross-products, so observed = expected
    # at the optimum; unbalanced: they differ
    assert gap < 1e-8 if balanced else gap > 1e-3
    if balanced and method == "ML":
        return  # the same check as REML's, at the cost of 256 more deviances
    deviance = jax.jit(lambda f: deviance_on_variance_scale(f, model.arrays, model.shape))
    # steps of 2% of an SE: truncation O(h⁴) after extrapolation, rounding ~1e-11/h²
    numerical = 0.5 * central_difference_hessian(deviance, phi, 0.02 * table.se_expected.to_numpy())
    np.testing.assert_allclose(info.observed, numerical, rtol=2e-6)
    np.testing.assert_allclose(table.se_observed, np.sqrt(np.diag(np.linalg.inv(numerical))), rtol=2e-6)


@pytest.mark.slow
def test_observed_ml_information_of_beta_and_phi(sleep_fits):
    """ML: the blocked Hessian of -ℓ(β, φ) against a dense one; its β block is X'V⁻¹X and the
    φ block of its inverse is that of the β-profiled deviance (a Schur complement)."""
    result = sleep_fits["ML", False]
    model, p = result.model, 2
    observed = result.fisher_information("observed")
    assert list(observed.index) == ["(Intercept)", "Days", "var_(Intercept)|Subject",
                                    "var_Days|Subject", "cov_Days.(Intercept)|Subject", "sigma2"]
    v_of = dense_variance_model(model)
    x, y = model.arrays.X, model.arrays.y

    def minus_loglik(psi):
        v, r = v_of(psi[p:]), y - x @ psi[:p]
        return 0.5 * (jnp.linalg.slogdet(v)[1] + r @ jnp.linalg.solve(v, r) + y.size * jnp.log(2 * jnp.pi))

    psi = jnp.concatenate([jnp.asarray(result.fixef.to_numpy()),
                           jnp.asarray(result.variance_components().estimate.to_numpy())])
    dense = jax.jit(jax.hessian(minus_loglik))(psi)
    np.testing.assert_allclose(observed.to_numpy(), dense, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(observed.to_numpy()[:p, :p], np.linalg.inv(result.vcov), rtol=1e-8)
    # -∂²ℓ/∂β∂φ_i = X'V⁻¹V_iV⁻¹r: zero in expectation only (the expected information is block-diagonal)
    assert np.abs(observed.to_numpy()[:p, p:]).max() > 1e-6
    phi_block = np.linalg.inv(observed.to_numpy())[p:, p:]
    se = np.sqrt(np.diag(phi_block))
    np.testing.assert_allclose(se, result.variance_components().se_observed, rtol=1e-8)


def test_reml_observed_information_is_block_diagonal(sleep_fits):
    result = sleep_fits["REML", False]
    observed = result.fisher_information("observed").to_numpy()
    np.testing.assert_allclose(observed[:2, :2], np.linalg.inv(result.vcov), rtol=1e-8)
    assert np.all(observed[:2, 2:] == 0)
    table = result.variance_components()
    np.testing.assert_allclose(np.sqrt(np.diag(np.linalg.inv(observed[2:, 2:]))), table.se_observed,
                               rtol=1e-10)
    with pytest.raises(ValueError, match="kind"):
        result.fisher_information("hessian")


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_singular_fit_holds_the_boundary_term(method):
    """dyestuff2: the Batch variance is 0. Its SEs are NaN; σ² alone remains, whose information
    with the Batch term held at 0 is that of a regression: ½ d/σ⁴, d = n - p (REML) or n (ML)."""
    result = lmm_jax.fit("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff2"), method=method)
    assert result.singular
    table = result.variance_components()
    assert np.isnan(table.se_expected.iloc[0]) and np.isnan(table.se_observed.iloc[0])
    d = 29 if method == "REML" else 30
    se = np.sqrt(2.0 / d) * result.sigma ** 2
    np.testing.assert_allclose(table.loc["sigma2", ["se_expected", "se_observed"]], [se, se], rtol=1e-8)
    info = result.fisher_information("observed")
    assert np.isnan(info.loc["var_(Intercept)|Batch"]).all()
    np.testing.assert_allclose(info.loc["sigma2", "sigma2"], 1 / se ** 2, rtol=1e-8)
