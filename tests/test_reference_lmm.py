"""Every `kind: lmm` reference case (lme4 1.1-31) reproduced by `lmm_jax.fit`.

Tolerances are shared/reference/README.md's: fixed effects, SEs and variance components
1e-4 relative (a zero variance: 1e-6 of the response's variance, absolute),
log-likelihoods 1e-4 absolute, conditional modes and SDs 1e-3 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cases_of_kind

LMM_CASES = cases_of_kind("lmm")
SLOW_CASES = {"insteval_crossed_reml"}
PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in LMM_CASES]


def assert_rel(actual, expected, rtol, what, atol=0.0):
    """|actual - expected| <= atol + rtol |expected| elementwise (atol may be an array)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, what
    bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    assert not bad.any(), f"{what}: {actual[bad][:5]} != {expected[bad][:5]}"


@pytest.mark.parametrize("case_id", PARAMS)
def test_fixed_effects(fitted, case_id):
    case, result = fitted(case_id)
    out = result.to_dict()
    assert len(out["fixed"]["names"]) == len(case["fixed"]["names"])
    assert_rel(out["fixed"]["estimate"], case["fixed"]["estimate"], 1e-4, "fixed effects")
    assert_rel(out["fixed"]["se"], case["fixed"]["se"], 1e-4, "standard errors")
    assert_rel(out["fixed"]["vcov"], case["fixed"]["vcov"], 1e-4, "vcov", atol=1e-4 * np.max(np.abs(case["fixed"]["vcov"])))


@pytest.mark.parametrize("case_id", PARAMS)
def test_variance_components(fitted, case_id):
    case, result = fitted(case_id)
    out = result.to_dict()
    zero_atol = 1e-6 * np.var(result.design.y, ddof=1)
    assert [(r["group"], r["var1"], r["var2"]) for r in out["varcorr"]] == \
        [(r["group"], r["var1"], r["var2"]) for r in case["varcorr"]]
    for mine, ref in zip(out["varcorr"], case["varcorr"]):
        if ref["var2"] is None:
            atol = zero_atol if ref["vcov"] == 0 else 0.0
            assert_rel(mine["vcov"], ref["vcov"], 1e-4, f"variance {ref}", atol=atol)
            assert_rel(mine["sdcor"], ref["sdcor"], 1e-4, f"SD {ref}", atol=np.sqrt(atol))
        else:
            assert_rel(mine["sdcor"], ref["sdcor"], 1e-4, f"correlation {ref}", atol=1e-4)
    assert_rel(out["sigma"], case["sigma"], 1e-4, "sigma")
    assert out["singular"] == case["singular"]
    assert_rel(out["theta"], case["theta"], 1e-4, "theta", atol=1e-6)


@pytest.mark.parametrize("case_id", PARAMS)
def test_likelihood_and_criteria(fitted, case_id):
    case, result = fitted(case_id)
    out = result.to_dict()
    assert out["nobs"] == case["nobs"]
    assert out["df_model"] == case["df_model"]
    assert out["converged"]
    for key in ("loglik", "aic", "bic"):
        assert abs(out[key] - case[key]) < 1e-4 * max(1.0, abs(case[key]) * 1e-3), key
    for key in ("deviance", "reml_criterion"):
        if case[key] is None:
            assert out[key] is None
        else:
            assert abs(out[key] - case[key]) < 2e-4, key


@pytest.mark.parametrize("case_id", PARAMS)
def test_conditional_modes(fitted, case_id):
    case, result = fitted(case_id)
    out = result.to_dict()["ranef"]
    assert list(out) == list(case["ranef"])
    for group, ref in case["ranef"].items():
        mine = out[group]
        assert mine["terms"] == ref["terms"]
        assert sorted(mine["levels"]) == sorted(ref["levels"])
        order = [mine["levels"].index(level) for level in ref["levels"]]
        for key in ("values", "cond_sd"):
            expected = np.asarray(ref[key], float)
            actual = np.asarray(mine[key], float)[order]
            scale = np.max(np.abs(expected), axis=0, keepdims=True)
            assert_rel(actual, expected, 1e-3, f"{group} {key}", atol=1e-3 * scale + 1e-12)
