"""Variance-component tests and model comparison against lme4, RLRsim and R's anova(lm, lm).

Tolerances follow tests/reference/README.md: log-likelihoods 1e-4 absolute, so a
statistic 2(ℓ₁ - ℓ₀) and AIC/BIC to 2e-4 absolute; χ² p-values to 1e-4 relative.
Simulated RLRT p-values are held to 4 binomial standard errors of the difference of two
independent Monte-Carlo estimates, sqrt(p(1-p)(1/n₁ + 1/n₂)) with p the reference: a
correct simulation fails that check with probability about 6e-5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

import lmm_jax
from conftest import case_data, load_case
from lmm_jax.design import build_design
from lmm_jax.lrt_mixture import variance_mixture
from lmm_jax.rlrt import p_value_text

SLEEP_REDUCED = "Reaction ~ Days + (1 | Subject)"
SLEEP_FULL = "Reaction ~ Days + (Days | Subject)"
PASTES_TWO_TERMS = "strength ~ 1 + (1 | batch) + (1 | batch:cask)"
# RLRsim 3.1-8, R 4.2.2, set.seed(1):
#   full <- lmer(strength ~ 1 + (1|batch) + (1|batch:cask), pastes)
#   exactRLRT(lmer(strength ~ 1 + (1|batch), pastes), full,
#             lmer(strength ~ 1 + (1|batch:cask), pastes), nsim = 1e5)
PASTES_BATCH_RLRT = {"statistic": 0.6576559, "p_value": 0.17828, "nsim": 100000}
# set.seed(11); exactRLRT(lmer(Yield ~ 1 + (1 | Batch), dyestuff), nsim = 1e6): a tighter
# reference than the case file's 1e5 draws (0.00463, 1.4 of its SEs above this one)
DYESTUFF_RLRT_1E6 = {"p_value": 0.004346, "nsim": 1000000}


def assert_p_within_mc(ours: dict, reference: dict) -> None:
    p = reference["p_value"]
    se = np.sqrt(p * (1 - p) * (1 / ours["nsim"] + 1 / reference["nsim"]))
    assert abs(ours["p_value"] - p) <= 4 * se, (ours["p_value"], p, se)


@pytest.fixture(scope="module")
def pastes_two_terms():
    return lmm_jax.fit(PASTES_TWO_TERMS, lmm_jax.datasets.load("pastes"))


def other_response(data):
    """The same rows with another response: same shapes, so no new compilation."""
    return data.assign(Reaction=data["Reaction"] + np.linspace(0.0, 10.0, len(data)))


@pytest.fixture(scope="module")
def sleep_fits(sleepstudy):
    """ML fits of both models and the REML fit of the reduced one (compilation is the
    cost of a fit here: each model shape and method compiles once)."""
    fits = {(f, "ML"): lmm_jax.fit(f, sleepstudy, method="ML") for f in (SLEEP_REDUCED, SLEEP_FULL)}
    fits[SLEEP_REDUCED, "REML"] = lmm_jax.fit(SLEEP_REDUCED, sleepstudy)
    return fits


# ----- lrt -------------------------------------------------------------------------------
def test_lrt_matches_lme4_anova(sleep_fits):
    case = load_case("sleepstudy_lrt_slope")
    out = lmm_jax.lrt(sleep_fits[SLEEP_REDUCED, "ML"], sleep_fits[SLEEP_FULL, "ML"])
    assert out["df"] == case["df"] == 2
    assert abs(out["loglik_full"] - case["loglik_full"]) <= 1e-4
    assert abs(out["loglik_reduced"] - case["loglik_reduced"]) <= 1e-4
    assert abs(out["statistic"] - case["statistic"]) <= 2e-4
    assert out["p_value"] == pytest.approx(case["p_chisq"], rel=1e-4)
    # one new variance (on the boundary) and one covariance: ½χ²₁ + ½χ²₂ (Stram & Lee)
    expected = 0.5 * stats.chi2.sf(case["statistic"], 1) + 0.5 * stats.chi2.sf(case["statistic"], 2)
    assert out["p_value_boundary"] == pytest.approx(expected, rel=1e-4)
    assert out["p_value_boundary"] < out["p_value"]
    assert out["mixture"].startswith("1/2 χ²(1) + 1/2 χ²(2)")


def test_lrt_keeps_reml_with_same_fixed_effects(pastes_two_terms):
    reduced = lmm_jax.fit("strength ~ 1 + (1 | batch:cask)", lmm_jax.datasets.load("pastes"))
    out = lmm_jax.lrt(reduced, pastes_two_terms)
    assert out["method"] == "REML" and out["df"] == 1
    assert abs(out["loglik_full"] - load_case("pastes_nested_reml")["loglik"]) <= 1e-4
    # RLRsim's statistic is this REML LRT (lme4's logLik(full) - logLik(m0), doubled)
    assert abs(out["statistic"] - PASTES_BATCH_RLRT["statistic"]) <= 2e-4
    assert out["p_value_boundary"] == pytest.approx(out["p_value"] / 2, rel=1e-12)
    assert out["mixture"].startswith("1/2 χ²(0) + 1/2 χ²(1)")


def test_lrt_refusals(sleep_fits, sleepstudy):
    reml_reduced = sleep_fits[SLEEP_REDUCED, "REML"]
    other_fixed = lmm_jax.fit("Reaction ~ I(Days ** 2) + (1 | Subject)", sleepstudy)
    with pytest.raises(ValueError, match="method='ML'"):
        lmm_jax.lrt(other_fixed, reml_reduced.model.fit())  # fits only differ in X
    with pytest.raises(ValueError, match="nothing is tested"):
        lmm_jax.lrt(reml_reduced, reml_reduced)
    with pytest.raises(ValueError, match="more parameters"):
        lmm_jax.lrt(sleep_fits[SLEEP_FULL, "ML"], sleep_fits[SLEEP_REDUCED, "ML"])
    with pytest.raises(ValueError, match="different methods"):
        lmm_jax.lrt(sleep_fits[SLEEP_REDUCED, "ML"], reml_reduced)
    other_data = lmm_jax.fit(SLEEP_REDUCED, other_response(sleepstudy), method="ML")
    with pytest.raises(ValueError, match="not of the same data"):
        lmm_jax.lrt(other_data, sleep_fits[SLEEP_FULL, "ML"])


def test_mixtures_of_other_nestings(sleepstudy):
    pastes = lmm_jax.datasets.load("pastes")

    def mixture(reduced, full, data):
        weights, why = variance_mixture(build_design(reduced, data), build_design(full, data))
        return (None if weights is None else {d: float(w) for d, w in weights.items()}), why

    # one scalar term added: ½χ²₀ + ½χ²₁ (Self & Liang case 5)
    assert mixture("strength ~ 1 + (1 | batch)", PASTES_TWO_TERMS, pastes)[0] == {0: .5, 1: .5}
    # two independent scalar terms added: the convolution ¼χ²₀ + ½χ²₁ + ¼χ²₂
    weights, why = mixture("strength ~ 1 + (1 | batch)",
                           "strength ~ 1 + (1 | batch) + (1 | batch:cask) + (1 | cask)", pastes)
    assert weights == {0: .25, 1: .5, 2: .25} and "independent" in why
    # only a covariance added ((x || g) -> (x | g)): interior, χ²₁
    assert mixture("Reaction ~ Days + (Days || Subject)", SLEEP_FULL, sleepstudy)[0] == {1: 1.0}
    # a fixed effect and a slope variance with its covariance: ½χ²₂ + ½χ²₃
    assert mixture("Reaction ~ 1 + (1 | Subject)", SLEEP_FULL, sleepstudy)[0] == {2: .5, 3: .5}
    # two variances at once in one term: no closed form
    weights, why = mixture("Reaction ~ Days + (1 | Subject)",
                           "Reaction ~ Days + (Days + I(Days ** 2) | Subject)", sleepstudy)
    assert weights is None and "no closed form" in why
    # random parts not nested
    weights, why = mixture("strength ~ 1 + (1 | cask)", PASTES_TWO_TERMS, pastes)
    assert weights is None and "not nested" in why


# ----- rlrt ------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id", ["dyestuff_reml", pytest.param("rail_reml", marks=pytest.mark.slow)])
def test_rlrt_matches_rlrsim(case_id):  # rail: slow only for its own fit's compilation
    nsim = 100000  # both cases have K = 6 levels: one compiled simulation serves both
    case = load_case(case_id)
    fit = lmm_jax.fit(case["formula"], case_data(case))
    out = lmm_jax.rlrt(fit, nsim=nsim, seed=1)
    reference = case["exact_rlrt"]
    assert abs(out["statistic"] - reference["statistic"]) <= 1e-4
    assert out["nsim"] == nsim and out["null_law"] == "exact"
    if reference["p_value"] == 0:  # Rail: none of RLRsim's 1e5 draws exceeded 36.5
        assert out["p_value"] == 0.0 and out["p_value_text"] == "< 1e-05"
    else:
        assert out["p_value_text"] == f"{out['p_value']:.4g}"
        assert_p_within_mc(out, reference)
        assert_p_within_mc(out, DYESTUFF_RLRT_1E6)


@pytest.mark.slow  # compiles a second null simulation (K = 10)
def test_rlrt_of_one_term_among_several(pastes_two_terms):
    out = lmm_jax.rlrt(pastes_two_terms, term="(1 | batch)", nsim=100000, seed=2)
    assert abs(out["statistic"] - PASTES_BATCH_RLRT["statistic"]) <= 1e-6
    assert out["term"] == "(1 | batch)" and out["null_law"].startswith("approximate")
    assert_p_within_mc(out, PASTES_BATCH_RLRT)


def test_null_statistics_equal_a_python_loop():
    """The vectorised sup over λ of (n-p) log(1 + N/D) - Σ log(1 + λμ) equals, draw by draw,
    a loop maximising on a 100-times finer grid and then with scipy's bounded Brent."""
    from scipy.optimize import minimize_scalar

    from lmm_jax.rlrt_null import lambda_grid, statistics

    rng = np.random.default_rng(3)
    mu, n0, df_rest, draws = np.array([1.0, 0.8, 0.5, 0.3, 0.05, 1e-3]), 29.0, 23, 40
    w2, chi_rest = rng.standard_normal((draws, mu.size)) ** 2, rng.chisquare(df_rest, draws)
    ours = np.asarray(statistics(w2, chi_rest, mu, lambda_grid(), n0))

    def profile(log_lam, w, chi):  # one draw, at one or several values of log λ
        lm = np.exp(np.asarray(log_lam))[..., None] * mu
        ratio = np.sum(lm / (1 + lm) * w, axis=-1) / (np.sum(w / (1 + lm), axis=-1) + chi)
        return n0 * np.log1p(ratio) - np.sum(np.log1p(lm), axis=-1)

    fine = np.linspace(-10.0, 8.0, 20000)
    for i in range(draws):
        values = profile(fine, w2[i], chi_rest[i])
        j = int(np.argmax(values))
        bounds = (fine[max(j - 1, 0)], fine[min(j + 1, fine.size - 1)])
        best = minimize_scalar(lambda t: -profile(t, w2[i], chi_rest[i]), bounds=bounds,
                               method="bounded", options={"xatol": 1e-10})
        expected = max(0.0, values[j], -best.fun)
        assert ours[i] == pytest.approx(expected, abs=1e-8), i
    assert 0 < np.mean(ours > 0) < 1  # both cases (sup at λ = 0 and inside) were exercised


