"""Numerical robustness: shifts of y along X's columns and of fixed-effect covariates leave
the fit unchanged (the evaluators see y's least-squares residual and an orthonormalised X:
`conditioning.py`); exact fits, convergence checks (lme4's checkConv) and designs whose
variance components are not identified are reported, not returned as clean optima."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.convergence_check import derivative_messages
from lmm_jax.model import Model
from lmm_jax.newton import EXACT_FIT

SLEEP = "Reaction ~ Days + (Days | Subject)"
# lme4 1.1-31 (R 4.2.2), lmer(Reaction ~ Days + (Days | Subject), sleepstudy): REML
LME4_SLEEP_THETA = np.array([0.96673295, 0.01516905, 0.23090959])
LME4_SLEEP_REML_LOGLIK = -871.8141


def test_sleepstudy_response_of_large_mean_is_fitted_as_lme4_fits_it(sleepstudy):
    """Reaction + 1e8 gave θ̂ [1.008, -0.012, 0.289] and a log-likelihood above the maximum."""
    plain = lmm_jax.fit(SLEEP, sleepstudy)
    shifted = lmm_jax.fit(SLEEP, sleepstudy.assign(Reaction=sleepstudy["Reaction"] + 1e8))
    np.testing.assert_allclose(shifted.theta, LME4_SLEEP_THETA, rtol=1e-4)
    np.testing.assert_allclose(shifted.theta, plain.theta, rtol=1e-7)
    np.testing.assert_allclose(shifted.params.loglik, LME4_SLEEP_REML_LOGLIK, atol=1e-4)
    np.testing.assert_allclose(shifted.params.loglik, plain.params.loglik, rtol=1e-10)
    np.testing.assert_allclose(shifted.params.beta, plain.params.beta + [1e8, 0.0], rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(shifted.vcov.to_numpy(), plain.vcov.to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(shifted.fitted - 1e8, plain.fitted, atol=1e-6)


def test_sleepstudy_covariate_of_large_mean_leaves_the_fit_unchanged(sleepstudy):
    """Days + 1e6 in the fixed part only: the column space of [1, Days] is unchanged."""
    formula = "Reaction ~ Days + (1 | Subject)"
    plain = lmm_jax.fit(formula, sleepstudy, method="ML")
    shifted = lmm_jax.fit(formula, sleepstudy.assign(Days=sleepstudy["Days"] + 1e6), method="ML")
    np.testing.assert_allclose(shifted.theta, plain.theta, rtol=1e-8)
    np.testing.assert_allclose(shifted.params.loglik, plain.params.loglik, rtol=1e-10)
    slope = plain.params.beta[1]
    np.testing.assert_allclose(shifted.params.beta, [plain.params.beta[0] - 1e6 * slope, slope], rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(shifted.vcov.to_numpy()))[1],
                               np.sqrt(np.diag(plain.vcov.to_numpy()))[1], rtol=1e-7)


def _random_slope_data(seed: int, n_groups: int = 12, per_group: int = 6) -> pd.DataFrame:
    """(x | g) data: β = (1, 0.5), random intercept SD 1, slope SD 0.4, σ = 1."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=g.size)
    b = rng.normal(size=(n_groups, 2)) * [1.0, 0.4]
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "z": rng.normal(size=g.size), "g": g})


@pytest.fixture(scope="module")
def slope_models():
    """Models of a few random designs sharing two shapes: (x | g) with x and z fixed,
    REML and ML (each `fit_params` compiles once per shape and method)."""
    return {(seed, method): Model.from_formula("y ~ x + z + (x | g)", _random_slope_data(seed), method)
            for seed in (1, 2, 3) for method in ("REML", "ML")}


def _assert_same_fit(shifted, plain, rtol=1e-8):
    assert int(shifted.status) <= 1 and int(plain.status) <= 1
    np.testing.assert_allclose(shifted.theta, plain.theta, rtol=rtol, atol=rtol * np.max(np.abs(plain.theta)))
    np.testing.assert_allclose(shifted.sigma2, plain.sigma2, rtol=rtol)
    np.testing.assert_allclose(shifted.loglik, plain.loglik, rtol=rtol)


