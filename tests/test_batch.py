"""`fit_batch` against single fits: the batched program must give the same numbers as a loop."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmm_jax
from lmm_jax.arrays import relative_factors

FORMULA = "Reaction ~ Days + (Days | Subject)"

def simulate_sleepstudy(data, n_responses: int, seed: int = 20261125) -> np.ndarray:
    """(n, B) responses y = Xβ̂ + Zb + ε from the sleepstudy REML fit: b ~ N(0, Σ̂), ε ~ N(0, σ̂²)."""
    model = lmm_jax.Model.from_formula(FORMULA, data)
    result = model.fit()
    term = model.design.terms[0]
    factor = result.sigma * np.asarray(relative_factors(result.theta, model.shape)[0])  # Σ̂ = LL'
    rng = np.random.default_rng(seed)
    b = np.einsum("ij,rmj->rmi", factor, rng.standard_normal((n_responses, term.n_levels, term.dim)))
    random_part = np.einsum("nj,rnj->nr", term.values, b[:, term.codes, :])
    noise = result.sigma * rng.standard_normal((model.design.nobs, n_responses))
    return (model.design.X @ result.fixef.to_numpy())[:, None] + random_part + noise

def assert_close(actual, expected, rtol, what, atol=0.0):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    assert not bad.any(), f"{what}: {actual[bad][:5]} != {expected[bad][:5]}"

def test_batch_equals_loop_of_single_fits(sleepstudy):
    """10,000 simulated responses in one call; a random 300 of them refitted one by one."""
    Y = simulate_sleepstudy(sleepstudy, 10_000)
    out = lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y, progress=False)
    assert out.beta.shape == (10_000, 2) and out.theta.shape == (10_000, 3)
    assert out.converged.all()
    for name in ("beta", "se", "theta", "sigma", "loglik"):
        assert np.isfinite(getattr(out, name)).all(), name
    model = lmm_jax.Model.from_formula(FORMULA, sleepstudy)
    subset = np.random.default_rng(1).choice(10_000, 300, replace=False)
    for i in subset:
        single = model.fit_params(Y[:, i])
        assert_close(out.beta[i], single.beta, 1e-8, f"beta of response {i}")
        assert_close(out.theta[i], single.theta, 1e-8, f"theta of response {i}", atol=1e-10)
        assert_close(out.sigma[i], np.sqrt(single.sigma2), 1e-8, f"sigma of response {i}")
        assert_close(out.loglik[i], single.loglik, 1e-8, f"loglik of response {i}")
        assert out.singular[i] == bool(single.singular)

def test_small_batch_equals_fit_per_column(sleepstudy):
    """B = 5 named columns, one row of the data missing a design value: fit_batch == lmm_jax.fit."""
    data = sleepstudy.copy()
    data.loc[7, "Days"] = np.nan  # dropped from the design, so from every response too
    Y = simulate_sleepstudy(sleepstudy, 5, seed=5)
    columns = [f"gene{i}" for i in range(5)]
    with pytest.warns(UserWarning, match="dropped 1 of 180 rows"):
        frame = lmm_jax.fit_batch("expr ~ Days + (Days | Subject)", data,
                                  responses=pd.DataFrame(Y, columns=columns), progress=False).to_frame()
    assert list(frame.index) == columns
    assert list(frame.columns) == ["beta[(Intercept)]", "beta[Days]", "se[(Intercept)]", "se[Days]",
                                   "theta[Subject.(Intercept)]", "theta[Subject.Days.(Intercept)]",
                                   "theta[Subject.Days]", "sigma", "loglik",
                                   "converged", "singular"]
    for name, y in zip(columns, Y.T):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropped row
            single = lmm_jax.fit(FORMULA, data.assign(Reaction=y))
        row = frame.loc[name]
        assert_close(row[["beta[(Intercept)]", "beta[Days]"]], single.fixef, 1e-8, "beta")
        assert_close(row[["se[(Intercept)]", "se[Days]"]], single.se, 1e-8, "se")
        assert_close(row[["theta[Subject.(Intercept)]", "theta[Subject.Days.(Intercept)]", "theta[Subject.Days]"]],
                     single.theta, 1e-8, "theta", atol=1e-10)
        assert_close(row["sigma"], single.sigma, 1e-8, "sigma")
        assert_close(row["loglik"], single.loglik, 1e-8, "loglik")
        assert row["converged"] and row["singular"] == single.singular

def test_wrong_number_of_rows(sleepstudy):
    with pytest.raises(lmm_jax.DataError, match="one row per row of data"):
        lmm_jax.fit_batch(FORMULA, sleepstudy, responses=np.zeros((179, 3)), progress=False)

def test_missing_value_in_responses_names_the_column(sleepstudy):

    Y = pd.DataFrame({"a": sleepstudy["Reaction"], "b": sleepstudy["Reaction"]})
    Y.loc[3, "b"] = np.nan
    with pytest.raises(lmm_jax.DataError, match="'b'"):
        lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y, progress=False)


CACHED_BATCH = """
import sys, numpy as np, lmm_jax
if sys.argv[1] == "-":
    lmm_jax.disable_compilation_cache()
