"""A catalogue of bad inputs and degenerate designs, each with its exact outcome (issue 36).

Every case is a row (name, how to run it, expected outcome): an error class and a phrase
of its message, a warning, or a value. Most cases fail in input validation, before any
JAX compilation; the cases that fit reuse a few small model shapes, so the whole file
runs in well under a minute. A case added here stays closed: a raw numpy/pandas/JAX error
or a misleading message where a clear one belongs fails its row.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax import DataError, FormulaError

SLEEP = lmm_jax.datasets.load("sleepstudy")
SIMPLE = "Reaction ~ Days + (1 | Subject)"
SLOPES = "Reaction ~ Days + (Days | Subject)"
N = len(SLEEP)


@dataclass(frozen=True)
class Raises:
    """The case raises `error` (exactly that class or a subclass) with `phrase` (a regex) in its message."""

    error: type
    phrase: str

    def check(self, run: Callable) -> None:
        with pytest.raises(self.error, match=self.phrase):
            run()


@dataclass(frozen=True)
class Warns:
    """The case returns, warning with `phrase`; `holds` (optional) is true of its value."""

    phrase: str
    holds: Callable = staticmethod(lambda value: True)

    def check(self, run: Callable) -> None:
        with pytest.warns(UserWarning, match=self.phrase):
            value = run()
        assert self.holds(value)


@dataclass(frozen=True)
class Returns:
    """The case returns without a warning of issue 36's kind and `holds` is true of its value."""

    holds: Callable

    def check(self, run: Callable) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            value = run()
        assert self.holds(value)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable
    expected: Raises | Warns | Returns


# ----- shared fits (one model shape each, fitted once) ----------------------------------
@functools.cache
def simple_fit():
    return lmm_jax.fit(SIMPLE, SLEEP)


def fit(formula=SIMPLE, data=SLEEP, **options):
    return lmm_jax.fit(formula, data, **options)


def sleep(**columns) -> pd.DataFrame:
    """sleepstudy with columns added or replaced (a new frame)."""
    return SLEEP.assign(**columns)


def with_nan(column: str, rows=(3, 50)) -> pd.DataFrame:
    data = SLEEP.copy()
    data[column] = data[column].astype(object if data[column].dtype == object else float)
    data.loc[list(rows), column] = np.nan
    return data


def predict_after_refused_text():
    """predict(data) after a newdata with Days as text was refused (formulaic once wrote the
    text column's levels into the fit's own spec, and every later predict failed)."""
    with pytest.raises(DataError, match="newdata's column 'Days' is object dtype, but it was numeric"):
        simple_fit().predict(sleep(Days=SLEEP.Days.astype(str)))
    return simple_fit().predict(SLEEP)


def with_value(column: str, value, row: int = 5) -> pd.Series:
    """sleepstudy's column with `value` in one row."""
    return SLEEP[column].where(SLEEP.index != row, value)


def same_slope(result, rel: float) -> bool:
    return result.fixef["Days"] == pytest.approx(simple_fit().fixef["Days"], rel=rel)


def close_to_simple(result) -> bool:
    return abs(result.loglik - simple_fit().loglik) < 1e-8