@pytest.mark.parametrize("seed", (1, 2, 3))
@pytest.mark.parametrize("method", ("REML", "ML"))
def test_shift_of_response_along_fixed_columns_leaves_the_fit_unchanged(slope_models, seed, method):
    """Property: y -> y + Xc (c of size 1e6, 1e7) leaves θ̂, σ̂ and ℓ unchanged and moves β̂
    by c (+1e6 moved θ̂ 2 %, +1e7 gave θ₃ 0.98 for 0.21)."""
    model = slope_models[(seed, method)]
    X, y = np.asarray(model.design.X), np.asarray(model.design.y)
    plain = model.fit_params()
    for c in ([1e6, 0.0, 0.0], [1e7, 0.0, 0.0], [3e6, -2e6, 5e5]):
        shifted = model.fit_params(y=y + X @ np.array(c))
        _assert_same_fit(shifted, plain)
        np.testing.assert_allclose(shifted.beta - np.array(c), plain.beta, atol=1e-6)


@pytest.mark.parametrize("seed", (1, 2, 3))
@pytest.mark.parametrize("method", ("REML", "ML"))
def test_shift_of_fixed_covariate_leaves_the_fit_unchanged(slope_models, seed, method):
    """Property: a fixed-only covariate z -> z + c (c up to 1e6) with an intercept in X: the
    column space is the same, so θ̂, σ̂ and ℓ (REML's too) are unchanged."""
    model = slope_models[(seed, method)]
    X = np.asarray(model.design.X)
    plain = model.fit_params()
    for c in (1e4, 1e6):
        shifted = model.fit_params(X=X + np.array([0.0, 0.0, c]))
        _assert_same_fit(shifted, plain)
        np.testing.assert_allclose(shifted.beta[2], plain.beta[2], rtol=1e-7)
        np.testing.assert_allclose(shifted.beta[0], plain.beta[0] - c * plain.beta[2], rtol=1e-7,
                                   atol=1e-7 * c * abs(plain.beta[2]))


def test_response_almost_fitted_by_x_has_the_right_sigma(slope_models):
    """y = 3 - 2x + 1e-9 e: σ̂ is 1e-9 times e's (it came out 25x too large); θ̂ is e's."""
    model = slope_models[(1, "REML")]
    x = np.asarray(model.design.X)[:, 1]
    e = np.asarray(model.design.y)
    plain = model.fit_params()
    tiny = model.fit_params(y=3.0 - 2.0 * x + 1e-9 * e)
    np.testing.assert_allclose(np.sqrt(tiny.sigma2), 1e-9 * np.sqrt(plain.sigma2), rtol=1e-5)
    np.testing.assert_allclose(tiny.theta, plain.theta, rtol=1e-4, atol=1e-5)


def test_fit_batch_float64_response_of_large_mean(sleepstudy):
    y = sleepstudy["Reaction"].to_numpy()
    out = lmm_jax.fit_batch(SLEEP, sleepstudy, np.stack([y, y + 1e8, y + 1e7], axis=1), progress=False)
    for j in (1, 2):
        np.testing.assert_allclose(out.theta[j], out.theta[0], rtol=1e-7)
        np.testing.assert_allclose(out.loglik[j], out.loglik[0], rtol=1e-10)
        np.testing.assert_allclose(out.se[j], out.se[0], rtol=1e-7)
    np.testing.assert_allclose(out.theta[1], LME4_SLEEP_THETA, rtol=1e-4)


def test_fit_params_of_a_constant_response_is_marked_exact_fit(sleepstudy):
    """fit_params returned status converged with σ² 2e-11 and log-likelihood 1859."""
    model = Model.from_formula("y ~ Days + (1 | Subject)", sleepstudy.assign(y=5.0))
    params = model.fit_params()
    assert int(params.status) == EXACT_FIT
    assert np.isnan(params.theta).all() and np.isnan(params.sigma2) and np.isnan(params.loglik)
    np.testing.assert_allclose(params.beta, [5.0, 0.0], atol=1e-12)


def test_certified_fit_has_no_convergence_messages(sleepstudy):
    result = lmm_jax.fit(SLEEP, sleepstudy)
    assert result.converged
    assert result.to_dict()["convergence"]["failures"] == []
    assert result.to_dict()["convergence"]["warnings"] == []


def test_gradient_check_flags_a_point_that_is_not_an_optimum(sleepstudy):
    """lme4's checkConv rule: max min(|R⁻¹g|, |g|) > 0.002 at a θ that is not θ̂."""
    model = Model.from_formula(SLEEP, sleepstudy)
    failures, _ = derivative_messages(model, LME4_SLEEP_THETA * [1.1, 1.0, 1.0])
    assert failures and failures[0].startswith("Model failed to converge with max|grad| = ")
    assert derivative_messages(model, LME4_SLEEP_THETA) == ([], [])