else:
    lmm_jax.enable_compilation_cache(sys.argv[1])
data = lmm_jax.datasets.load("sleepstudy")
Y = np.stack([data["Reaction"] * s for s in np.linspace(0.5, 2.0, 40)], axis=1)
out = lmm_jax.fit_batch({formula!r}, data, responses=Y, progress=False, chunk_size=16)
np.save(sys.argv[2], np.column_stack([out.beta, out.se, out.theta, out.loglik]))
"""


def test_batch_through_stored_programs_equals_plain(tmp_path):
    """With the compilation cache on, fit_batch's chunks run the stored compiled program
    (`exported_programs.py`), in this process and, loaded, in the next: the same numbers as
    with the cache off."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = CACHED_BATCH.format(formula=FORMULA)
    outputs = []
    for cache in ("-", tmp_path / "cache", tmp_path / "cache"):
        target = tmp_path / f"out{len(outputs)}.npy"
        subprocess.run([sys.executable, "-c", code, str(cache), str(target)], env=env, check=True)
        outputs.append(np.load(target))
        if cache != "-":
            assert len(list((tmp_path / "cache" / "lmm_jax_programs").glob("*.exe"))) == 1
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12)
    np.testing.assert_array_equal(outputs[2], outputs[1])


def test_a_responses_frame_is_matched_to_data_by_index_label(sleepstudy):
    """A shuffled copy of the responses (same labels) was matched by position: another
    response fitted silently (β̂ 293.7, 1.06 where the data give 251.4, 10.47)."""
    Y = pd.DataFrame(simulate_sleepstudy(sleepstudy, 3, seed=8), index=sleepstudy.index, columns=list("abc"))
    in_order = lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y, progress=False)
    shuffled = lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y.sample(frac=1.0, random_state=3),
                                 progress=False)
    assert_close(shuffled.beta, in_order.beta, 1e-12, "beta")
    assert_close(shuffled.loglik, in_order.loglik, 1e-12, "loglik")
    with pytest.raises(lmm_jax.DataError, match="not a reordering of data's index"):
        lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y.set_axis(Y.index + 1000), progress=False)
    by_position = lmm_jax.fit_batch(FORMULA, sleepstudy, responses=Y.to_numpy(), progress=False)
    assert_close(by_position.beta, in_order.beta, 1e-12, "beta by position")


