"""Shared test helpers: reference cases copied from shared/reference, and data loading."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# The tests' compiled programs go to a folder of this run, shared by pytest-xdist's workers
# (they inherit the environment of the process that loads this file first), never to the
# user's cache; set before lmm_jax is imported, which turns the cache on.
if "LMM_JAX_CACHE_DIR" not in os.environ:
    os.environ["LMM_JAX_CACHE_DIR"] = _RUN_CACHE = tempfile.mkdtemp(prefix="lmm_jax_test_cache_")
else:
    _RUN_CACHE = None

import lmm_jax  # noqa: E402
from lmm_jax.exported_programs import forget_compiled_programs  # noqa: E402

jax.config.update("jax_enable_x64", True)
REFERENCE = Path(__file__).parent / "reference"


def pytest_unconfigure(config):
    """The run's cache folder goes with the process that made it."""
    if _RUN_CACHE is not None:
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _compiled_programs_freed_after_each_module():
    """A test module's compiled programs are freed when it ends: a worker holding every
    program of the run grew to several GB; a later module that needs one loads it from the
    run's compilation cache."""
    yield
    forget_compiled_programs()


def bodyweight_missing_cell():
    """BodyWeight with Time cut into weeks wk (early, late, mid) and the D3 x late cell
    removed: a factorial fixed part with a missing cell (rank deficient), as lmerTest was run."""
    import numpy as np
    import pandas as pd

    data = lmm_jax.datasets.load("bodyweight")
    week = np.where(data["Time"] < 22, "early", np.where(data["Time"] < 44, "mid", "late"))
    data = data.assign(wk=pd.Categorical(week, categories=["early", "late", "mid"]))
    return data[~((data["Diet"] == "D3") & (data["wk"] == "late"))]


def load_case(case_id: str) -> dict:
    return json.loads((REFERENCE / f"{case_id}.json").read_text())


def cases_of_kind(kind: str) -> list[str]:
    return sorted(p.stem for p in REFERENCE.glob("*.json") if json.loads(p.read_text())["kind"] == kind)


def case_data(case: dict):
    """The data set a case was computed on, from the package's bundled copy."""
    return lmm_jax.datasets.load(Path(case["data"]).stem)


@pytest.fixture(scope="session")
def sleepstudy():
    return lmm_jax.datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def sleep_fits(sleepstudy):
    """sleepstudy (Days | Subject) fits by (method, balanced); unbalanced: every 7th row dropped
    (observed and expected information differ). Shared by test_information and test_robust."""
    unbalanced = sleepstudy.drop(index=sleepstudy.index[::7])
    return {(method, balanced): lmm_jax.fit("Reaction ~ Days + (Days | Subject)",
                                            sleepstudy if balanced else unbalanced, method=method)
            for method in ("REML", "ML") for balanced in (True, False)}


@pytest.fixture(scope="session")
def fitted():
    """case_id -> (case, FitResult): each reference case fitted once per test session."""
    cache = {}

    def get(case_id):
        if case_id not in cache:
            case = load_case(case_id)
            cache[case_id] = (case, lmm_jax.fit(case["formula"], case_data(case), method=case["method"]))
        return cache[case_id]

    return get
