"""`fit_batch(formula, datasets=[...])`: data sets of different sizes padded into shared shapes
must give, entry by entry, the single fit of each data set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.model import Model, deviance_function
from lmm_jax.ragged import bucket_size, padded_arrays, padded_shape

FORMULA = "Reaction ~ Days + (Days | Subject)"
INTERCEPT_ONLY = "Reaction ~ Days + (1 | Subject)"  # a smaller program, for the sharded run


def subset(data, subjects, days, seed=None):
    """Rows of `subjects` (first ones) on `days`; with a seed, Reaction replaced by noise
    around a common line (no between-subject variation: a singular fit)."""
    keep = data["Subject"].isin(data["Subject"].unique()[:subjects]) & (data["Days"] < days)
    out = data[keep].reset_index(drop=True)
    if seed is not None:
        noise = np.random.default_rng(seed).normal(0, 30, len(out))
        out = out.assign(Reaction=250 + 10 * out["Days"] + noise)
    return out


def ragged_datasets(sleepstudy):
    """Six data sets, 84 to 180 rows and 11 to 18 subjects, in two buckets (two programs):
    96 rows x 12 levels and 192 rows x 24 levels; those with 11 and 17 subjects get padded
    levels without rows. The last has no between-subject variation: a singular fit."""
    return {"s11d8": subset(sleepstudy, 11, 8), "s12d8": subset(sleepstudy, 12, 8),
            "s18d10": subset(sleepstudy, 18, 10), "s17d10": subset(sleepstudy, 17, 10),
            "s18d9": subset(sleepstudy, 18, 9), "flat": subset(sleepstudy, 12, 7, seed=3)}


def assert_close(actual, expected, rtol, what, atol=0.0):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    assert not bad.any(), f"{what}: {actual[bad][:5]} != {expected[bad][:5]}"


def test_bucket_ladder():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 6, 7, 9, 13, 17, 25, 180, 1000)] == \
        [1, 2, 3, 4, 6, 6, 8, 12, 16, 24, 32, 192, 1024]


@pytest.mark.parametrize("evaluator", ["blocked", "dense"])
def test_padding_leaves_the_likelihood_unchanged(sleepstudy, evaluator):
    """Rows of weight 0 and levels without rows (identity blocks, log-det 0) change nothing."""
    model = Model.from_formula(FORMULA, sleepstudy, "ML")
    padded = padded_arrays(model.design, 256)
    shape = padded_shape(model.design, (256, (24,)), "ML")
    theta = np.array([0.9, 0.02, 0.2])
    expected = model.deviance(theta, evaluator=evaluator)
    actual = deviance_function(padded, shape, evaluator)(theta)
    assert_close(actual, expected, 1e-12, "padded deviance")


@pytest.mark.slow  # six data sets, two buckets and six single fits: ~80 s of compilation
def test_datasets_equal_single_fits(sleepstudy):
    datasets = ragged_datasets(sleepstudy)
    out = lmm_jax.fit_batch(FORMULA, datasets=datasets, progress=False)
    assert out.names == tuple(datasets)
    assert out.converged.all()
    assert out.singular.tolist() == [False] * 5 + [True]
    for i, (name, frame) in enumerate(datasets.items()):
        single = lmm_jax.fit(FORMULA, frame)
        assert_close(out.beta[i], single.fixef, 1e-6, f"beta of {name}")
        assert_close(out.se[i], single.se, 1e-6, f"se of {name}")
        assert_close(out.theta[i], single.theta, 1e-6, f"theta of {name}", atol=1e-7)
        assert_close(out.sigma[i], single.sigma, 1e-6, f"sigma of {name}")
        assert_close(out.loglik[i], single.loglik, 1e-6, f"loglik of {name}")
        assert out.singular[i] == single.singular


def test_ml_and_a_list_of_datasets(sleepstudy):
    datasets = [subset(sleepstudy, 9, 10), subset(sleepstudy, 10, 9)]
    before = [frame.copy() for frame in datasets]
    out = lmm_jax.fit_batch("Reaction ~ Days + (1 | Subject)", datasets=datasets, method="ML",
                            progress=False)
    assert out.names == (0, 1) and out.method == "ML"
    for i, frame in enumerate(datasets):
        single = lmm_jax.fit("Reaction ~ Days + (1 | Subject)", frame, method="ML")
        assert_close(out.theta[i], single.theta, 1e-6, "theta")
        assert_close(out.loglik[i], single.loglik, 1e-6, "loglik")
        pd.testing.assert_frame_equal(frame, before[i])  # inputs untouched


def test_different_fixed_columns_name_the_dataset(sleepstudy):
    first = sleepstudy.assign(arm=np.where(sleepstudy["Days"] < 5, "a", "b"))
    second = sleepstudy.assign(arm=np.select([sleepstudy["Days"] < 3, sleepstudy["Days"] < 6], ["a", "b"], "c"))
    with pytest.raises(lmm_jax.DataError, match=r"dataset 1 has fixed-effect columns .*arm\[T.c\]"):
        lmm_jax.fit_batch("Reaction ~ arm + (1 | Subject)", datasets=[first, second], progress=False)


def test_bad_dataset_is_named(sleepstudy):
    with pytest.raises(lmm_jax.DataError, match="dataset 'b': column 'Days'"):
        lmm_jax.fit_batch(FORMULA, datasets={"a": sleepstudy, "b": sleepstudy.drop(columns="Days")},
                          progress=False)
    with pytest.raises(ValueError, match="not both"):
        lmm_jax.fit_batch(FORMULA, sleepstudy, datasets=[sleepstudy], progress=False)
    with pytest.raises(ValueError, match="dtype"):
        lmm_jax.fit_batch(FORMULA, datasets=[sleepstudy], dtype="float16", progress=False)



SHARDED_CHILD = """
import sys, numpy as np, jax, lmm_jax
sys.path.insert(0, {tests!r})
from test_batch_ragged import INTERCEPT_ONLY, ragged_datasets
from test_batch import simulate_sleepstudy
assert jax.local_device_count() == 4, jax.devices()
data = lmm_jax.datasets.load("sleepstudy")
by_response = lmm_jax.fit_batch(INTERCEPT_ONLY, data, simulate_sleepstudy(data, 6), progress=False)
by_dataset = lmm_jax.fit_batch(INTERCEPT_ONLY, datasets=ragged_datasets(data), progress=False)
np.savez({path!r}, **{{f"{{kind}}_{{name}}": getattr(out, name) for kind, out in
                      (("response", by_response), ("dataset", by_dataset))
                      for name in ("beta", "se", "theta", "sigma", "loglik")}})