def test_two_term_batch_of_10000_runs_its_chunks_one_at_a_time(sleepstudy):
    """(Days || Subject) has a 21 x 21 Schur complement: its Cholesky factor is a LAPACK call,
    batched under vmap. Two chunks at once (one per core) hung for good at B >= 64 with the
    CPU idle (jaxlib's batched kernels wait on the pool they run on); one at a time they
    finish. A hang here ends the test process after 10 minutes."""
    import faulthandler

    from lmm_jax.blocked import factors_unrolled

    formula = "Reaction ~ Days + (Days || Subject)"
    model = lmm_jax.Model.from_formula(formula, sleepstudy)
    assert not factors_unrolled(model.shape, model.design.n_fixed)
    plain = lmm_jax.Model.from_formula(FORMULA, sleepstudy)
    assert factors_unrolled(plain.shape, plain.design.n_fixed)  # the 3 x 3 of (Days | Subject)
    Y = simulate_sleepstudy(sleepstudy, 10_000, seed=12)
    faulthandler.dump_traceback_later(600, exit=True)
    try:
        out = lmm_jax.fit_batch(formula, sleepstudy, responses=Y, progress=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert out.theta.shape == (10_000, 2) and out.converged.all()
    for i in (0, 4_999, 9_999):
        single = model.fit_params(Y[:, i])
        assert_close(out.beta[i], single.beta, 1e-8, f"beta of response {i}")
        assert_close(out.theta[i], single.theta, 1e-8, f"theta of response {i}", atol=1e-10)
        assert_close(out.loglik[i], single.loglik, 1e-8, f"loglik of response {i}")


def test_theta_columns_carry_lme4s_theta_names(sleepstudy):
    """to_frame() named θ's columns theta[0], theta[1], ...; now as lme4's
    names(getME(m, "theta")) (lme4 1.1-31): "Subject.(Intercept)", "Subject.Days" for
    (Days || Subject), and a term's VarCorr name where a group repeats a parameter name."""
    Y = simulate_sleepstudy(sleepstudy, 2, seed=9)
    frame = lmm_jax.fit_batch("Reaction ~ Days + (Days || Subject)", sleepstudy, responses=Y,
                              progress=False).to_frame()
    assert [c for c in frame.columns if c.startswith("theta")] == ["theta[Subject.(Intercept)]",
                                                                   "theta[Subject.Days]"]
    twice = lmm_jax.fit_batch("Reaction ~ Days + (1 | Subject) + (1 | Subject)", sleepstudy, responses=Y,
                              progress=False)
    assert twice.theta_names == ("Subject.(Intercept)", "Subject.1.(Intercept)")


def test_responses_the_fixed_effects_fit_exactly_are_flagged(sleepstudy):
    """A constant response or y = Xb has no optimum (the criterion falls as σ² -> 0): an
    audit saw converged=True with a log-likelihood of 2589.9 at B = 7 and NaN at B = 1 for
    the same response. Now they are not converged (status EXACT_FIT) with NaN θ, σ, SE and
    log-likelihood, β̂ their least-squares fit, and a warning; the others are unchanged."""
    from lmm_jax.newton import EXACT_FIT, STATUS_MESSAGES

    Y = simulate_sleepstudy(sleepstudy, 4, seed=10)
    Y[:, 1], Y[:, 2] = 3.7, 3.0 + 2.0 * sleepstudy["Days"].to_numpy()
    for kwargs in (dict(responses=Y, data=sleepstudy),
                   dict(datasets=[sleepstudy.assign(Reaction=y) for y in Y.T])):
        with pytest.warns(UserWarning, match="2 response\\(s\\) are fitted exactly"):
            out = lmm_jax.fit_batch(FORMULA, progress=False, **kwargs)
        assert out.converged.tolist() == [True, False, False, True]
        assert out.status[1] == out.status[2] == EXACT_FIT and "exactly" in STATUS_MESSAGES[EXACT_FIT]
        assert_close(out.beta[1:3], [[3.7, 0.0], [3.0, 2.0]], 1e-12, "least-squares beta", atol=1e-12)
        for values in (out.theta[1:3], out.se[1:3], out.sigma[1:3], out.loglik[1:3]):
            assert np.isnan(values).all()
        single = lmm_jax.fit(FORMULA, sleepstudy.assign(Reaction=Y[:, 3]))
        assert_close(out.loglik[3], single.loglik, 1e-8, "loglik of an ordinary response")


@pytest.mark.parametrize("correlation", [None, "ar1(~ 1 | Subject)"])
def test_fit_of_a_response_the_fixed_effects_fit_exactly_is_a_clear_error(sleepstudy, correlation):
    """lmm_jax.fit reported converged with σ ~1e-7 and a log-likelihood of 2649 (lme4
    warns that it failed to converge)."""
    for y in (np.full(len(sleepstudy), 3.7), 3.0 + 2.0 * sleepstudy["Days"].to_numpy()):
        with pytest.raises(lmm_jax.DataError, match="'y' is fitted exactly by the fixed effects"):
            lmm_jax.fit("y ~ Days + (Days | Subject)", sleepstudy.assign(y=y), correlation=correlation)


def test_repr_of_a_large_batch_is_a_short_summary():
    """repr printed every array (59,263 characters for 1,000 fits); now counts, statuses,
    names and the first and last rows of to_frame(), whatever the batch size."""
    from lmm_jax.newton import CONVERGED_GRADIENT, EXACT_FIT, MAX_ITERATIONS, STATUS_MESSAGES

    b = 1000
    rng = np.random.default_rng(0)
    status = np.full(b, CONVERGED_GRADIENT)
    status[[10, 20, 30]] = MAX_ITERATIONS
    status[40] = EXACT_FIT
    result = lmm_jax.BatchResult(
        tuple(f"gene{i}" for i in range(b)), ("(Intercept)", "Days"), "REML", rng.normal(size=(b, 2)),
        rng.random((b, 2)), rng.random((b, 3)), rng.random(b), rng.normal(size=b), status <= 1,
        np.arange(b) % 10 == 0, status, np.full(b, 7),
        ("Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"))
    text = repr(result)
    assert len(text) < 2000
    lines = text.splitlines()
    assert lines[0] == "BatchResult: 1000 REML fits, 996 converged, 100 singular"
    assert lines[1:4] == [f"  996 {STATUS_MESSAGES[CONVERGED_GRADIENT]}",
                          f"  3 {STATUS_MESSAGES[MAX_ITERATIONS]}", f"  1 {STATUS_MESSAGES[EXACT_FIT]}"]
    assert lines[4] == "fixed effects: (Intercept), Days"
    assert lines[5] == "theta: Subject.(Intercept), Subject.Days.(Intercept), Subject.Days"
    assert lines[7].startswith("response") and lines[8].startswith("gene0 ")
    assert lines[-1].startswith("gene999 ") and lines[11].startswith("...")
    assert len(lines) == 6 + 2 + 3 + 1 + 3  # summary, the frame's two header lines, rows, "...", rows
