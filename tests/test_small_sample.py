"""Satterthwaite and Kenward-Roger inference for β against lmerTest 3.1-3 / pbkrtest 0.5.2.

Per-coefficient df, t and p of every `lmm` reference case (lmerTest's df come from a
numerical Hessian: 2e-3 relative, shared/reference/README.md); contrast F tests and type III
ANOVA tables pinned to Rscript output of lmerTest's `contest` and `anova` on the same data.
"""

from __future__ import annotations

import numpy as np
import pytest

import lmm_jax
from conftest import bodyweight_missing_cell, cases_of_kind

DF_RTOL = 2e-3  # lmerTest's own df are numerical
FIT_RTOL = 1e-4  # F and sums of squares carry the fits' 1e-4 agreement with lme4
FAST_CASES = {"dyestuff2_reml", "dyestuff_ml", "dyestuff_reml", "sleepstudy_reml"}  # the rest: slow (compiles)
CASES = [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow) for c in cases_of_kind("lmm")]
KEYS = ("df_satterthwaite", "t", "p_satterthwaite", "df_kenward_roger", "p_kenward_roger")


@pytest.mark.parametrize("case_id", CASES)
def test_coefficient_tests_match_lmertest(case_id, fitted):
    case, result = fitted(case_id)
    ours, ref = result.to_dict()["fixed"], case["fixed"]
    for key in KEYS:
        if ref[key] is None:  # ML fits have no KR; for insteval pbkrtest (dense n x n) was not run
            if case["method"] == "ML":
                assert ours[key] is None, f"{key}: KR is for REML fits only"
            continue
        np.testing.assert_allclose(ours[key], ref[key], rtol=DF_RTOL, err_msg=key)


def test_singular_fit_uses_lmertest_scale(fitted):
    """dyestuff2: σ_Batch = 0. On lmerTest's (θ, σ) scale ∂Var(β̂)/∂θ = 0 there, so its df are
    n - 1 = 29; Kenward-Roger's (on the variance scale) are the a - 1 = 5 of the balanced design."""
    case, result = fitted("dyestuff2_reml")
    fixed = result.to_dict()["fixed"]
    assert result.singular
    np.testing.assert_allclose(fixed["df_satterthwaite"], [29.0], rtol=1e-8)
    np.testing.assert_allclose(fixed["df_kenward_roger"], [5.0], rtol=1e-6)


def test_contrast_tests_match_contest(fitted):
    """lmerTest::contest(m, L) and contest(m, L, ddf = "Kenward-Roger") on sleepstudy."""
    _, result = fitted("sleepstudy_reml")
    one = result.test([0, 1])
    np.testing.assert_allclose([one["F"], one["den_df"], one["p_value"]],
                               [45.8529615558586, 16.9999837255917, 3.26382446992738e-06], rtol=DF_RTOL)
    assert one["num_df"] == 1 and one.name == "Satterthwaite" and one.dtype == float
    same = result.test({"Days": 1.0})
    assert same["F"] == pytest.approx(one["F"], rel=1e-12)
    two = result.test(np.eye(2))
    np.testing.assert_allclose([two["F"], two["den_df"]], [749.950453899299, 16.9998460493499], rtol=FIT_RTOL)
    kr = result.test(np.eye(2), ddf="Kenward-Roger")
    np.testing.assert_allclose([kr["F"], kr["den_df"]], [705.835721316987, 16.0000000000003], rtol=FIT_RTOL)
    assert kr["num_df"] == 2 and kr["p_value"] < 1e-15
    # an object Series (the method's name among the numbers) printed this p-value as 0.0
    assert kr.name == "Kenward-Roger" and f"{kr['p_value']:e}" in str(kr)