def test_rlrt_of_a_zero_variance_is_one():
    case = load_case("dyestuff2_reml")
    out = lmm_jax.rlrt(lmm_jax.fit(case["formula"], case_data(case)))
    assert out["statistic"] <= 1e-8 and out["p_value"] == 1.0 and out["nsim"] == 0
    assert out["p_value_text"] == "1"


def test_rlrt_p_value_text_bounds_a_zero_share_by_one_over_nsim():
    """No draw above the statistic is p < 1/nsim, not p = 0 (RLRsim 3.1-8 prints format.pval's
    "< 2.2e-16" there); p_value stays the share of draws, 0.0."""
    assert p_value_text(0.0, 10000) == "< 1e-04"
    assert p_value_text(0.0, 500) == "< 2e-03"
    assert p_value_text(0.004346, 10000) == "0.004346"


def test_rlrt_refusals(sleep_fits, pastes_two_terms):
    with pytest.raises(ValueError, match="REML"):
        lmm_jax.rlrt(sleep_fits[SLEEP_REDUCED, "ML"])
    with pytest.raises(NotImplementedError, match="one variance"):  # refused before any fit is read:
        lmm_jax.rlrt(lmm_jax.Model(sleep_fits[SLEEP_FULL, "ML"].design, "REML"))  # a Model will do
    with pytest.raises(ValueError, match="nsim"):
        lmm_jax.rlrt(sleep_fits[SLEEP_REDUCED, "REML"], nsim=0)
    with pytest.raises(ValueError, match=r"say which one.*\(1 \| batch\)"):
        lmm_jax.rlrt(pastes_two_terms)
    with pytest.raises(ValueError, match="matches no random term.*batch:cask"):
        lmm_jax.rlrt(pastes_two_terms, term="(1 | plate)")