def areas(**columns) -> pd.DataFrame:
    """A small Fay-Herriot data set: 12 areas, direct estimates y, covariate x, variances vi."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 1, 12)
    frame = pd.DataFrame({"y": 1 + 2 * x + rng.normal(scale=0.5, size=12), "x": x,
                          "vi": np.full(12, 0.1), "z": rng.normal(size=12)})
    return frame.assign(**columns)


def batch(responses, formula=SIMPLE, data=SLEEP, **options):
    return lmm_jax.fit_batch(formula, data, responses, progress=False, **options)


def Y(k: int = 2) -> np.ndarray:
    return np.stack([SLEEP.Reaction.to_numpy() * (i + 1) for i in range(k)], axis=1)


SUBJECT_TEXT = SLEEP.Subject.astype(str)
TEXT = str  # readability in the table
NUMBERS_AS_TEXT = SLEEP.Reaction.map(lambda v: f"{v:.4f}").astype(object)

FORMULAS = [
    Case("formula not a string", lambda: fit(42), Raises(FormulaError, "formula must be a string")),
    Case("formula None", lambda: fit(None), Raises(FormulaError, "formula must be a string")),
    Case("empty formula", lambda: fit(""), Raises(FormulaError, "must have the form 'response ~ terms'")),
    Case("no tilde", lambda: fit("Reaction"), Raises(FormulaError, "must have the form 'response ~ terms'")),
    Case("no response", lambda: fit("~ Days + (1 | Subject)"), Raises(FormulaError, "response ~ terms")),
    Case("no right-hand side", lambda: fit("Reaction ~ "), Raises(FormulaError, "response ~ terms")),
    Case("two tildes", lambda: fit("Reaction ~ Days ~ Subject"), Raises(FormulaError, "response ~ terms")),
    Case("unbalanced (", lambda: fit("Reaction ~ Days + (1 | Subject"),
         Raises(FormulaError, "has an unclosed '\\('")),
    Case("unbalanced )", lambda: fit("Reaction ~ Days + 1 | Subject)"),
         Raises(FormulaError, "has an unmatched '\\)'")),
    Case("bar without parentheses", lambda: fit("Reaction ~ Days + 1 | Subject"),
         Raises(FormulaError, "must be written in parentheses")),
    Case("doubled +", lambda: fit("Reaction ~ Days + + (1 | Subject)"), Raises(FormulaError, "empty term")),
    Case("trailing +", lambda: fit("Reaction ~ Days + (1 | Subject) +"), Raises(FormulaError, "empty term")),
    Case("nothing before the bar", lambda: fit("Reaction ~ Days + ( | Subject)"),
         Raises(FormulaError, "nothing before the bar")),
    Case("no grouping factor", lambda: fit("Reaction ~ Days + (1 | )"),
         Raises(FormulaError, "no grouping factor after the bar")),
    Case("three bars", lambda: fit("Reaction ~ Days + (1 | Subject | Days)"),
         Raises(FormulaError, r"must be '\(expr \| group\)'")),
    Case("grouping factor not a name", lambda: fit("Reaction ~ Days + (1 | Sub-ject)"),
         Raises(FormulaError, "grouping factor 'Sub-ject' is not a column name")),
    Case("grouping factor a number", lambda: fit("Reaction ~ Days + (1 | 3)"),
         Raises(FormulaError, "grouping factor '3' is not a column name")),
    Case("grouping factor a product", lambda: fit("Reaction ~ Days + (1 | Subject*Days)"),
         Raises(FormulaError, "grouping factor 'Subject\\*Days' is not a column name")),
    Case("unknown structure keyword", lambda: fit("Reaction ~ Days + foo(1 | Subject)"),
         Raises(FormulaError, "unknown covariance structure 'foo'")),
    Case("offset term", lambda: fit("Reaction ~ Days + offset(Days) + (1 | Subject)"),
         Raises(FormulaError, "offset\\(\\) terms are not supported")),
    Case("unknown fixed column", lambda: fit("Reaction ~ Dayz + (1 | Subject)"),
         Raises(DataError, r"column 'Dayz' \(used in fixed part")),
    Case("unknown response column", lambda: fit("Reaktion ~ Days + (1 | Subject)"),
         Raises(DataError, "column 'Reaktion'")),
    Case("unknown grouping column", lambda: fit("Reaction ~ Days + (1 | Subj)"),
         Raises(DataError, r"column 'Subj' \(used in random term")),
    Case("unknown column in a random slope", lambda: fit("Reaction ~ Days + (Dayz | Subject)"),
         Raises(DataError, r"column 'Dayz' \(used in random term")),
    Case("unknown nested factor", lambda: fit("Reaction ~ Days + (1 | Subject/Visit)"),
         Raises(DataError, "column 'Visit'")),
    Case("unknown function", lambda: fit("Reaction ~ frobnicate(Days) + (1 | Subject)"),
         Raises(DataError, "function 'frobnicate' .* is neither a known function nor a column")),
    Case("no fixed effects", lambda: fit("Reaction ~ 0 + (1 | Subject)"),
         Raises(FormulaError, "has no fixed effects")),
    Case("two responses", lambda: fit("Reaction + Days ~ 1 + (1 | Subject)"),
         Raises(FormulaError, "must be one numeric column")),
    Case("random term with no columns", lambda: fit("Reaction ~ Days + (0 | Subject)"),
         Raises(FormulaError, "has no columns")),
    Case("unparseable fixed part", lambda: fit("Reaction ~ Days + $ + (1 | Subject)"),
         Raises(FormulaError, "cannot parse")),
    Case("unknown structure in correlation", lambda: fit(correlation="foo(~ 1 | Subject)"),
         Raises(ValueError, "foo")),
]

DATA = [
    Case("data None", lambda: fit(data=None), Raises(DataError, "data must be a pandas DataFrame")),
    Case("data a list", lambda: fit(data=[1, 2, 3]), Raises(DataError, "data must be a pandas DataFrame")),
    Case("data a numpy array", lambda: fit(data=SLEEP.to_numpy()),
         Raises(DataError, "data must be a pandas DataFrame")),
    Case("data a string", lambda: fit(data="sleepstudy.csv"),
         Raises(DataError, "data must be a pandas DataFrame")),
    Case("data a Series", lambda: fit(data=SLEEP.Reaction),
         Raises(DataError, "data must be a pandas DataFrame")),
    Case("dict of unequal lengths",
         lambda: fit(data={"Reaction": [1.0, 2.0], "Days": [1.0], "Subject": [1, 2]}),
         Raises(DataError, "must all have the same length")),
    Case("empty frame", lambda: fit(data=SLEEP.iloc[:0]), Raises(DataError, "data has no rows")),
    Case("empty frame without the columns", lambda: fit(data=pd.DataFrame()),
         Raises(DataError, "column 'Reaction'|column 'Days'")),
    Case("all-NaN response", lambda: fit(data=sleep(Reaction=np.nan)),
         Raises(DataError, "no rows left after dropping rows with missing values")),
    Case("all-NaN covariate", lambda: fit(data=sleep(Days=np.nan)),
         Raises(DataError, "no rows left after dropping")),
    Case("all-missing grouping column", lambda: fit(data=sleep(Subject=None)),
         Raises(DataError, "no rows left after dropping")),
    Case("NaN in the response", lambda: fit(data=with_nan("Reaction")),
         Warns(r"dropped 2 of 180 rows with missing values in: Reaction \(2\)", lambda r: r.nobs == 178)),
    Case("NaN in a covariate", lambda: fit(data=with_nan("Days")),
         Warns(r"dropped 2 of 180 rows with missing values in: Days \(2\)", lambda r: r.nobs == 178)),
    Case("missing grouping values", lambda: fit(data=with_nan("Subject")),
         Warns(r"dropped 2 of 180 rows with missing values in: Subject \(2\)", lambda r: r.nobs == 178)),
    Case("inf in the response", lambda: fit(data=sleep(Reaction=with_value("Reaction", np.inf))),
         Raises(DataError, "the response 'Reaction' has non-finite values")),
    Case("-inf in the response", lambda: fit(data=sleep(Reaction=with_value("Reaction", -np.inf))),
         Raises(DataError, "the response 'Reaction' has non-finite values")),
    Case("inf in a covariate", lambda: fit(data=sleep(Days=with_value("Days", np.inf))),
         Raises(DataError, r"non-finite values \(inf or NaN\) in column\(s\) \['Days'\]")),
    Case("inf in a random slope", lambda: fit(SLOPES, sleep(Days=with_value("Days", np.inf))),
         Raises(DataError, r"non-finite values \(inf or NaN\) in column\(s\) \['Days'\]")),
    Case("log of a negative covariate", lambda: fit("Reaction ~ np.log(Days - 3) + (1 | Subject)"),
         Raises(FormulaError, r"np.log\(Days - 3\)` contains null values after evaluation")),
    Case("log of zero in the response", lambda: fit("np.log(Reaction * 0) ~ Days + (1 | Subject)"),
         Raises(DataError, "non-finite values")),
    Case("response times 1e200", lambda: fit(data=sleep(Reaction=SLEEP.Reaction * 1e200)),
         Raises(DataError, r"the response 'Reaction' has values too large for float64 .*overflow")),
    Case("response times 1e-200", lambda: fit(data=sleep(Reaction=SLEEP.Reaction * 1e-200)),
         Raises(DataError, r"the response 'Reaction' has values too small for float64 .*underflow")),
    Case("covariate times 1e200", lambda: fit(data=sleep(Days=SLEEP.Days * 1e200)),
         Raises(DataError, r"column 'Days' of the fixed part has values too large")),
    Case("response of numbers as text", lambda: fit(data=sleep(Reaction=NUMBERS_AS_TEXT)),
         Raises(DataError, r"the response column 'Reaction' is text .*convert it to numbers")),
    Case("response of words", lambda: fit(data=sleep(Reaction="slow")),
         Raises(DataError, "the response column 'Reaction' is text")),
    Case("response categorical", lambda: fit(data=sleep(Reaction=pd.Categorical(SLEEP.Days))),
         Raises(DataError, "the response column 'Reaction' is not numeric")),
    Case("response of dates", lambda: fit(data=sleep(Reaction=pd.Timestamp("2024-01-01")
                                                   + pd.to_timedelta(SLEEP.Days, "D"))),
         Raises(DataError, "the response column 'Reaction' is not numeric")),
    Case("constant response", lambda: fit(data=sleep(Reaction=5.0)),
         Raises(DataError, "is fitted exactly by the fixed effects")),
    Case("response exactly linear in X", lambda: fit(data=sleep(Reaction=3 - 2 * SLEEP.Days)),
         Raises(DataError, "is fitted exactly by the fixed effects")),
    Case("repeated used column", lambda: fit(data=pd.concat([SLEEP, SLEEP[["Days"]]], axis=1)),
         Raises(DataError, r"repeated column names: 'Days' \(2 times\)")),
    Case("repeated response column", lambda: fit(data=pd.concat([SLEEP, SLEEP[["Reaction"]]], axis=1)),
         Raises(DataError, r"repeated column names: 'Reaction' \(2 times\)")),
    Case("repeated grouping column", lambda: fit(data=pd.concat([SLEEP, SLEEP[["Subject"]]], axis=1)),
         Raises(DataError, r"repeated column names: 'Subject' \(2 times\)")),
    Case("repeated unused column", lambda: fit(data=pd.concat([SLEEP, sleep(x=1.0)[["x", "x"]]], axis=1)),
         Returns(close_to_simple)),
    Case("one-level grouping factor", lambda: fit(data=sleep(Subject="s1")),
         Raises(DataError, "grouping factor 'Subject' .* has only one level")),
    Case("one-level fixed factor", lambda: fit("Reaction ~ Days + f + (1 | Subject)", sleep(f="a")),
         Raises(DataError, "factor 'f' in the fixed part .* has only one level")),
    Case("as many levels as rows", lambda: fit(data=sleep(Subject=np.arange(N))),
         Raises(DataError, "has 180 levels for 180 observations")),
    Case("one observation per level", lambda: fit("Reaction ~ Days + (1 | Subject)",
                                                  SLEEP.iloc[np.arange(18) * 10 + np.arange(18) % 10]),
         Raises(DataError, "has 18 levels for 18 observations")),
    Case("random slopes with too few rows", lambda: fit(SLOPES, SLEEP.groupby("Subject").head(2)),
         Raises(DataError, r"number of observations \(36\) <= number of random effects \(36\)")),
    Case("mixed 1 and '1' in a grouping column",
         lambda: fit(data=sleep(Subject=[1 if i % 2 else "1" for i in range(N)])),
         Raises(DataError, "column 'Subject' mixes types")),
    Case("mixed types of distinct texts", lambda: fit(data=sleep(Subject=[
        int(s) if int(s) % 2 else f"s{s}" for s in SLEEP.Subject])), Returns(close_to_simple)),
    Case("non-ASCII grouping column", lambda: fit("Reaction ~ Days + (1 | Süjet)",
                                                  SLEEP.rename(columns={"Subject": "Süjet"})),
         Returns(close_to_simple)),
    Case("grouping column with a space, quoted", lambda: fit("Reaction ~ Days + (1 | `Sub ject`)",
                                                             SLEEP.rename(columns={"Subject": "Sub ject"})),
         Returns(close_to_simple)),
    Case("grouping column as text", lambda: fit(data=sleep(Subject=SUBJECT_TEXT)), Returns(close_to_simple)),
    Case("grouping column as categorical with unused levels",
         lambda: fit(data=sleep(Subject=pd.Categorical(SLEEP.Subject, categories=list(SLEEP.Subject.unique())
                                                       + [999]))), Returns(close_to_simple)),
    Case("data as a dict", lambda: fit(data={k: SLEEP[k].to_numpy() for k in SLEEP.columns}),
         Returns(close_to_simple)),
    Case("data with a repeated index", lambda: fit(data=SLEEP.set_axis(np.zeros(N, int))),
         Returns(close_to_simple)),
    Case("rows in another order", lambda: fit(data=SLEEP.sample(frac=1, random_state=3)),
         Returns(close_to_simple)),
    Case("a covariate named Intercept", lambda: fit("Reaction ~ Days + Intercept + (1 | Subject)",
                                                    sleep(Intercept=np.sin(np.arange(N)))),
         Returns(lambda r: list(r.fixef.index) == ["(Intercept)", "Days", "Intercept"])),
    Case("a fixed factor with a missing value",
         lambda: fit("Reaction ~ Days + f + (1 | Subject)", sleep(f=np.array(["a", "b", None])[np.arange(N) % 3])),
         Warns(r"dropped 60 of 180 rows with missing values in: f \(60\)")),
    Case("C(levels=) excluding a value", lambda: fit("Reaction ~ C(g, levels=['a', 'b']) + (1 | Subject)",
                                                    sleep(g=np.array(["a", "b", "c"])[np.arange(N) % 3])),
         Warns("dropped 60 of 180 rows with missing values in: g outside the levels")),
    Case("a covariate of lists", lambda: fit(data=sleep(Days=[[d] for d in SLEEP.Days])),
         Raises(DataError, r"column 'Days' holds lists \(such as \[0\]\)")),
    Case("a complex covariate", lambda: fit(data=sleep(Days=SLEEP.Days + 1j)),
         Raises(DataError, "column 'Days' holds complex numbers")),
]

WEIGHTS = [
    Case("negative weights", lambda: fit(weights=np.where(np.arange(N) == 3, -1.0, 1.0)),
         Raises(DataError, "prior weights must be finite and positive")),
    Case("zero weights", lambda: fit(weights=np.where(np.arange(N) == 3, 0.0, 1.0)),
         Raises(DataError, "prior weights must be finite and positive")),
    Case("infinite weights", lambda: fit(weights=np.where(np.arange(N) == 3, np.inf, 1.0)),
         Raises(DataError, "prior weights must be finite and positive")),
    Case("NaN weights", lambda: fit(weights=np.where(np.isin(np.arange(N), [3, 50]), np.nan, 1.0)),
         Warns(r"dropped 2 of 180 rows with missing values in: weights \(2\)", lambda r: r.nobs == 178)),
    Case("weights too short", lambda: fit(weights=np.ones(N - 1)),
         Raises(DataError, r"weights must have one value per row \(180\), got shape \(179,\)")),
    Case("weights 2-D", lambda: fit(weights=np.ones((N, 2))),
         Raises(DataError, r"weights must have one value per row \(180\), got shape \(180, 2\)")),
    Case("weights a scalar", lambda: fit(weights=2.0),
         Raises(DataError, r"one value per row \(180\), got shape \(\)")),
    Case("weights column missing", lambda: fit(weights="w"),
         Raises(DataError, "weights column 'w' is not in the data")),
    Case("weights column of words", lambda: fit(data=sleep(w="heavy"), weights="w"),
         Raises(DataError, r"weights column 'w' is text .*convert it to numbers")),
    Case("weights column of numbers as text", lambda: fit(data=sleep(w="2.0"), weights="w"),
         Raises(DataError, "weights column 'w' is text")),
    Case("weights array of text", lambda: fit(weights=np.full(N, "2.0")),
         Raises(DataError, "weights is text")),
    Case("weights column repeated", lambda: fit(data=pd.concat([sleep(w=1.0), sleep(w=2.0)[["w"]]], axis=1),
                                                weights="w"),
         Raises(DataError, r"repeated column names: 'w' \(2 times\)")),
    Case("weights Series of other labels", lambda: fit(weights=pd.Series(np.ones(N), index=np.arange(N) + 7)),
         Raises(DataError, "index of the weights Series is not a reordering of data's index")),
    Case("weights Series shuffled", lambda: fit(weights=pd.Series(np.ones(N)).sample(frac=1, random_state=2)),
         Returns(close_to_simple)),
    Case("weights list of ones", lambda: fit(weights=[1.0] * N), Returns(close_to_simple)),
    Case("weights column of ones", lambda: fit(data=sleep(w=1), weights="w"), Returns(close_to_simple)),
]

METHODS = [
    Case("unknown method", lambda: fit(method="REMLX"), Raises(ValueError, "method")),
    Case("method None", lambda: fit(method=None), Raises(ValueError, "method")),
    Case("method a number", lambda: fit(method=1), Raises(ValueError, "method")),
    Case("confint unknown method", lambda: simple_fit().confint(method="exact"),
         Raises(ValueError, "method must be one of 'profile', 'wald', 'bootstrap'")),
    Case("confint level above 1", lambda: simple_fit().confint(method="wald", level=1.5),
         Raises(ValueError, "level must be a number strictly between 0 and 1")),
    Case("confint level 0", lambda: simple_fit().confint(method="wald", level=0),
         Raises(ValueError, "level must be a number strictly between 0 and 1")),
    Case("confint level as text", lambda: simple_fit().confint(method="wald", level="0.95"),
         Raises(ValueError, "level must be a number")),
    Case("confint level True", lambda: simple_fit().confint(method="wald", level=True),
         Raises(ValueError, "level must be a number")),
    Case("confint unknown parm", lambda: simple_fit().confint(method="wald", parm="Dayz"),
         Raises(ValueError, "unknown parameter 'Dayz' in parm")),
    Case("confint parm out of range", lambda: simple_fit().confint(method="wald", parm=[99]),
         Raises(ValueError, "unknown parameter 99 in parm")),
    Case("confint unknown boot_type", lambda: simple_fit().confint(method="bootstrap", boot_type="bca"),
         Raises(ValueError, "boot_type must be one of")),
    Case("confint wald", lambda: simple_fit().confint(method="wald", parm="beta_"),
         Returns(lambda frame: list(frame.index) == ["(Intercept)", "Days"])),
    Case("test unknown coefficient", lambda: simple_fit().test({"Dayz": 1}), Raises(ValueError, "Dayz")),
    Case("test L of the wrong width", lambda: simple_fit().test(np.ones((1, 3))), Raises(ValueError, "3")),
    Case("test L of NaN", lambda: simple_fit().test(np.array([[np.nan, 1.0]])), Raises(ValueError, "finite")),
    Case("test all-zero L", lambda: simple_fit().test(np.zeros((1, 2))),
         Raises(ValueError, "has 1 rows but rank 0")),
    Case("test unknown ddf", lambda: simple_fit().test([0, 1], ddf="Welch"), Raises(ValueError, "ddf")),
    Case("anova unknown ddf", lambda: simple_fit().anova(ddf="Welch"), Raises(ValueError, "ddf")),
    Case("test of Days", lambda: simple_fit().test([0, 1]), Returns(lambda out: out["num_df"] == 1)),
    Case("ranef", lambda: simple_fit().ranef(), Returns(lambda out: out["Subject"].shape == (18, 1))),
    Case("rlrt of an unknown term", lambda: lmm_jax.rlrt(simple_fit(), term="Item"),
         Raises(ValueError, "Item")),
    Case("lrt of fits to other data", lambda: lmm_jax.lrt(simple_fit(), fit(data=SLEEP.drop(index=[3, 50]))),
         Raises(ValueError, "data")),
    Case("compare of a single fit", lambda: lmm_jax.compare(simple_fit()), Raises(ValueError, "two")),
]

NEWDATA = [
    Case("predict: a missing covariate column", lambda: simple_fit().predict(SLEEP.drop(columns="Days")),
         Raises(DataError, "Days")),
    Case("predict: a missing grouping column", lambda: simple_fit().predict(SLEEP.drop(columns="Subject")),
         Raises(DataError, r"newdata lacks grouping column\(s\) \['Subject'\]")),
    Case("predict: no grouping column, population level",
         lambda: simple_fit().predict(SLEEP.drop(columns="Subject"), random_effects=False),
         Returns(lambda out: np.allclose(out, simple_fit().predict(random_effects=False)))),
    Case("predict: unseen levels",
         lambda: simple_fit().predict(sleep(Subject=SLEEP.Subject.astype(int) + 1000)),
         Returns(lambda out: np.allclose(out, simple_fit().predict(random_effects=False)))),
    Case("predict: grouping column as text", lambda: simple_fit().predict(sleep(Subject=SUBJECT_TEXT)),
         Returns(lambda out: np.allclose(out, simple_fit().fitted))),
    Case("predict: a covariate as text", lambda: simple_fit().predict(sleep(Days=SLEEP.Days.astype(str))),
         Raises(DataError, "newdata's column 'Days' is object dtype, but it was numeric in the fit")),
    Case("predict: a covariate as categories",
         lambda: simple_fit().predict(sleep(Days=pd.Categorical(SLEEP.Days))),
         Raises(DataError, "newdata's column 'Days' is category dtype, but it was numeric in the fit")),
    Case("predict: the fit unchanged by a refused text column", lambda: predict_after_refused_text(),
         Returns(lambda out: np.allclose(out, simple_fit().fitted, rtol=1e-12))),
    Case("predict: NaN covariate", lambda: simple_fit().predict(with_nan("Days")),
         Returns(lambda out: np.isnan(out[[3, 50]]).all() and np.isfinite(np.delete(out, [3, 50])).all())),
    Case("predict: missing grouping value", lambda: simple_fit().predict(with_nan("Subject")),
         Returns(lambda out: np.allclose(out[[3, 50]], simple_fit().predict(random_effects=False)[[3, 50]]))),
    Case("predict: empty newdata", lambda: simple_fit().predict(SLEEP.iloc[:0]),
         Returns(lambda out: out.shape == (0,))),
    Case("predict: newdata a list", lambda: simple_fit().predict([1, 2, 3]),
         Raises(DataError, "newdata must be a pandas DataFrame or a dict of columns, got list")),
    Case("predict: the data itself", lambda: simple_fit().predict(SLEEP),
         Returns(lambda out: np.allclose(out, simple_fit().fitted, rtol=1e-12))),
    Case("predict: inf covariate", lambda: simple_fit().predict(sleep(Days=np.inf)),
         Returns(lambda out: np.all(out == np.inf))),  # as lme4's predict: slope > 0
    Case("predict: unseen level of a fixed factor",
         lambda: fit("Reaction ~ f + (1 | Subject)", sleep(f=np.where(SLEEP.Days < 5, "a", "b"))).predict(
             sleep(f="c")), Raises(DataError, r"newdata's column 'f' has value\(s\) \['c'\]")),
]

BATCH = [
    Case("fit_batch: no responses", lambda: lmm_jax.fit_batch(SIMPLE, SLEEP, progress=False),
         Raises(ValueError, "needs data and responses")),
    Case("fit_batch: data and datasets", lambda: lmm_jax.fit_batch(SIMPLE, SLEEP, Y(), datasets=[SLEEP]),
         Raises(ValueError, "not both")),
    Case("fit_batch: responses too short", lambda: batch(Y()[:-1]),
         Raises(DataError, r"one row per row of data \(180\), got 179")),
    Case("fit_batch: responses 3-D", lambda: batch(Y()[:, :, None]), Raises(DataError, r"an \(n, B\) array")),
    Case("fit_batch: no response columns", lambda: batch(np.zeros((N, 0))),
         Raises(DataError, r"B >= 1 columns")),
    Case("fit_batch: responses of words", lambda: batch(pd.DataFrame({"r": ["slow"] * N})),
         Raises(DataError, r"responses column 'r' is text")),
    Case("fit_batch: responses of numbers as text", lambda: batch(pd.DataFrame({"r": NUMBERS_AS_TEXT})),
         Raises(DataError, r"responses column 'r' is text")),
    Case("fit_batch: a text array", lambda: batch(np.full((N, 2), "1.5")),
         Raises(DataError, "responses is text")),
    Case("fit_batch: NaN responses", lambda: batch(np.where(np.arange(N)[:, None] == 3, np.nan, Y())),
         Raises(DataError, "responses have missing or non-finite values")),
    Case("fit_batch: misaligned DataFrame", lambda: batch(pd.DataFrame(Y(), index=np.arange(N) + 5)),
         Raises(DataError, "index of the responses DataFrame is not a reordering of data's index")),
    Case("fit_batch: a transformed response",
         lambda: batch(Y(), formula="np.log(Reaction) ~ Days + (1 | Subject)"),
         Raises(DataError, "needs the response to be a plain column name")),
    Case("fit_batch: float16", lambda: batch(Y(), dtype="float16"), Raises(ValueError, "float16")),
    Case("fit_batch: unknown column", lambda: batch(Y(), formula="Reaction ~ Dayz + (1 | Subject)"),
         Raises(DataError, "column 'Dayz'")),
    Case("fit_batch: datasets empty", lambda: lmm_jax.fit_batch(SIMPLE, datasets=[], progress=False),
         Raises(ValueError, "dataset")),
]

FAY_HERRIOT = [
    Case("fay_herriot: text sampling variances", lambda: lmm_jax.fay_herriot("y ~ x", areas(vi="0.1")),
         Raises(DataError, r"sampling-variance column 'vi' is text")),
    Case("fay_herriot: missing sampling-variance column", lambda: lmm_jax.fay_herriot("y ~ x", areas(), "v"),
         Raises(ValueError, r"column 'v' \(sampling variance\) is not in the data")),
    Case("fay_herriot: negative sampling variance", lambda: lmm_jax.fay_herriot("y ~ x", areas(vi=-0.1)),
         Raises(ValueError, "must be positive and finite")),
    Case("fay_herriot: zero sampling variance", lambda: lmm_jax.fay_herriot("y ~ x", areas(vi=0.0)),
         Raises(ValueError, "must be positive and finite")),
    Case("fay_herriot: NaN sampling variance", lambda: lmm_jax.fay_herriot("y ~ x", areas(vi=np.nan)),
         Raises(ValueError, r"missing values in 'vi' \(12\)")),
    Case("fay_herriot: missing covariate column", lambda: lmm_jax.fay_herriot("y ~ w", areas()),
         Raises(ValueError, r"column 'w' \(formula\) is not in the data")),
    Case("fay_herriot: no response", lambda: lmm_jax.fay_herriot("~ x", areas()),
         Raises(ValueError, "no response")),
    Case("fay_herriot: text response", lambda: lmm_jax.fay_herriot("y ~ x", areas(y="high")),
         Raises(ValueError, "must be one numeric column")),
    Case("fay_herriot: infinite response", lambda: lmm_jax.fay_herriot("y ~ x", areas(y=np.inf)),
         Raises(ValueError, "has infinite values")),
    Case("fay_herriot: infinite covariate", lambda: lmm_jax.fay_herriot("y ~ x", areas(x=np.inf)),
         Raises(ValueError, r"covariate column\(s\) \['x'\]")),
    Case("fay_herriot: as many coefficients as areas", lambda: lmm_jax.fay_herriot("y ~ x", areas().iloc[:2]),
         Raises(ValueError, "needs more areas than coefficients")),
    Case("fay_herriot: collinear covariates", lambda: lmm_jax.fay_herriot("y ~ x + I(2 * x)", areas()),
         Raises(ValueError, "collinear")),
    Case("fay_herriot: unknown method", lambda: lmm_jax.fay_herriot("y ~ x", areas(), method="EB"),
         Raises(ValueError, "method must be one of")),
    Case("fay_herriot: bias correction without PM", lambda: lmm_jax.fay_herriot("y ~ x", areas(),
                                                                                pm_bias_correction=True),
         Raises(ValueError, "pm_bias_correction applies to method='PM' only")),
    Case("fay_herriot: formula not a string", lambda: lmm_jax.fay_herriot(None, areas()),
         Raises(ValueError, "formula must be a string")),
    Case("fay_herriot: unparseable formula", lambda: lmm_jax.fay_herriot("y ~ $", areas()),
         Raises(ValueError, "cannot parse formula")),
    Case("fay_herriot: a covariate named Intercept", lambda: lmm_jax.fay_herriot("y ~ x + Intercept",
                                                                                 areas(Intercept=areas().z)),
         Returns(lambda r: list(r.fixed_names) == ["(Intercept)", "x", "Intercept"])),
]

# Issue 36's degenerate designs: a design that does not identify its variances is reported
# as not converged, with a warning naming the terms (lme4 warns of a degenerate Hessian); a
# response or covariate of large mean is fitted as the unshifted data are.
NOT_CONVERGED = "the fit is not converged"


def not_converged(result) -> bool:
    return not result.converged and result.to_dict()["convergence"]["failures"]


def close_to_simple_shifted(result, slope_rel: float) -> bool:
    return result.converged and same_slope(result, rel=slope_rel) and \
        result.loglik == pytest.approx(simple_fit().loglik, rel=1e-8)


DEGENERATE = [
    # the same term twice: only the sum of the two variances is identified
    Case("the same random term twice", lambda: fit("Reaction ~ Days + (1 | Subject) + (1 | Subject)"),
         Warns(f"{NOT_CONVERGED}.*group the rows identically",
               lambda r: close_to_simple(r) and not_converged(r))),
    # two grouping columns with one partition: as above
    Case("two grouping columns of one partition", lambda: fit("Reaction ~ Days + (1 | Subject) + (1 | S2)",
                                                              sleep(S2=SLEEP.Subject.astype(int) * 7)),
         Warns(r"\(1 \| Subject\) and \(1 \| S2\) group the rows identically",
               lambda r: close_to_simple(r) and not_converged(r))),
    # a constant slope column: its variance and correlation are not identified
    Case("(1 + c | g) with c constant", lambda: fit("Reaction ~ Days + (1 + c | Subject)", sleep(c=2.0)),
         Warns(r"\(1 \+ c \| Subject\): its columns .* are linearly dependent",
               lambda r: close_to_simple(r) and not_converged(r))),
    # a zero column: the term is no term
    Case("(0 + z | g) with z zero", lambda: fit("Reaction ~ Days + (0 + z | Subject)", sleep(z=0.0)),
         Warns(r"\(z \| Subject\): its columns \['z'\] are linearly dependent", not_converged)),
    # a fixed factor equal to the grouping factor: the random intercepts are not identified
    Case("a fixed factor equal to the grouping factor",
         lambda: fit("Reaction ~ Days + Subject + (1 | Subject)", sleep(Subject=SUBJECT_TEXT)),
         Warns(r"\(1 \| Subject\) lies in the fixed effects' column space", not_converged)),
    # a response of large mean: the fit of the unshifted response (lme4's)
    Case("response shifted by 1e8", lambda: fit(data=sleep(Reaction=SLEEP.Reaction + 1e8)),
         Returns(lambda r: close_to_simple_shifted(r, 1e-8))),
    # a covariate of large mean: the same model, so the same fit
    Case("covariate shifted by 1e6", lambda: fit(data=sleep(Days=SLEEP.Days + 1e6)),
         Returns(lambda r: close_to_simple_shifted(r, 1e-8))),
]

CASES = FORMULAS + DATA + WEIGHTS + METHODS + NEWDATA + BATCH + FAY_HERRIOT + DEGENERATE


def test_the_catalogue_is_large_and_its_names_unique():
    assert len(CASES) >= 150
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[re.sub(r"\s+", "_", case.name) for case in CASES])
def test_case(case: Case):
    case.expected.check(case.run)