@pytest.mark.slow
def test_mathachieve_contrast_and_anova(fitted):
    """contest() of three coefficients and lmerTest's type III anova(m): cSES is contained in
    cSES:Sector, so its contrast is cSES + ½ cSES:SectorPublic (lmerTest's type III)."""
    _, result = fitted("mathachieve_reml")
    L = np.zeros((3, 5))
    L[0, 1] = L[1, 2] = L[2, 4] = 1.0
    satt, kr = result.test(L), result.test(L, ddf="KR")
    np.testing.assert_allclose([satt["F"], satt["den_df"]], [135.718046398332, 152.996794432338], rtol=FIT_RTOL)
    np.testing.assert_allclose([kr["F"], kr["den_df"]], [134.360275353852, 172.349739278508], rtol=FIT_RTOL)
    table = result.anova()
    assert list(table.index) == ["cSES", "Sector", "MEANSES", "cSES:Sector"]
    np.testing.assert_allclose(table["Sum Sq"], [11899.408291006, 605.703916860, 7447.212445003, 1209.300616121],
                               rtol=FIT_RTOL)
    np.testing.assert_allclose(table["DenDF"], [152.9728790257, 149.7125168654, 151.2735797809, 152.9701215740],
                               rtol=DF_RTOL)
    kr_table = result.anova(ddf="Kenward-Roger")
    np.testing.assert_allclose(kr_table["F value"], [323.16955, 16.47237, 200.38337, 32.84152], rtol=FIT_RTOL)
    np.testing.assert_allclose(kr_table["DenDF"], [145.3454867822, 154.5358902422, 155.8007802434, 145.3412528334],
                               rtol=DF_RTOL)


def test_anova_single_term(fitted):
    """sleepstudy: lmerTest's anova(m) (one term: type I)."""
    _, result = fitted("sleepstudy_reml")
    for ddf in ("Satterthwaite", "Kenward-Roger"):
        table = result.anova(ddf)
        np.testing.assert_allclose(table.loc["Days", ["Sum Sq", "F value", "Pr(>F)"]].to_numpy(float),
                                   [30030.93902014, 45.85296, 3.2638e-06], rtol=FIT_RTOL)
        assert table.loc["Days", "DenDF"] == pytest.approx(17.0, rel=DF_RTOL)


@pytest.mark.slow
def test_anova_uncontained_terms(fitted):
    """Orthodont: Sex and age:Sex are not contained in another term, so their type III tests
    are the coefficients' t tests."""
    case, orthodont = fitted("orthodont_reml")
    rows = orthodont.anova().loc[["Sex", "age:Sex"]]
    ref = case["fixed"]
    np.testing.assert_allclose(rows["DenDF"], ref["df_satterthwaite"][2:], rtol=DF_RTOL)
    np.testing.assert_allclose(rows["F value"], np.square(ref["t"][2:]), rtol=FIT_RTOL)


