"""The result object's exported keys and printed summary."""

from __future__ import annotations

import json

import lmm_jax

KEYS = {"formula", "method", "nobs", "converged", "fixed", "sigma", "theta", "varcorr", "loglik",
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
    result = lmm_jax.fit("Yield ~ 1 + (1 | Batch)", lmm_jax.datasets.load("dyestuff2"), method="ML",
                         data_name="dyestuff2")
    text = result.summary()
    assert result.singular
    assert "Linear mixed model fit by maximum likelihood" in text
    assert "boundary (singular) fit" in text
    assert " Batch    (Intercept) 0        0" in text
    assert "Number of obs: 30, groups:  Batch, 6" in text
    assert result.to_dict()["deviance"] == result.objective and result.reml_criterion is None