# ----- exact F ---------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, formula, term", [
    ("dyestuff_exact_f", "Yield ~ 1 + (1 | Batch)", None),
    ("pastes_exact_f_cask", "strength ~ 1 + (1 | batch/cask)", "(1 | batch:cask)"),
    ("pastes_exact_f_cask", PASTES_TWO_TERMS, "batch:cask"),
])
def test_exact_f_matches_two_ols_fits(case_id, formula, term):
    case = load_case(case_id)
    out = lmm_jax.exact_f_test(formula, case_data(case), term=term)
    assert (out["df1"], out["df2"]) == (case["df1"], case["df2"])
    assert out["F"] == pytest.approx(case["F"], rel=1e-8)
    assert out["p_value"] == pytest.approx(case["p_value"], rel=1e-6)


def test_exact_f_unbalanced_with_a_covariate():
    # R 4.2.2: anova(lm(MathAch ~ SES, d), lm(MathAch ~ SES + factor(School), d))
    out = lmm_jax.exact_f_test("MathAch ~ SES + (1 | School)", lmm_jax.datasets.load("mathachieve"))
    assert (out["df1"], out["df2"]) == (159, 7024)
    assert out["F"] == pytest.approx(6.07192718860326, rel=1e-8)
    assert out["p_value"] == pytest.approx(2.01884336721343e-106, rel=1e-6)