NOT_IDENTIFIED = {
    "Reaction ~ Days + (1 | Subject) + (1 | Subject)": "group the rows identically",
    "Reaction ~ Days + (1 | Subject) + (1 | S2)": "(1 | Subject) and (1 | S2) group the rows identically",
    "Reaction ~ Days + (1 + c | Subject)": "(1 + c | Subject): its columns",
    "Reaction ~ Days + (0 + z | Subject) + (1 | Subject)": "(z | Subject): its columns",
    "Reaction ~ Days + F + (1 | Subject)": "(1 | Subject) lies in the fixed effects' column space",
}


@pytest.mark.parametrize("formula", sorted(NOT_IDENTIFIED))
def test_not_identified_designs_are_not_reported_as_converged(sleepstudy, formula):
    data = sleepstudy.assign(S2=sleepstudy["Subject"].astype(str) + "x", c=1.0, z=0.0,
                             F=sleepstudy["Subject"].astype(str))
    with pytest.warns(UserWarning, match="the fit is not converged") as record:
        result = lmm_jax.fit(formula, data)
    assert not result.converged
    assert any(NOT_IDENTIFIED[formula] in str(w.message) for w in record)
    assert any(NOT_IDENTIFIED[formula] in m for m in result.to_dict()["convergence"]["failures"])


INTERCEPT = "Reaction ~ Days + (1 | Subject)"


@pytest.fixture(scope="module")
def shifted_fits(sleepstudy):
    """sleepstudy's random-intercept fit as it is, with Reaction + 1e8 and with Days + 1e6
    (one model shape: each inference program compiles once)."""
    return {"plain": lmm_jax.fit(INTERCEPT, sleepstudy),
            "y": lmm_jax.fit(INTERCEPT, sleepstudy.assign(Reaction=sleepstudy["Reaction"] + 1e8)),
            "x": lmm_jax.fit(INTERCEPT, sleepstudy.assign(Days=sleepstudy["Days"] + 1e6))}


# (Intercept, Days) of the Days + 1e6 fit = T (Intercept, Days) of the plain one
DAYS_SHIFT = np.array([[1.0, -1e6], [0.0, 1.0]])