"""


@pytest.mark.slow
def test_sharded_over_four_host_devices_equals_one_device(sleepstudy, tmp_path):
    """The batch split over 4 CPU devices (a subprocess: XLA flags act before JAX starts)
    gives the single-device numbers; 6 responses and 6 data sets pad to multiples of 4."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_batch import simulate_sleepstudy

    tests = str(Path(__file__).parent)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), os.environ.get("PYTHONPATH", "")])}
    path = str(tmp_path / "sharded.npz")
    done = subprocess.run([sys.executable, "-c", SHARDED_CHILD.format(tests=tests, path=path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = np.load(path)
    expected = {"response": lmm_jax.fit_batch(INTERCEPT_ONLY, sleepstudy, simulate_sleepstudy(sleepstudy, 6),
                                              progress=False),
                "dataset": lmm_jax.fit_batch(INTERCEPT_ONLY, datasets=ragged_datasets(sleepstudy),
                                             progress=False)}
    for kind, out in expected.items():
        for name in ("beta", "se", "theta", "sigma", "loglik"):
            assert_close(sharded[f"{kind}_{name}"], getattr(out, name), 1e-10, f"{kind} {name}", atol=1e-12)


def test_double_bar_terms_in_several_datasets(sleepstudy):
    """(Days || Subject) has two terms of one source; keyed by source, the second data set's
    terms were compared with the wrong ones ("has columns ['Days'] ... dataset 0 has
    ['(Intercept)']")."""
    formula = "Reaction ~ Days + (Days || Subject)"
    datasets = [sleepstudy, subset(sleepstudy, 12, 10)]
    out = lmm_jax.fit_batch(formula, datasets=datasets, progress=False)
    for i, frame in enumerate(datasets):
        single = lmm_jax.fit(formula, frame)
        assert_close(out.theta[i], single.theta, 1e-6, "theta", atol=1e-8)
        assert_close(out.loglik[i], single.loglik, 1e-8, "loglik")


def test_one_frame_or_an_empty_one_as_datasets_is_named(sleepstudy):
    with pytest.raises(lmm_jax.DataError, match="got one DataFrame"):
        lmm_jax.fit_batch(FORMULA, datasets=sleepstudy, progress=False)
    with pytest.raises(lmm_jax.DataError, match="dataset 1: data has no rows"):
        lmm_jax.fit_batch(FORMULA, datasets=[sleepstudy, sleepstudy.head(0)], progress=False)


def test_buckets_merge_down_to_a_few_programs():
    """Least added padding first: the two small shapes merge, the large one stays alone."""
    from lmm_jax.ragged import merged_buckets

    groups = {(8, (3,)): [0, 1], (12, (4,)): [2], (256, (24,)): [3], (12, (3,)): [4]}
    assert merged_buckets(groups, 4) == groups
    assert merged_buckets(groups, 2) == {(256, (24,)): [3], (12, (4,)): [0, 1, 2, 4]}
    assert merged_buckets(groups, 1) == {(256, (24,)): [0, 1, 2, 3, 4]}


def test_many_sizes_compile_a_few_programs_and_equal_single_fits(sleepstudy):
    """30 data sets of 4-18 subjects and 3-10 days fall into 10 ladder shapes (a program
    each); merged, 4 programs, and the entries still equal the single fits."""
    from lmm_jax.ragged import MAX_PROGRAMS, bucket_key, dataset_designs, group_by_bucket

    rng = np.random.default_rng(7)
    datasets = [subset(sleepstudy, int(rng.integers(4, 19)), int(rng.integers(3, 11)), seed=i)
                for i in range(30)]
    _, designs = dataset_designs(INTERCEPT_ONLY, datasets)
    assert len({bucket_key(d) for d in designs}) > MAX_PROGRAMS
    assert len(group_by_bucket(designs)) == MAX_PROGRAMS
    out = lmm_jax.fit_batch(INTERCEPT_ONLY, datasets=datasets, progress=False)
    assert out.converged.all()
    for i in (0, 11, 29):
        single = lmm_jax.fit(INTERCEPT_ONLY, datasets[i])
        assert_close(out.beta[i], single.fixef, 1e-8, f"beta of data set {i}")
        assert_close(out.theta[i], single.theta, 1e-6, f"theta of data set {i}", atol=1e-8)
        assert_close(out.loglik[i], single.loglik, 1e-8, f"loglik of data set {i}")


def test_theta_columns_follow_the_first_data_sets_term_order_by_name(sleepstudy):
    """lme4 orders terms by their number of levels, so two data sets can order θ differently:
    here (Days | Subject) before (1 | week) in the first (18 against 3 levels), after it in the
    second (2 subjects, 3 weeks). Every entry is in the first data set's order, and the
    named columns (theta_names) say which entry is which: by name each equals the data
    set's own fit (an audit read the unnamed columns in the single fit's order)."""
    from lmm_jax.structure_report import theta_names

    formula = "Reaction ~ Days + (Days | Subject) + (1 | week)"
    data = sleepstudy.assign(week=np.asarray(["a", "b", "c"])[sleepstudy["Days"].to_numpy() % 3])
    small = data[data["Subject"].isin(data["Subject"].unique()[:2])].reset_index(drop=True)
    out = lmm_jax.fit_batch(formula, datasets=[data, small], progress=False)
    assert out.theta_names == ("Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days",
                               "week.(Intercept)")
    for i, frame in enumerate((data, small)):
        single = lmm_jax.fit(formula, frame)
        by_name = dict(zip(theta_names(single.design.terms), single.theta))
        assert_close(out.theta[i], [by_name[name] for name in out.theta_names], 1e-6, f"theta of {i}", atol=1e-7)
        assert_close(out.loglik[i], single.loglik, 1e-8, f"loglik of {i}")
    assert theta_names(lmm_jax.fit(formula, small).design.terms)[0] == "week.(Intercept)"