def test_exact_f_refusals():
    pastes = lmm_jax.datasets.load("pastes")
    with pytest.raises(ValueError, match=r"\(1 \| plate\).*available.*\(1 \| batch\)"):
        lmm_jax.exact_f_test(PASTES_TWO_TERMS, pastes, term="(1 | plate)")
    with pytest.raises(ValueError, match="confounded"):  # sample is cask within batch
        lmm_jax.exact_f_test("strength ~ 1 + (1 | sample) + (1 | batch:cask)", pastes,
                             term="(1 | batch:cask)")


# ----- compare ---------------------------------------------------------------------------
def test_compare_refits_reml_with_ml_as_lme4(sleep_fits):
    reduced_reml = sleep_fits[SLEEP_REDUCED, "REML"]
    with pytest.warns(UserWarning, match="refitting model"):
        table = lmm_jax.compare(sleep_fits[SLEEP_FULL, "ML"], reduced_reml, names=["b", "a"])
    assert reduced_reml.method == "REML"  # inputs untouched
    assert list(table.index) == ["a", "b"] and table.attrs["refitted"]
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df",
                                   "Pr(>Chisq)"]
    for row, case_id in (("a", "sleepstudy_intercept_ml"), ("b", "sleepstudy_ml")):
        case = load_case(case_id)
        assert table.loc[row, "npar"] == case["df_model"]
        for column in ("AIC", "BIC"):
            assert abs(table.loc[row, column] - case[column.lower()]) <= 2e-4
        assert abs(table.loc[row, "logLik"] - case["loglik"]) <= 1e-4
    lrt = load_case("sleepstudy_lrt_slope")
    assert abs(table.loc["b", "Chisq"] - lrt["statistic"]) <= 2e-4
    assert table.loc["b", "Df"] == lrt["df"] and np.isnan(table.loc["a", "Chisq"])
    assert table.loc["b", "Pr(>Chisq)"] == pytest.approx(lrt["p_chisq"], rel=1e-4)


