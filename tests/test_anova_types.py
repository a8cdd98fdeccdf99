"""anova(type = 1 | 2 | 3) against lmerTest 3.1-3 (R 4.2.2, lme4 1.1-31, pbkrtest 0.5.2).

d <- read.csv("bodyweight.csv") with Diet and Rat as factors;
u <- d[!(d$Diet == "D1" & d$Time > 43), ] (unbalanced: Time and Diet correlated, so the three
types differ); as.data.frame(anova(m, type = t, ddf = ddf)) for t in 1:3 and both ddf.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lmm_jax
from conftest import bodyweight_missing_cell

DF_RTOL = 2e-3  # lmerTest's own df are numerical (as test_small_sample)
FIT_RTOL = 1e-5  # F carries the fits' agreement with lme4

# m <- lmer(weight ~ Diet * Time + (1 | Rat), u): F and DenDF of rows Diet, Time, Diet:Time
SATT_DF, KR_DF = [125.02358257] * 2, [125.0000115156] * 2  # of Time and Diet:Time
UNBALANCED = {
    (1, "Satterthwaite"): ([90.6465893923, 458.8086283720, 21.5936053012], [13.0094585922] + SATT_DF),
    (1, "Kenward-Roger"): ([90.6465877381, 458.8086283720, 21.5936053012], [12.9858727357] + KR_DF),
    (2, "Satterthwaite"): ([77.7151179610, 458.8086283720, 21.5936053012], [13.2858784156] + SATT_DF),
    (2, "Kenward-Roger"): ([77.7151088539, 458.8086283720, 21.5936053012], [13.2618668324] + KR_DF),
    (3, "Satterthwaite"): ([77.7151179610, 400.0650095737, 21.5936053012], [13.2858784156] + SATT_DF),
    (3, "Kenward-Roger"): ([77.7151088539, 400.0650095737, 21.5936053012], [13.2618668324] + KR_DF),
}

# lmer(weight ~ Time * Diet + (Time | Rat), d) refitted to convergence (nloptwrap, xtol_abs
# 1e-12: the default stops at max|grad| 0.017 with F 1e-4 away): rows Time, Diet, Time:Diet;
# Satterthwaite's DenDF 13.00000 (as KR's 13) for every row
RANDOM_SLOPE_F = {1: [82.59240352483, 88.07286548602, 7.57430795223],
                  2: [82.59240352483, 76.64483528163, 7.57430795223],
                  3: [94.68933298921, 76.64483528163, 7.57430795223]}
RANDOM_SLOPE_SUM_SQ = {1: [1630.839023264, 3478.108392429, 299.118961443],
                       2: [1630.839023264, 3026.801085195, 299.118961443],
                       3: [1869.700514034, 3026.801085195, 299.118961443]}


@pytest.fixture(scope="module")
def unbalanced_fit():
    data = lmm_jax.datasets.load("bodyweight")
    data = data[~((data["Diet"] == "D1") & (data["Time"] > 43))]
    return lmm_jax.fit("weight ~ Diet * Time + (1 | Rat)", data)


@pytest.mark.parametrize("contrast_type, ddf", sorted(UNBALANCED))
def test_anova_types_match_lmertest(unbalanced_fit, contrast_type, ddf):
    """Type 1 tests Diet alone, Time after Diet; type 2 each main effect after the other
    (not after Diet:Time); type 3 lmerTest's marginal contrasts."""
    table = unbalanced_fit.anova(ddf, type=contrast_type)
    F, den_df = UNBALANCED[(contrast_type, ddf)]
    assert list(table.index) == ["Diet", "Time", "Diet:Time"]
    assert table["NumDF"].tolist() == [2, 1, 2]
    np.testing.assert_allclose(table["F value"], F, rtol=FIT_RTOL)
    np.testing.assert_allclose(table["DenDF"], den_df, rtol=DF_RTOL)


def test_anova_type_spellings_and_refusals(unbalanced_fit):
    """lmerTest's spellings of the types; the default is type III; anything else refused."""
    type3 = unbalanced_fit.anova()
    for spelling in ("III", "iii", "3", np.int64(3)):
        assert unbalanced_fit.anova(type=spelling)["F value"].tolist() == type3["F value"].tolist()
    type2 = unbalanced_fit.anova(type=2)["F value"].tolist()
    assert unbalanced_fit.anova(type="II")["F value"].tolist() == type2
    for bad in (4, "IV", 2.0, True, None, "type2"):
        with pytest.raises(ValueError, match="type must be 1, 2 or 3"):
            unbalanced_fit.anova(type=bad)


@pytest.mark.slow
def test_anova_types_of_a_random_slope_model():
    data = lmm_jax.datasets.load("bodyweight")
    result = lmm_jax.fit("weight ~ Time * Diet + (Time | Rat)", data)
    for contrast_type, ddf in itertools.product((1, 2, 3), ("Satterthwaite", "Kenward-Roger")):
        table = result.anova(ddf, type=contrast_type)
        np.testing.assert_allclose(table["F value"], RANDOM_SLOPE_F[contrast_type], rtol=FIT_RTOL)
        np.testing.assert_allclose(table["Sum Sq"], RANDOM_SLOPE_SUM_SQ[contrast_type], rtol=FIT_RTOL)
        np.testing.assert_allclose(table["DenDF"], 13.0, rtol=DF_RTOL)


# the missing-cell fit of test_small_sample (Diet * wk without Diet D3 x late):
# anova(m, type = 1) and anova(m, type = 2), lmerTest 3.1-3
MISSING_CELL_F = {1: [82.80258987, 141.97771850, 20.93378741], 2: [85.31457044, 141.97771850, 20.93378741]}
MISSING_CELL_DEN_DF = {1: [13.01442878, 139.00676271, 139.00676271], 2: [13.02105657, 139.00676271, 139.00676271]}


def test_anova_types_of_a_rank_deficient_fit():
    """Types 1 and 2 use the fit's X without its dropped column, as lmerTest (lme4's X)."""
    data = bodyweight_missing_cell()
    with pytest.warns(UserWarning, match="rank deficient"):
        result = lmm_jax.fit("weight ~ Diet * wk + (1 | Rat)", data)
    for contrast_type in (1, 2):
        table = result.anova(type=contrast_type)
        assert table["NumDF"].tolist() == [2, 2, 3]
        np.testing.assert_allclose(table["F value"], MISSING_CELL_F[contrast_type], rtol=FIT_RTOL)
        np.testing.assert_allclose(table["DenDF"], MISSING_CELL_DEN_DF[contrast_type], rtol=DF_RTOL)