@pytest.mark.parametrize("shift", ("y", "x"))
def test_variance_components_of_shifted_data_equal_the_plain_ones(shifted_fits, shift):
    """SEs of the variance components (expected and observed information) are invariant."""
    columns = ["estimate", "se_expected", "se_observed"]
    np.testing.assert_allclose(shifted_fits[shift].variance_components()[columns].to_numpy(),
                               shifted_fits["plain"].variance_components()[columns].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("shift", ("y", "x"))
def test_robust_vcov_of_shifted_data_equals_the_plain_one(shifted_fits, shift):
    """The sandwich of φ̂ is invariant; that of β̂ maps as T Var T' (T the identity for y)."""
    shifted, plain = shifted_fits[shift].robust_vcov(), shifted_fits["plain"].robust_vcov()
    np.testing.assert_allclose(shifted["variance"].to_numpy(), plain["variance"].to_numpy(), rtol=1e-6)
    t = DAYS_SHIFT if shift == "x" else np.eye(2)
    np.testing.assert_allclose(shifted["beta"].to_numpy(), t @ plain["beta"].to_numpy() @ t.T, rtol=1e-6)


def test_profile_intervals_of_shifted_data_equal_the_plain_ones(shifted_fits):
    """Reaction + 1e8 moves only the intercept's interval (by 1e8); Days + 1e6 leaves the
    variance parameters' and Days' intervals (the intercept is another coefficient there).
    The inner fits stopped a step short with β's origin far away (Days' ends 0.1 % in)."""
    plain = shifted_fits["plain"].confint(method="profile", progress=False)
    y = shifted_fits["y"].confint(method="profile", progress=False)
    x = shifted_fits["x"].confint(method="profile", progress=False)
    plain_y = plain.copy()
    plain_y.loc["(Intercept)"] += 1e8
    np.testing.assert_allclose(y.to_numpy(), plain_y.to_numpy(), rtol=1e-8)
    kept = [name for name in plain.index if name != "(Intercept)"]
    np.testing.assert_allclose(x.loc[kept].to_numpy(), plain.loc[kept].to_numpy(), rtol=1e-8)


@pytest.mark.parametrize("ddf", ("Satterthwaite", "Kenward-Roger"))
@pytest.mark.parametrize("shift", ("y", "x"))
def test_small_sample_tests_of_shifted_data_equal_the_plain_ones(shifted_fits, shift, ddf):
    """anova() and test() on Days: F and the denominator df (DenDF 160.9999 for 161 before
    the terms were computed on the conditioned X)."""
    shifted, plain = shifted_fits[shift], shifted_fits["plain"]
    columns = ["F value", "DenDF", "Pr(>F)"]
    np.testing.assert_allclose(shifted.anova(ddf=ddf)[columns].to_numpy(float),
                               plain.anova(ddf=ddf)[columns].to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(shifted.test([0.0, 1.0], ddf=ddf).to_numpy(),
                               plain.test([0.0, 1.0], ddf=ddf).to_numpy(), rtol=1e-6)


def test_residual_structure_fits_raise_no_false_convergence_alarm():
    """lme4's gradient check differentiated the criterion without the residual structure:
    "Model failed to converge with max|grad| = 1.69" at nlme's optimum, converged False."""
    data = lmm_jax.datasets.load("bodyweight")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = lmm_jax.fit("weight ~ Time * Diet + (1 | Rat)", data, weights="ident(~ 1 | Diet)")
    assert not [w for w in record if "converge" in str(w.message)]
    assert result.converged
    assert result.to_dict()["convergence"]["failures"] == []


def _shifted_days_map(shift: float) -> np.ndarray:
    """A⁻¹ with (1, Days + c) = (1, Days) A: the shifted fit's effects are A⁻¹ b and its
    Σ = A⁻¹ Σ A⁻ᵀ of the unshifted fit's (the unstructured model is invariant)."""
    return np.array([[1.0, -shift], [0.0, 1.0]])


@pytest.fixture(scope="module")
def slope_shift_fits(sleepstudy):
    """(Days | Subject) as it is and with Days + 1e4, + 1e6 (one model shape)."""
    fits = {0.0: lmm_jax.fit(SLEEP, sleepstudy)}
    for shift in (1e4, 1e6):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            fits[shift] = lmm_jax.fit(SLEEP, sleepstudy.assign(Days=sleepstudy["Days"] + shift))
        alarms = [str(w.message) for w in record if any(
            word in str(w.message) for word in ("converge", "singular", "identif", "linearly dependent"))]
        assert alarms == []
    return fits


@pytest.mark.parametrize("shift", (1e4, 1e6))
def test_random_slope_on_a_covariate_of_large_mean_reaches_the_optimum(slope_shift_fits, shift):
    """(Days + c | Subject): the deviance is the unshifted one (494.96 for 480.47 was reported
    at x + 1e4), θ̂ is lme4's canonical factor of A⁻¹ΣA⁻ᵀ, the BLUPs are A⁻¹b̂ (conditional
    SDs from A⁻¹ Var(b | y) A⁻ᵀ) and the fitted values, Days' SE and σ̂ are unchanged."""
    plain, shifted, a_inv = slope_shift_fits[0.0], slope_shift_fits[shift], _shifted_days_map(shift)
    assert shifted.converged and not shifted.singular
    np.testing.assert_allclose(shifted.objective, plain.objective, rtol=1e-10)
    lam = np.array([[plain.theta[0], 0.0], [plain.theta[1], plain.theta[2]]])
    sigma = a_inv @ lam @ lam.T @ a_inv.T
    expected = np.linalg.cholesky(sigma)[[0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(shifted.theta, expected, rtol=1e-5 if shift > 1e5 else 1e-8)
    vc = {(row["var1"], row["var2"]): row["vcov"] for row in shifted.varcorr().to_dict("records")}
    np.testing.assert_allclose([vc[("(Intercept)", None)], vc[("Days", None)], vc[("(Intercept)", "Days")]],
                               plain.sigma ** 2 * sigma[[0, 1, 0], [0, 1, 1]], rtol=1e-7)
    columns = ["(Intercept)", "Days"]
    np.testing.assert_allclose(shifted.ranef()["Subject"][columns].to_numpy(),
                               plain.ranef()["Subject"][columns].to_numpy() @ a_inv.T, rtol=1e-8)
    intercept_sd = shifted.ranef(cond_sd=True)["Subject"]["(Intercept)"].to_numpy()
    plain_sd = plain.ranef(cond_sd=True)["Subject"].to_numpy()
    assert np.all(intercept_sd > 0.9 * shift * plain_sd[:, 1])  # Var(b₀ - c b₁ | y) ~ c² Var(b₁ | y)
    np.testing.assert_allclose(shifted.fitted, plain.fitted, rtol=1e-10)
    np.testing.assert_allclose(shifted.se["Days"], plain.se["Days"], rtol=1e-8)
    np.testing.assert_allclose(shifted.sigma, plain.sigma, rtol=1e-8)
    assert shifted.to_dict()["theta"] == pytest.approx(list(shifted.theta), rel=1e-15)


def test_random_slope_shift_in_fit_batch_and_fit_params(sleepstudy):
    """The same optimum through fit_batch's and Model.fit_params's programs (Days + 1e4)."""
    data = sleepstudy.assign(Days=sleepstudy["Days"] + 1e4)
    plain = Model.from_formula(SLEEP, sleepstudy).fit_params()
    shifted = Model.from_formula(SLEEP, data).fit_params()
    np.testing.assert_allclose(shifted.loglik, plain.loglik, rtol=1e-10)
    batch = lmm_jax.fit_batch(SLEEP, data, data[["Reaction"]].to_numpy(), progress=False)
    np.testing.assert_allclose(batch.loglik[0], plain.loglik, rtol=1e-10)
    np.testing.assert_allclose(batch.theta[0], shifted.theta, rtol=1e-7)


def test_variance_components_of_a_shifted_random_slope_map_from_the_plain_ones(slope_shift_fits):
    """Σ = A⁻¹Σ_pA⁻ᵀ is linear in Σ_p (φ = Tφ_p): SEs are √diag(T Var(φ̂_p) T'). At lme4's θ of
    Days + 1e4 a factor diagonal (1e-4) counted as a boundary: the SEs were NaN."""
    plain, shifted = slope_shift_fits[0.0].variance_components(), slope_shift_fits[1e4].variance_components()
    c = 1e4
    t = np.array([[1.0, c * c, -2.0 * c, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, -c, 1.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(shifted["estimate"], t @ plain["estimate"].to_numpy(), rtol=1e-7)
    for column in ("se_expected", "se_observed"):
        # the plain SEs alone do not give T Var T': the correlations come from the information
        info = slope_shift_fits[0.0].fisher_information("expected" if column == "se_expected" else "observed")
        phi_cov = np.linalg.inv(info.to_numpy())[2:, 2:]
        np.testing.assert_allclose(shifted[column], np.sqrt(np.diag(t @ phi_cov @ t.T)), rtol=1e-6)


def _huge_intercept_variance_data() -> pd.DataFrame:
    """10 groups of 6; group SD 1e4, residual SD 1: the intercept variance is 1e8 times the
    residual one (the data lme4 was run on below, regenerated exactly)."""
    rng = np.random.default_rng(20261208)
    g = np.repeat(np.arange(10), 6)
    x = rng.normal(size=g.size)
    y = 5 + 0.5 * x + 1e4 * rng.normal(size=10)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g]})


# lme4 1.1-31 (R 4.2.2) on that data: logLik, theta, fixef, sigma. lme4 warns "degenerate
# Hessian with 1 negative eigenvalues" for ML and nothing for REML: its finite-difference
# Hessian (curvature ~2(k-1)/theta^2 = 4e-7 here, below checkConv's 1e-6) is noise.
HUGE_VARIANCE_LME4 = {"REML": (-170.1939376207, 6373.264305, [-342.5086265, 0.7697711383], 0.9503292187),
                      "ML": (-177.6050995634, 6107.578754, [-342.5085613, 0.7697711308], 0.9407782887)}


@pytest.mark.parametrize("method", ("REML", "ML"))
def test_intercept_variance_1e8_times_the_residual_one_reaches_lme4s_optimum(method):
    """The criterion is flat in theta (its rounding noise is n theta^2 eps ~ 5e-7): the fit ends
    at lme4's optimum within that noise, and says what lme4's rule says of its exact Hessian
    (numerically singular: the variance is not determined)."""
    loglik, theta, beta, sigma = HUGE_VARIANCE_LME4[method]
    with pytest.warns(UserWarning, match="Hessian is numerically singular"):
        result = lmm_jax.fit("y ~ x + (1 | g)", _huge_intercept_variance_data(), method=method)
    assert result.loglik == pytest.approx(loglik, abs=1e-6)
    np.testing.assert_allclose(result.theta, [theta], rtol=1e-5)
    np.testing.assert_allclose(result.fixef.to_numpy(), beta, rtol=1e-6)
    assert result.sigma == pytest.approx(sigma, rel=1e-6)
    assert not result.converged