def test_compare_refits_residual_structures_and_linear_models(sleep_fits, sleepstudy):
    """REML fits with residual structures are refitted with them: the refit built a plain
    Model of the design, which dropped the AR(1) correlation (Chisq 123.04 where nlme gives
    58.36) and failed for the linear model (an empty theta). nlme 3.1-162's anova(g1, g2) of
    lme(weight ~ Time [* Diet], random = ~1 | Rat, correlation = corAR1(form = ~1 | Rat),
    method = "ML") on bodyweight: logLik -604.357053678 and -575.178179002, L.Ratio
    58.3577493521 on 4 df; lme4's anova(lmer(Reaction ~ Days + (Days | Subject)),
    lm(Reaction ~ Days)): logLik -950.1465282 for the linear model, Chisq 148.35371 on 3 df."""
    data = lmm_jax.datasets.load("bodyweight")
    fits = [lmm_jax.fit(f"weight ~ {fixed} + (1 | Rat)", data, correlation="ar1(~ 1 | Rat)")
            for fixed in ("Time", "Time * Diet")]
    with pytest.warns(UserWarning, match="refitting model"):
        table = lmm_jax.compare(*fits, names=["g1", "g2"])
    assert [fit.method for fit in fits] == ["REML", "REML"]
    np.testing.assert_allclose(table["logLik"], [-604.357053678, -575.178179002], atol=1e-4)
    assert abs(table.loc["g2", "Chisq"] - 58.3577493521) <= 2e-4 and table.loc["g2", "Df"] == 4
    linear = lmm_jax.fit("Reaction ~ Days", sleepstudy)
    with pytest.warns(UserWarning, match="refitting model"):
        table = lmm_jax.compare(linear, sleep_fits[SLEEP_FULL, "ML"], names=["lm", "full"])
    assert abs(table.loc["lm", "logLik"] - (-950.1465282)) <= 1e-4
    assert abs(table.loc["full", "Chisq"] - 148.35371) <= 2e-4 and table.loc["full", "Df"] == 3


def test_compare_refusals(sleep_fits, sleepstudy):
    with pytest.raises(ValueError, match="at least two"):
        lmm_jax.compare(sleep_fits[SLEEP_FULL, "ML"])
    other_data = lmm_jax.fit(SLEEP_REDUCED, other_response(sleepstudy), method="ML")
    with pytest.raises(ValueError, match="same data"):
        lmm_jax.compare(other_data, sleep_fits[SLEEP_FULL, "ML"])


