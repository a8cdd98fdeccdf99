"""The result object's exported keys and printed summary."""

from __future__ import annotations

import json

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


def test_summary_of_a_weighted_fit_names_its_weights(sleepstudy):
    """lme4 1.1-31 prints 'Weights: w' under the formula (its REML criterion here 1734.3)."""
    import numpy as np

    data = sleepstudy.assign(w=np.linspace(0.5, 2.0, len(sleepstudy)))
    text = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", data, weights="w", data_name="d").summary()
    assert "   Data: d\nWeights: w\n\nREML criterion at convergence: 1734.3\n" in text
    plain = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy).summary()
    assert "Weights:" not in plain
