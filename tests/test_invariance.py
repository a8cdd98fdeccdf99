"""The fit does not depend on row order or on how group ids are spelled."""

from __future__ import annotations

import numpy as np
import pandas as pd

import lmm_jax

FORMULA = "Reaction ~ Days + (Days | Subject)"


def _key_numbers(result):
    out = result.to_dict()
    return np.array(out["fixed"]["estimate"] + out["fixed"]["se"] + [out["sigma"], out["loglik"]]
                    + [r["vcov"] for r in out["varcorr"]])


def test_row_order_invariance(sleepstudy):
    shuffled = sleepstudy.sample(frac=1.0, random_state=7)
    a, b = lmm_jax.fit(FORMULA, sleepstudy), lmm_jax.fit(FORMULA, shuffled)
    np.testing.assert_allclose(_key_numbers(b), _key_numbers(a), rtol=1e-8)
    pd.testing.assert_frame_equal(b.ranef()["Subject"], a.ranef()["Subject"], rtol=1e-6)
    # fitted values follow the rows they belong to
    by_row = pd.Series(b.fitted, index=shuffled.index).sort_index().to_numpy()
    np.testing.assert_allclose(by_row, a.fitted, rtol=1e-7)


def test_relabelled_group_ids(sleepstudy):
    names = {s: f"subject-{chr(65 + i)}" for i, s in enumerate(sorted(sleepstudy["Subject"].unique()))}
    relabelled = sleepstudy.assign(Subject=sleepstudy["Subject"].map(names))
    a, b = lmm_jax.fit(FORMULA, sleepstudy), lmm_jax.fit(FORMULA, relabelled)
    np.testing.assert_allclose(_key_numbers(b), _key_numbers(a), rtol=1e-8)
    modes_a = a.ranef()["Subject"].rename(index=lambda s: names[int(s)])
    pd.testing.assert_frame_equal(b.ranef()["Subject"].sort_index(), modes_a.sort_index(), rtol=1e-6)


def test_string_and_integer_ids_agree(sleepstudy):
    as_text = sleepstudy.assign(Subject=sleepstudy["Subject"].astype(str))
    a, b = lmm_jax.fit(FORMULA, sleepstudy), lmm_jax.fit(FORMULA, as_text)
    np.testing.assert_allclose(_key_numbers(b), _key_numbers(a), rtol=1e-10)
    assert list(b.ranef()["Subject"].index) == list(a.ranef()["Subject"].index)