def test_linear_model_as_the_null_of_an_lrt():
    """A formula without random terms is the linear model (R: logLik(lm(Yield ~ 1, dyestuff))
    = -166.364942987, with REML = TRUE -163.011616078), and lme4's anova(lmer(ML), lm) gives
    Chisq 5.4028 on 1 df, p 0.0201 for the Batch variance."""
    data = case_data(load_case("dyestuff_ml"))
    reduced = lmm_jax.fit("Yield ~ 1", data, method="ML")
    assert abs(reduced.loglik - (-166.364942987)) < 1e-6 and reduced.df_model == 2
    assert abs(lmm_jax.fit("Yield ~ 1", data).loglik - (-163.011616078)) < 1e-6
    assert "Linear model fit by maximum likelihood" in reduced.summary()
    out = lmm_jax.lrt(reduced, lmm_jax.fit("Yield ~ 1 + (1 | Batch)", data, method="ML"))
    assert abs(out["statistic"] - 2 * (load_case("dyestuff_ml")["loglik"] + 166.364942987)) < 2e-4
    assert out["df"] == 1 and abs(out["p_value_boundary"] - out["p_value"] / 2) < 1e-12


def test_lrt_of_fits_whose_residual_structures_differ_says_so():
    """gls against gls + car1: the mixture text read "χ²(0): no variance on the boundary ();
    its largest degrees of freedom differ from df = 1: not applied" (an audit); it now says
    that no boundary mixture is derived for residual-structure parameters, and the naive p is
    nlme's anova()'s."""
    from scipy import stats

    data = lmm_jax.datasets.load("bodyweight")
    plain = lmm_jax.fit("weight ~ Time * Diet", data)
    car1 = lmm_jax.fit("weight ~ Time * Diet", data, correlation="car1(~ Time | Rat)")
    out = lmm_jax.lrt(plain, car1)
    assert out["df"] == 1 and out["p_value_boundary"] is None
    assert "residual structures" in out["mixture"] and "χ²(0)" not in out["mixture"]
    assert out["p_value"] == pytest.approx(stats.chi2.sf(out["statistic"], 1), rel=1e-12)
    assert out["statistic"] == pytest.approx(2 * (car1.loglik - plain.loglik), rel=1e-12)


# nlme 3.1-162: anova(gls(weight ~ Time * Diet, BodyWeight),
#                     gls(weight ~ Time * Diet, BodyWeight, correlation = corCAR1(form = ~ Time | Rat)))
BODYWEIGHT_GLS_ANOVA = {"AIC": [1739.11254013, 1168.08804835], "BIC": [1761.06312919, 1193.17443585],
                        "logLik": [-862.556270065, -576.044024177], "L.Ratio": 573.024491776}


def test_compare_without_refit_is_nlmes_anova_of_reml_fits():
    """nlme compares REML fits of different residual structures as they are; compare()
    refitted them with ML (lme4's rule: 28.97 against nlme's 29.28 on an audit's data).
    lme4's refit=False now keeps them, and refuses REML fits with different fixed effects."""
    data = lmm_jax.datasets.load("bodyweight")
    plain = lmm_jax.fit("weight ~ Time * Diet", data)
    car1 = lmm_jax.fit("weight ~ Time * Diet", data, correlation="car1(~ Time | Rat)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "refitting model(s) with ML" warning
        table = lmm_jax.compare(plain, car1, refit=False)
    assert not table.attrs["refitted"]
    for column in ("AIC", "BIC", "logLik"):
        np.testing.assert_allclose(table[column], BODYWEIGHT_GLS_ANOVA[column], rtol=1e-9)
    np.testing.assert_allclose(table["Chisq"].iloc[1], BODYWEIGHT_GLS_ANOVA["L.Ratio"], rtol=1e-8)
    smaller = lmm_jax.fit("weight ~ Time + Diet", data)
    with pytest.raises(ValueError, match="different fixed effects"):
        lmm_jax.compare(smaller, car1, refit=False)
