"""The result object's exported keys and printed summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import lmm_jax

KEYS = {"formula", "method", "nobs", "converged", "convergence", "fixed", "sigma", "theta", "varcorr", "loglik",
        "df_model", "aic", "bic", "deviance", "reml_criterion", "singular", "ranef", "correlation_parameters",
        "variance_function", "structure_parameters"}


def test_to_dict_keys_and_json(sleepstudy):
    out = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy).to_dict()
    assert set(out) == KEYS
    assert set(out["fixed"]) == {"names", "estimate", "se", "vcov", "df_satterthwaite", "t", "p_satterthwaite",
                                 "df_kenward_roger", "t_kenward_roger", "p_kenward_roger"}
    assert set(out["ranef"]["Subject"]) == {"levels", "terms", "values", "cond_sd"}
    assert out["deviance"] is None and out["reml_criterion"] > 0
    assert out["correlation_parameters"] is None and out["variance_function"] is None
    assert json.loads(json.dumps(out)) == out


def test_summary_of_a_singular_ml_fit():
    """lme4 says "boundary (singular) fit" when it fits (a message), and in the summary."""
    with pytest.warns(UserWarning, match="boundary \\(singular\\) fit"):
        result = lmm_jax.fit("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff2"), method="ML",
                             data_name="dyestuff2")
    text = result.summary()
    assert result.singular
    assert "Linear mixed model fit by maximum likelihood" in text
    assert "boundary (singular) fit" in text
    assert " Batch    (Intercept)  0.00    0.000\n Residual             13.35    3.653\n" in text  # lme4 1.1-31
    assert "-1.79501 -0.79398 -0.08228  0.68033  2.12645" in text  # zapsmall(5 digits), printed with 4
    assert "Number of obs: 30, groups:  Batch, 6" in text
    assert result.to_dict()["deviance"] == result.objective and result.reml_criterion is None


def test_summary_prints_the_digits_lme4_prints(sleepstudy):
    """Lines of lme4 1.1-31's summary(): Variance and Std.Dev. columns printed as R prints a
    vector with 4 digits (612.1 / 24.74 before), and a response on a small scale printed in
    scientific notation by printCoefmat's rules (Days 0.000010 0.000002 before: 1 digit)."""
    text = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy).summary()
    assert "          Days         35.07    5.922   0.07\n Residual             654.94   25.592\n" in text
    assert "(Intercept)  251.405      6.825  36.838\nDays          10.467      1.546   6.771\n" in text
    small = lmm_jax.fit("R2 ~ Days + (Days | Subject)", sleepstudy.assign(R2=sleepstudy["Reaction"] / 1e6))
    assert "(Intercept) 2.514e-04  6.825e-06  36.838\nDays        1.047e-05  1.546e-06   6.771\n" in small.summary()


def test_fixed_effect_correlation_headings_are_distinct():
    """Headings abbreviated one by one repeated (four columns headed 'f()[T.' on an audit's
    data set); R's abbreviate() lengthens colliding ones until they differ. Above 12
    coefficients lme4 prints a note instead of the table."""
    data = lmm_jax.datasets.load("bodyweight")
    text = lmm_jax.fit("weight ~ factor(Time) + (1 | Rat)", data).summary()
    table = text.split("Correlation of Fixed Effects:\n")[1].splitlines()
    headings = table[0].split()
    assert len(headings) == 10 and len(set(headings)) == 10
    big = lmm_jax.fit("weight ~ factor(Time) + Diet + (1 | Rat)", data).summary()
    assert "Correlation matrix not shown by default, as p = 13 > 12." in big


def test_summary_names_its_data_as_lme4_does(sleepstudy):
    """lme4 prints `Data: d` for lmer(f, d); the line was missing unless data_name= was given."""
    sleep = sleepstudy.copy()
    sleep.attrs = {}
    assert "\n   Data: sleep\n" in lmm_jax.fit("Reaction ~ Days + (1 | Subject)", sleep).summary()


def test_data_names_in_order_of_precedence():
    """data_name= given; else the caller's one variable bound to the data; else attrs["name"]
    (set by datasets.load); else none."""
    from lmm_jax.data_names import data_name_of

    bodyweight = lmm_jax.datasets.load("bodyweight")
    assert bodyweight.attrs["name"] == "bodyweight"
    assert data_name_of(bodyweight, "given") == "given"
    assert data_name_of(bodyweight, None) == "bodyweight"
    rats = bodyweight
    assert data_name_of(rats, None) == "bodyweight"  # two variables: which is ambiguous
    assert data_name_of(lmm_jax.datasets.load("dyestuff"), None) == "dyestuff"
    _hidden = pd.DataFrame({"y": [1.0, 2.0]})
    assert data_name_of(_hidden, None) is None
    assert data_name_of({"y": [1.0, 2.0]}, None) is None