def test_bad_contrasts_are_refused(fitted):
    _, result = fitted("sleepstudy_reml")
    with pytest.raises(ValueError, match="shape"):
        result.test([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="rank"):
        result.test([[0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="unknown fixed effects"):
        result.test({"Day": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        result.test([np.nan, 1.0])
    with pytest.raises(ValueError, match="ddf"):
        result.test([0.0, 1.0], ddf="Wald")
    _, ml = fitted("dyestuff_ml")
    with pytest.raises(ValueError, match="REML"):
        ml.test([1.0], ddf="Kenward-Roger")


def test_kenward_roger_with_a_singular_expected_information(sleepstudy):
    """(1 | Subject) + (0 + late | Subject) with a two-level factor `late` is over-
    parameterised (the intercept is the sum of late's columns), so the expected information
    on the variance scale is singular. pbkrtest 0.5.2 (KRmodcomp at this fit's θ, lme4's
    optimizer off; REML criterion 1787.32045293 on both) switches to MASS::ginv: F 1427.670554
    and 38.88443331 on 17 df. The direct inverse gave F -4527.6 for the intercept."""
    import lmm_jax

    data = sleepstudy.assign(late=np.where(sleepstudy["Days"] >= 5, "late", "early"))
    result = lmm_jax.fit("Reaction ~ late + (1 | Subject) + (0 + late | Subject)", data)
    assert -2 * result.loglik == pytest.approx(1787.32045293, abs=1e-4)
    with pytest.warns(UserWarning, match="Satterthwaite's degrees of freedom are undefined"):
        result.small_sample_terms()  # the same over-parameterisation: no Satterthwaite df
    for contrast, f_value in (([1, 0], 1427.670554), ([0, 1], 38.88443331)):
        test = result.test(contrast, ddf="Kenward-Roger")
        assert test["F"] == pytest.approx(f_value, rel=1e-6)
        assert test["den_df"] == pytest.approx(17.0, rel=1e-6)


def test_kenward_roger_with_a_singular_expected_information_at_a_boundary():
    """The same over-parameterisation, (g2 || a) = (1 | a) + (0 + g2 | a), at a boundary
    (θ = (0, 0.6748..., 0.8011..., 0): two zero variances). The derivatives are taken at
    floored θ there, and I's null eigenvalue came out ~1e-7, above pbkrtest's 1e-10 switch:
    the direct inverse gave F 64.92 and 5.978. pbkrtest 0.5.2 at this θ (lme4's optimizer
    off; REML criterion 266.238765944, below lme4's own optimum 266.559003604): F
    104.748535605 and 6.64690810069 on 11 df."""
    import pandas as pd

    import lmm_jax

    i = np.arange(96)
    g2 = np.where(i % 2 == 0, "p", "q")
    y = np.round(2 + 0.5 * (g2 == "q") + np.sin(1.3 * (i // 8)) + np.cos(2.1 * i) + 0.5 * np.sin(0.7 * i * i), 6)
    result = lmm_jax.fit("y ~ g2 + (g2 || a)", pd.DataFrame({"y": y, "a": i // 8, "g2": g2}))
    assert result.singular and result.objective == pytest.approx(266.238765944, abs=1e-6)
    np.testing.assert_allclose(result.theta, [0.0, 0.674840093445, 0.801114058309, 0.0], atol=1e-6)
    for contrast, f_value in (([1, 0], 104.748535605), ([0, 1], 6.64690810069)):
        test = result.test(contrast, ddf="Kenward-Roger")
        assert test["F"] == pytest.approx(f_value, rel=1e-6)
        assert test["den_df"] == pytest.approx(11.0, rel=1e-6)


def test_type3_anova_of_two_numeric_covariates_and_their_interaction(sleepstudy):
    """lmerTest 3.1-3's anova(m) of Reaction ~ Days * w + (1 | Subject), w = sin(0.7 i)
    rounded to 6 digits (REML criterion 1779.92306328): with numeric variables only, x is not
    contained in x:z (their numeric variables differ), so each F tests its own coefficient.
    The synthetic frame behind the contrasts had 3 rows for X's 4 columns, so the contrasts
    were a projection, not the coefficients (on an audit's data set x's F was 474.8 where
    lmerTest gives 21.2, its t²)."""
    import lmm_jax

    data = sleepstudy.assign(w=np.round(np.sin(np.arange(len(sleepstudy)) * 0.7), 6))
    result = lmm_jax.fit("Reaction ~ Days * w + (1 | Subject)", data)
    assert -2 * result.loglik == pytest.approx(1779.92306328, abs=1e-4)
    table = result.anova()
    np.testing.assert_allclose(table["F value"], [167.282464, 0.009069117423, 0.01243691337], rtol=1e-5)
    np.testing.assert_allclose(table["DenDF"], [159.0234233, 162.51833, 163.5696357], rtol=1e-3)
    np.testing.assert_allclose(table["F value"], (result.fixef / result.se).to_numpy()[1:] ** 2, rtol=1e-10)


def test_type3_anova_of_an_interaction_without_its_factor_main_effect(sleepstudy):
    """lmerTest 3.1-3's anova(m) of Reaction ~ w + Days + Days:late + (1 | Subject) (late =
    Days >= 5, w as above; REML criterion 1778.34725): in R's factors table Days:late has late
    at 1 and Days at 2 (no `late` term), so lmerTest does not count Days as contained in
    Days:late and tests Days' own coefficient. The old containment rule (every variable)
    tested Days averaged over late."""
    import lmm_jax

    data = sleepstudy.assign(w=np.round(np.sin(np.arange(len(sleepstudy)) * 0.7), 6),
                             late=np.where(sleepstudy["Days"] >= 5, "late", "early"))
    result = lmm_jax.fit("Reaction ~ w + Days + Days:late + (1 | Subject)", data)
    assert -2 * result.loglik == pytest.approx(1778.34725, abs=1e-4)
    table = result.anova()
    np.testing.assert_allclose(table["F value"], [0.0002895833151, 14.34143253, 0.9240434725], rtol=1e-5)
    np.testing.assert_allclose(table["DenDF"], [159.2151172, 159.0003164, 159.0003499], rtol=1e-3)


def test_an_indefinite_variance_parameter_covariance_gives_undefined_df():
    """(1 | Diet:Tf) beside the fixed Tf * Diet (bodyweight, Tf = Time >= 36) has no curvature
    in its variance: in an audit's run 2H⁻¹ had an eigenvalue of -1.8e18 and the df came out
    ~-7e-14 with NaN p-values and only numpy's warning. Var(ψ̂) that is not positive definite
    now gives NaN df and a warning, and so does a huge positive eigenvalue, which other
    rounding gave (the bundled data: df ~1e-14, p = 1)."""
    from lmm_jax.satterthwaite import SatterthwaiteTerms, contrast_df
    from lmm_jax.small_sample import checked_varpar

    vcov, jacobian = np.eye(2), np.ones((2, 2, 2))
    fine = SatterthwaiteTerms(vcov, jacobian, np.array([[2.0, 0.5], [0.5, 1.0]]))
    assert checked_varpar(fine) is fine
    for varpar in (np.array([[-1.8e18, 0.0], [0.0, 116.0]]), np.array([[np.nan, 0.0], [0.0, 1.0]])):
        with pytest.warns(UserWarning, match="not positive definite .* degrees of freedom are undefined"):
            checked = checked_varpar(SatterthwaiteTerms(vcov, jacobian, varpar))
        assert np.isnan(checked.vcov_varpar).all()
        assert np.isnan(contrast_df(np.array([1.0, 0.0]), checked))
    import lmm_jax

    data = lmm_jax.datasets.load("bodyweight").assign(Tf=lambda d: np.where(d["Time"] >= 36, "late", "early"))
    result = lmm_jax.fit("weight ~ Tf * Diet + (1 | Rat) + (1 | Diet:Tf)", data)
    with pytest.warns(UserWarning, match="degrees of freedom are undefined"):
        table = result.anova()
    assert np.isnan(table["DenDF"]).all() and np.isfinite(table["F value"]).all()


# lmerTest 3.1-3: d <- nlme::BodyWeight (Diet, Rat unordered factors);
# anova(lmer(weight ~ Diet * Time + (1 | Rat), d, contrasts = list(Diet = "contr.sum")))
# and the same with contr.poly, ddf = "Kenward-Roger"
BODYWEIGHT_DIET_TIME = {"F": [77.5828065675, 638.6115641784, 51.0832687931],
                        "DenDF": [13.2153090681, 157.0, 157.0]}


@pytest.mark.parametrize("coding, ddf", [("contr.sum", "Satterthwaite"), ("contr.poly", "Kenward-Roger")])
def test_type3_anova_of_a_factor_coded_otherwise_than_by_treatment(coding, ddf):
    """`C(Diet, contr.sum)` crashed anova() (IndexError: X's columns were looked up among the
    full dummy codings, which only treatment-coded columns are); lmerTest maps the
    treatment-coded contrasts to X's coding, and the table does not depend on the coding."""
    import lmm_jax

    data = lmm_jax.datasets.load("bodyweight")
    table = lmm_jax.fit(f"weight ~ C(Diet, {coding}) * Time + (1 | Rat)", data).anova(ddf=ddf)
    np.testing.assert_allclose(table["F value"], BODYWEIGHT_DIET_TIME["F"], rtol=1e-7)
    np.testing.assert_allclose(table["DenDF"], BODYWEIGHT_DIET_TIME["DenDF"], rtol=1e-6)
    treatment = lmm_jax.fit("weight ~ Diet * Time + (1 | Rat)", data).anova(ddf=ddf)
    np.testing.assert_allclose(table["F value"], treatment["F value"], rtol=1e-9)


# lmerTest 3.1-3: d <- bodyweight.csv, wk = factor(early (Time < 22) / mid (< 44) / late,
# levels early, late, mid); anova(lmer(weight ~ Diet * wk + (1 | Rat), d without Diet D3 x late))
# prints "Missing cells for: DietD3:wklate."
MISSING_CELL_ANOVA = {"F": [85.32658146, 169.14083358, 20.93378741], "DenDF": [13.02413636, 139.00676271, 139.00676271],
                      "NumDF": [2, 2, 3]}


def test_type3_anova_of_a_factorial_with_a_missing_cell():
    """anova() refused a rank-deficient fixed part; lmerTest computes its type III contrasts
    on the data's own rows (a synthetic frame of all cells has no missing cell) and warns."""
    data = bodyweight_missing_cell()
    with pytest.warns(UserWarning, match="rank deficient"):
        result = lmm_jax.fit("weight ~ Diet * wk + (1 | Rat)", data)
    with pytest.warns(UserWarning, match="Missing cells for: Diet\\[T.D3\\]:wk\\[T.late\\]"):
        table = result.anova()
    np.testing.assert_allclose(table["F value"], MISSING_CELL_ANOVA["F"], rtol=1e-7)
    np.testing.assert_allclose(table["DenDF"], MISSING_CELL_ANOVA["DenDF"], rtol=1e-6)
    assert table["NumDF"].tolist() == MISSING_CELL_ANOVA["NumDF"]
