"""The design's model matrices: formulaic materialises the fixed part and every random term's
expression in one structured call; the result must equal the part-by-part calls, and a part
that formulaic cannot build is still named in the error."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax import FormulaError, design, formula_columns, model_matrices


def _part_by_part(parsed, frame, given=None):
    return None, [None] * len(parsed.random)


@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + (Days | Subject)",
    "Reaction ~ center(Days) + I(Days ** 2) + (1 | Subject) + (0 + Days | Subject)",
    "Reaction ~ C(week) * Days + (C(week) | Subject)",
    "Reaction ~ C(week) + I(Days ** 2) + (0 + C(week) | Subject) + (0 + center(Days) | Subject)",
    "Reaction ~ center(Days) + (center(Days) | Subject)",
    "Reaction ~ Days + (1 | Subject) + (1 | week) + (Days + 1 | Subject)",
    "Days ~ Reaction + (1 | Subject)",
    "np.log(Reaction) ~ Days + (1 | Subject)",
])
def test_one_structured_call_equals_the_part_by_part_calls(sleepstudy, formula, monkeypatch):
    data = sleepstudy.assign(week=np.where(sleepstudy["Days"] < 5, "first", "second"))
    together = design.build_design(formula, data)
    monkeypatch.setattr(design, "formula_matrices", _part_by_part)
    apart = design.build_design(formula, data)
    assert together.fixed_names == apart.fixed_names
    np.testing.assert_array_equal(together.X, apart.X)
    np.testing.assert_array_equal(together.y, apart.y)
    # the specs rebuild the same matrices on new rows (prediction): rows of one level of
    # `week` and a few days, so levels or a centring learnt from them would differ
    new_rows = data[(data["week"] == "second") & (data["Days"] > 6)]
    _assert_same_matrix(together.fixed_spec, apart.fixed_spec, new_rows)
    assert len(together.terms) == len(apart.terms) == formula.count("|")
    for a, b in zip(together.terms, apart.terms):
        assert (a.name, a.column_names, a.levels) == (b.name, b.column_names, b.levels)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.codes, b.codes)
        _assert_same_matrix(a.model_spec, b.model_spec, new_rows)


def _assert_same_matrix(spec, reference_spec, rows):
    matrix, reference = spec.get_model_matrix(rows), reference_spec.get_model_matrix(rows)
    assert list(matrix.model_spec.column_names) == list(reference.model_spec.column_names)
    np.testing.assert_array_equal(np.asarray(matrix, dtype=float), np.asarray(reference, dtype=float))


def test_an_expression_seen_before_is_materialised_once(sleepstudy, monkeypatch):
    """`Days` repeats the fixed part's terms (1 + Days) and the second `1` the first: formulaic
    is asked for the fixed part and one random part only, and the terms still get their
    matrices (equal to the part-by-part build: the test above)."""
    asked = []
    materialise = model_matrices.materialise
    monkeypatch.setattr(model_matrices, "materialise",
                        lambda formula, frame, given=None: asked.append(formula) or materialise(formula, frame, given))
    data = sleepstudy.assign(week=np.where(sleepstudy["Days"] < 5, "first", "second"))
    built = design.build_design("Reaction ~ Days + (Days | Subject) + (1 | week) + (1 | Subject)", data)
    assert len(asked) == 1
    assert [hasattr(asked[0], part) for part in ("fixed", "random0", "random1", "random2")] == [True, False, True, False]
    # lme4's order (levels 18, 2, 18: rev(order(nl))): (1 | Subject), (Days | Subject), (1 | week)
    assert [t.column_names for t in built.terms] == [("(Intercept)",), ("(Intercept)", "Days"), ("(Intercept)",)]
    np.testing.assert_array_equal(built.terms[1].values, built.X)
    assert not np.shares_memory(built.terms[0].values, built.terms[2].values)


def test_the_structured_call_keeps_each_parts_intercept(sleepstudy):
    """A part given to formulaic as text inside a structured formula loses its default
    intercept; the parts are given parsed, so (Days | g) has two columns and y ~ Days two."""
    built = design.build_design("Reaction ~ Days + (Days | Subject) + (1 | Subject)", sleepstudy)
    assert built.fixed_names == ("(Intercept)", "Days")
    assert sorted(t.column_names for t in built.terms) == [("(Intercept)",), ("(Intercept)", "Days")]


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + (np.log(Days - 5) | Subject)",
     r"cannot build the model matrix of 'np.log\(Days - 5\)' in random term '\(np.log\(Days - 5\) \| Subject\)'"),
    ("Reaction ~ np.log(Days - 5) + (1 | Subject)",
     r"cannot build the fixed-effects model matrix of 'Reaction ~ np.log\(Days - 5\)'"),
])
def test_a_part_formulaic_cannot_build_is_named(sleepstudy, formula, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's log of negative values
        with pytest.raises(FormulaError, match=message):
            lmm_jax.fit(formula, sleepstudy)


# lme4 1.1.31 (R 4.2.2): lmer(Reaction ~ poly(Days, 2) + (1 | Subject), sleepstudy): fixef,
# REMLcrit, and predict() at Days 0, 4.5, 9 for Subject 308; fixef of the scale(Days) model
POLY_FIXEF = [298.50789167, 403.36416786, 32.85578798]
POLY_REML = 1769.33263393
POLY_PREDICTIONS = [296.2352844, 336.5133691, 390.4408581]
SCALE_SLOPE = 30.14885342


def test_stateful_transforms_read_their_columns(sleepstudy):
    """formulaic 1.2.2 reports no variables for `poly(x, 2)`, `scale(x)`, `center(x)`; their
    columns are still taken from the data (the fit failed with 'name Days is not defined'),
    and the fits and predictions are lme4's."""
    poly = lmm_jax.fit("Reaction ~ poly(Days, 2) + (1 | Subject)", sleepstudy)
    np.testing.assert_allclose(poly.fixef.to_numpy(), POLY_FIXEF, rtol=1e-8)
    np.testing.assert_allclose(poly.objective, POLY_REML, rtol=1e-10)
    new = pd.DataFrame({"Days": [0.0, 4.5, 9.0], "Subject": ["308"] * 3})
    np.testing.assert_allclose(poly.predict(new), POLY_PREDICTIONS, rtol=1e-8)
    scaled = lmm_jax.fit("Reaction ~ scale(Days) + (1 | Subject)", sleepstudy)
    np.testing.assert_allclose(scaled.fixef["scale(Days)"], SCALE_SLOPE, rtol=1e-8)