# lme4 1.1-31: print(summary(lmer(weight ~ Diet * Time + (1 | Rat), bodyweight))), blanks kept
BODYWEIGHT_CORRELATION = """Correlation of Fixed Effects:
            (Intr) DietD2 DietD3 Time   DtD2:T
DietD2      -0.577                            
DietD3      -0.577  0.333                     
Time        -0.090  0.052  0.052              
DietD2:Time  0.052 -0.090 -0.030 -0.577       
DietD3:Time  0.052 -0.030 -0.090 -0.577  0.333
"""


def test_fixed_effect_correlation_table_is_lme4s_print():
    """Headings abbreviated from R's names (`DietD2`, not formulaic's `Diet[T.D2]`, which
    gave `Dt[T.D2]`), columns left-aligned as R prints a character matrix."""
    text = lmm_jax.fit("weight ~ Diet * Time + (1 | Rat)", lmm_jax.datasets.load("bodyweight")).summary()
    assert text.endswith(BODYWEIGHT_CORRELATION)


def test_summary_of_a_weighted_fit_names_its_weights(sleepstudy):
    """lme4 1.1-31 prints 'Weights: w' under the formula (its REML criterion here 1734.3)."""
    import numpy as np

    data = sleepstudy.assign(w=np.linspace(0.5, 2.0, len(sleepstudy)))
    text = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", data, weights="w", data_name="d").summary()
    assert "   Data: d\nWeights: w\n\nREML criterion at convergence: 1734.3\n" in text
    plain = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy).summary()
    assert "Weights:" not in plain


def test_varcorr_is_lme4s_as_data_frame(fitted):
    """lme4 1.1-31's as.data.frame(VarCorr(m)) for sleepstudy (Days | Subject), REML
    (tests/reference/sleepstudy_reml.json): columns grp, var1, var2, vcov, sdcor, NA (None
    here) where lme4 has NA, the covariance row after the variances, Residual last."""
    case, result = fitted("sleepstudy_reml")
    frame = result.varcorr()
    assert list(frame.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert frame[["grp", "var1", "var2"]].to_numpy().tolist() == [
        ["Subject", "(Intercept)", None], ["Subject", "Days", None], ["Subject", "(Intercept)", "Days"],
        ["Residual", None, None]]
    np.testing.assert_allclose(frame["vcov"], [r["vcov"] for r in case["varcorr"]], rtol=1e-4)
    np.testing.assert_allclose(frame["sdcor"], [r["sdcor"] for r in case["varcorr"]], rtol=1e-4)
    assert result.to_dict()["varcorr"][2] == {"group": "Subject", "var1": "(Intercept)", "var2": "Days",
                                              "vcov": frame["vcov"][2], "sdcor": frame["sdcor"][2]}


def test_ranef_cov_is_lme4s_postvar(sleepstudy, fitted):
    """lme4 1.1-31 (R 4.2.2), sleepstudy without every 7th row (unbalanced, so levels differ):
    attr(ranef(m, condVar = TRUE)$Subject, "postVar")[, , l] for levels 308, 309 and 372
    (lme4's θ differs from ours in the 5th digit, its optimiser's tolerance: rtol 1e-4).
    For (Days || Subject) lme4's postVar is a list of one array per term; here one entry
    per term, named as in varcorr(), holding lme4's conditional variances
    (tests/reference/sleepstudy_uncorrelated_reml.json: cond_sd squared)."""
    result = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy.drop(index=sleepstudy.index[::7]))
    cov = result.ranef_cov()
    assert list(cov) == ["Subject"] and cov["Subject"].shape == (18, 2, 2)
    np.testing.assert_allclose(cov["Subject"][[0, 1, 17]], [
        [[165.9559721493, -25.9434361102], [-25.9434361102, 5.87900655664]],
        [[126.1007701909, -18.7347532486], [-18.7347532486, 4.39053930215]],
        [[122.7080501791, -18.3843206761], [-18.3843206761, 4.41520477283]]], rtol=1e-4)
    cond_sd = result.ranef(cond_sd=True)["Subject"]
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov["Subject"], axis1=1, axis2=2)), cond_sd, rtol=1e-12)
    case, uncorrelated = fitted("sleepstudy_uncorrelated_reml")
    cov = uncorrelated.ranef_cov()
    assert list(cov) == ["Subject", "Subject.1"] and cov["Subject.1"].shape == (18, 1, 1)
    lme4_sd = np.asarray(case["ranef"]["Subject"]["cond_sd"])
    np.testing.assert_allclose(cov["Subject"][:, 0, 0], lme4_sd[:, 0] ** 2, rtol=1e-4)
    np.testing.assert_allclose(cov["Subject.1"][:, 0, 0], lme4_sd[:, 1] ** 2, rtol=1e-4)