def test_missing_values_inside_a_stateful_transform_drop_their_rows(sleepstudy):
    data = sleepstudy.assign(Days=sleepstudy["Days"].astype(float))
    data.loc[[3, 50], "Days"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 2 of 180 rows with missing values in: Days \(2\)"):
        result = lmm_jax.fit("Reaction ~ center(Days) + (1 | Subject)", data)
    reference = lmm_jax.fit("Reaction ~ center(Days) + (1 | Subject)", data.dropna())
    assert result.nobs == 178
    np.testing.assert_allclose(result.fixef.to_numpy(), reference.fixef.to_numpy(), rtol=1e-10)


def test_python_factor_names_leave_out_the_functions_called():
    """Functions and the modules they are called from are no columns; a name read as a value
    (`u` in `I(u * 2)`, even `np` in `I(np + 1)`) is one."""
    assert formula_columns._python_factor_names("y ~ center(x) + np.log(w) + C(g):scale(z, ddof=0)") == \
        {"x", "w", "g", "z"}
    assert formula_columns._python_factor_names("y ~ np.exp(u) + I(np + 1)") == {"u", "np"}


# lme4 1.1.31: lmer(Reaction ~ factor(Days, levels = c(1, 2)) + (1 | Subject), sleepstudy)
# keeps the 36 rows of days 1 and 2 (the others are NA); fixef and REMLcrit
GIVEN_LEVELS_FIXEF = [264.4957555556, 0.8661444444]
GIVEN_LEVELS_REML = 321.978605343


def test_values_outside_given_levels_drop_their_rows_as_in_lme4(sleepstudy):
    """formulaic codes a value outside C(x, levels=[...]) as the reference level; R makes it
    NA and lmer drops the row. lmm_jax drops it, with the missing-value warning naming why."""
    with pytest.warns(UserWarning, match=r"dropped 144 of 180 rows .* Days outside the levels of "
                                         r"C\(Days, levels=\[1, 2\]\) \(144\)"):
        result = lmm_jax.fit("Reaction ~ C(Days, levels=[1, 2]) + (1 | Subject)", sleepstudy)
    assert result.nobs == 36
    np.testing.assert_allclose(result.fixef.to_numpy(), GIVEN_LEVELS_FIXEF, rtol=1e-9)
    np.testing.assert_allclose(result.objective, GIVEN_LEVELS_REML, rtol=1e-10)


def test_levels_covering_every_value_drop_nothing(sleepstudy):
    """`list` and `range` in the levels are Python's, not columns (formulaic reports them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = lmm_jax.fit("Reaction ~ C(Days, levels=list(range(10))) + (1 | Subject)", sleepstudy)
    assert result.nobs == 180
    assert len(result.fixef) == 10


@pytest.mark.parametrize("columns", [["b", "a", "c", "d"], ["b", "a", "b", "d"]])
def test_the_used_columns_frame_equals_a_label_selection(columns):
    """`_columns` (by position when the names are unique) selects what `frame[names]` does:
    values, dtypes (a categorical, strings) and the caller's row labels; with repeated names
    it is that label selection."""
    frame = pd.DataFrame({0: [1.5, 2.5, np.nan], 1: ["x", "y", "x"], 2: pd.Categorical(["u", "v", "u"]),
                          3: [1, 2, 3]}, index=[10, 30, 20])
    frame.columns = columns
    before = frame.copy()
    names = ["d", "b", "a"]
    selected = design._columns(frame, names)
    pd.testing.assert_frame_equal(selected, frame[names])
    selected.iloc[0, 0] = -1
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize("dtype", ["float64", "int64", "Float64", "Int64", "float32", "bool"])
def test_a_response_read_from_its_column_is_formulaics_left_hand_side(sleepstudy, dtype):
    """A bare numeric response is read from its column (not materialised); its y equals
    formulaic's left-hand side, for numpy and pandas' nullable dtypes, and is a copy. A
    logical one is still materialised by formulaic (0/1)."""
    values = sleepstudy["Reaction"] < 280 if dtype == "bool" else (sleepstudy["Reaction"] * 10).round()
    data = sleepstudy.assign(Reaction=values.astype(dtype))
    parsed = design.parse_formula("Reaction ~ Days + (1 | Subject)")
    assert model_matrices.response_column(parsed, data) == (None if dtype == "bool" else "Reaction")
    built = design.build_design(parsed.text, data)
    expected = np.asarray(model_matrices.materialise(formula_columns.formulaic_formula(parsed.fixed), data).lhs, dtype=float)[:, 0]
    np.testing.assert_array_equal(built.y, expected)
    assert built.y.dtype == np.float64 and not np.shares_memory(built.y, data["Reaction"].to_numpy())


def _rank_cases():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 3))
    near = lambda scale: np.column_stack([base, base[:, 0] + scale * rng.normal(size=40)])
    return {"full rank": base, "a copy of a column": np.column_stack([base, base[:, 1]]),
            "a sum of columns": np.column_stack([base[:, :2], base[:, 0] - 2 * base[:, 1], base[:, 2]]),
            "above the tolerance": near(1e-5), "below the tolerance": near(1e-9),
            "a zero column": np.column_stack([base, np.zeros(40)]), "more columns than rows": base[:2],
            "an intercept and a constant": np.column_stack([np.ones(40), np.full(40, 3.0), base[:, 0]])}


@pytest.mark.parametrize("case", list(_rank_cases()))
def test_the_full_rank_check_keeps_what_the_column_loop_keeps(case, monkeypatch):
    """One QR decides a full-rank X; the column-by-column loop decides the rest: both keep
    the same columns (the loop alone, with the QR check switched off, is the reference)."""
    X = _rank_cases()[case]
    names = [f"x{j}" for j in range(X.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kept, kept_names, dropped = design._drop_rank_deficient(X, names)
        monkeypatch.setattr(design, "_adds_rank_everywhere", lambda X: False)
        loop_kept, loop_names, loop_dropped = design._drop_rank_deficient(X, names)
    assert (kept_names, dropped) == (loop_names, loop_dropped)
    np.testing.assert_array_equal(kept, loop_kept)
    assert not np.shares_memory(kept, X)
    assert (len(dropped) == 0) == (case in ("full rank", "above the tolerance"))


@pytest.mark.parametrize("values", [
    ["b", "a", "c", "a"],  # text: read as it is
    [3, 1, 10, 1],  # integers: sorted as numbers (10 after 3)
    [2.0, 1.0, 10.0, 1.0],  # whole floats: as integers
    ["b", 1, 2.5, 1],  # mixed: each value's text
    [10.5, 2.5, 10.5, 1.0],  # fractional floats: R's text, sorted as numbers (10.5 last)
    [15.45, 15.450000000000001, 2.5],  # two floats of one 15-digit text: one level, as in R
])
@pytest.mark.parametrize("dtype", [None, object, "category"])
def test_grouping_codes_label_each_level_by_its_text(values, dtype):
    """A grouping factor's levels are the text of its values (whole floats as integers,
    fractional ones to 15 significant digits as R's as.character writes them), each row's
    code points at the level `row_keys` (predict's lookup) gives its row, whichever dtype
    holds the column (float categories included), text columns, which skip the per-value
    str(), sort as text, and numbers sort as numbers (as R's factor() orders them) also when
    held as objects."""
    from lmm_jax.grouping_factors import factor_codes, row_keys

    column = pd.Series(values, dtype=dtype)
    labels, codes = factor_codes(column)
    assert all(isinstance(label, str) for label in labels) and len(set(labels)) == len(labels)
    assert [(labels[c],) for c in codes] == row_keys(pd.DataFrame({"g": column}), ("g",))
    if all(isinstance(v, str) for v in values) and dtype != "category":
        assert labels == sorted(set(values))
    numeric_order = {(3, 1, 10, 1): ["1", "3", "10"], (2.0, 1.0, 10.0, 1.0): ["1", "2", "10"],
                     (10.5, 2.5, 10.5, 1.0): ["1", "2.5", "10.5"],
                     (15.45, 15.450000000000001, 2.5): ["2.5", "15.45"]}
    if tuple(values) in numeric_order:
        assert labels == numeric_order[tuple(values)]


@pytest.mark.parametrize("level_counts, expected", [
    ([18, 18], [0, 1]),  # no term has more levels than the one before it: formula order
    ([24, 6], [0, 1]),
    ([3, 18, 18], [2, 1, 0]),  # rev(order(nl)): decreasing, ties in reverse formula order
    ([6, 24, 10, 24], [3, 1, 2, 0]),
])
def test_random_terms_follow_lme4s_order(level_counts, expected):
    from lmm_jax.design import lme4_term_order

    assert lme4_term_order(level_counts) == expected


def test_tied_terms_are_ordered_and_named_as_lme4_does(sleepstudy):
    """lme4 1.1-31 on this model: theta (Subject.Days, Subject.(Intercept), half.(Intercept))
    = (0.23423047, 0.97986990, 2.1e-05), REML criterion 1743.6692936, VarCorr groups
    Subject (Days), Subject.1 ((Intercept)), half. The old code kept the tied Subject terms
    in formula order, so "Subject" named the intercept and theta's first two entries were
    swapped. (lme4 stops at half's 2.1e-5 on a flat criterion; ours is at 0, 1e-8 lower.)"""
    data = sleepstudy.assign(half=(sleepstudy["Subject"].astype(int) % 3).astype(str))
    result = lmm_jax.fit("Reaction ~ Days + (1 | half) + (1 | Subject) + (0 + Days | Subject)", data)
    rows = list(result.varcorr()[["grp", "var1"]].itertuples(index=False, name=None))[:3]
    assert rows == [("Subject", "Days"), ("Subject.1", "(Intercept)"), ("half", "(Intercept)")]
    np.testing.assert_allclose(result.theta[:2], [0.23423047, 0.97986990], rtol=1e-4)
    assert result.theta[2] < 1e-3
    assert -2 * result.loglik == pytest.approx(1743.6692936, abs=1e-4)


@pytest.mark.parametrize("term, exprs", [
    ("(1 + x || a)", ["1", "0 + x"]),
    ("(0 + x + z || a)", ["0 + x", "0 + z"]),
    ("(x * z || a)", ["1", "0 + x", "0 + z", "0 + x:z"]),  # lme4: (1|a) + (0+x|a) + (0+z|a) + (0+x:z|a)
    ("(x * z - 1 || a)", ["0 + x", "0 + z", "0 + x:z"]),
    ("(x / z || a)", ["1", "0 + x", "0 + x:z"]),
])
def test_double_bar_splits_the_expanded_terms(term, exprs):
    """lme4's expandDoubleVerts splits the terms of the expanded expression; `x * z` was kept
    whole as one correlated 3 x 3 block (7 θ where lme4 has 4)."""
    parsed = design.parse_formula(f"y ~ x * z + {term}")
    assert [spec.expr for spec in parsed.random] == exprs
    assert all(spec.factors == ("a",) for spec in parsed.random)


@pytest.mark.parametrize("formula", [
    "Reaction ~ my.days + (my.days | `sub ject`)",
    "Reaction ~ `my.days` + (`my.days` | `sub ject`)",
])
def test_dotted_and_quoted_column_names_are_read_whole(sleepstudy, formula):
    """R's dotted names: formulaic reports `my.days` as a variable 'my' ("column 'my' ... is
    not in the data"); a grouping column with a space, in backticks, was "not a column name"."""
    renamed = sleepstudy.assign(**{"my.days": sleepstudy["Days"], "sub ject": sleepstudy["Subject"]})
    renamed.loc[renamed.index[0], "my.days"] = np.nan  # its row is dropped: the column is read
    with pytest.warns(UserWarning, match=r"dropped 1 of 180 rows .* my\.days \(1\)"):
        result = lmm_jax.fit(formula, renamed)
    reference = lmm_jax.fit("Reaction ~ Days + (Days | Subject)", sleepstudy.iloc[1:])
    assert list(result.fixef.index) == ["(Intercept)", "my.days"] and list(result.ranef()) == ["sub ject"]
    np.testing.assert_allclose(result.fixef.to_numpy(), reference.fixef.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(result.predict(renamed.iloc[1:4]), reference.predict(sleepstudy.iloc[1:4]),
                               rtol=1e-10)


# lme4 1.1-31, sleepstudy with Reaction NA where Days >= 7 for odd-numbered subjects:
# fixef and REMLcrit
STATES_BEFORE_DROPPING = {
    "Reaction ~ scale(Days) + (1 | Subject)": ([299.86610247, 31.56765557], 1511.585031),
    "Reaction ~ poly(Days, 2) + (1 | Subject)": ([300.59458875, 435.97649438, 46.36926578], 1495.694369),
    # R: scale(Days, scale = FALSE), in both parts
    "Reaction ~ center(Days) + (center(Days) | Subject)": ([296.980758440, 9.691626664], 1488.766666),
}


@pytest.mark.parametrize("formula", list(STATES_BEFORE_DROPPING))
def test_stateful_transforms_see_the_rows_before_missing_values_are_dropped(sleepstudy, formula):
    """R's model.frame evaluates scale(Days) before na.omit; formulaic, on the kept rows,
    gave scale(Days)'s slope 29.19 where lme4 gives 31.57 (the same fit, other coefficients)."""
    data = sleepstudy.copy()
    data.loc[(data["Days"] >= 7) & (data["Subject"].astype(int) % 2 == 1), "Reaction"] = np.nan
    with pytest.warns(UserWarning, match="dropped 27 of 180 rows"):
        result = lmm_jax.fit(formula, data)
    fixef, criterion = STATES_BEFORE_DROPPING[formula]
    np.testing.assert_allclose(result.fixef.to_numpy(), fixef, rtol=1e-6)
    assert result.objective == pytest.approx(criterion, abs=1e-5)
    kept = data.dropna()
    np.testing.assert_allclose(result.predict(kept), result.fitted, rtol=1e-10)


def test_predictors_on_very_different_scales_get_lme4s_warning(sleepstudy):
    """lme4 1.1-31 (checkScaleX) warns "Some predictor variables are on very different
    scales: consider rescaling" for Days x 1e4 (SD 2.9e4 > 1e3) and Days / 1e4 (SD 2.9e-4 <
    1e-3); 0/1 columns (the intercept, a logical) are left out of the check, and sleepstudy's
    own Days (SD 2.9) gives no warning."""
    for expr in ("I(Days * 1e4)", "I(Days / 1e4)"):
        with pytest.warns(UserWarning, match="very different scales: consider rescaling"):
            design.build_design(f"Reaction ~ {expr} + (1 | Subject)", sleepstudy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        design.build_design("Reaction ~ Days + (Days | Subject)", sleepstudy.assign(late=sleepstudy["Days"] > 4))
        design.build_design("Reaction ~ Days + late + (Days | Subject)", sleepstudy.assign(late=sleepstudy["Days"] > 4))
