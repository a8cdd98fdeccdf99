"""Bundled data sets, as the reference implementations (lme4, nlme, metafor) saw them.

>>> from lmm_jax import datasets
>>> datasets.load("sleepstudy").shape
(180, 3)

Text columns are read as strings; group identifiers stay as they are in the CSV
(integers stay integers). `datasets.names()` lists what is bundled.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

_DESCRIPTIONS = {
    "sleepstudy": "Reaction times (ms) of 18 subjects over 10 days of sleep deprivation (lme4).",
    "dyestuff": "Yield of dyestuff from 6 batches of an intermediate product, 5 preparations each (lme4).",
    "dyestuff2": "Simulated data with the Dyestuff layout whose batch variance is estimated as zero (lme4).",
    "pastes": "Strength of paste: 10 delivery batches, 3 casks per batch, 2 assays per cask (lme4).",
    "orthodont": "Pituitary-pterygomaxillary distance in 27 children at ages 8-14 (nlme).",
    "rail": "Travel time of ultrasonic waves along 6 rails, 3 measurements each (nlme).",
    "mathachieve": "High School and Beyond: math achievement of 7,185 students in 160 schools (nlme).",
    "bodyweight": "Body weights of 16 rats on 3 diets, measured over 64 days (nlme).",
    "bcg": "BCG vaccine trials: log risk ratios yi with known sampling variances vi (metafor).",
    "insteval": "Lecture evaluations at ETH Zurich: 73,421 ratings, students s by lecturers d (lme4).",
}


# Columns that are categorical codes stored as numbers: read as text so that formulas
# treat them as factors, as R does (InstEval's `service` gives `service[T.1]`).
_TEXT_COLUMNS = {"insteval": ["s", "d", "dept", "service", "studage", "lectage"]}


def names() -> list[str]:
    """Names of the bundled data sets."""
    return sorted(_DESCRIPTIONS)


def describe(name: str) -> str:
    """One line saying what data set `name` is."""
    _check_name(name)
    return _DESCRIPTIONS[name]


def load(name: str) -> pd.DataFrame:
    """Load bundled data set `name` as a new DataFrame (the caller may modify it freely),
    named in its `attrs["name"]`."""
    _check_name(name)
    folder = resources.files(__name__) / "data"
    for suffix in (".csv", ".csv.gz"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            with resources.as_file(path) as real_path:
                text = {column: str for column in _TEXT_COLUMNS.get(name, [])}
                frame = pd.read_csv(real_path, dtype=text)
                frame.attrs["name"] = name  # summary()'s `Data:` line (`data_names.py`)
                return frame
    raise FileNotFoundError(f"bundled data set {name!r} is missing from the installation")


def _check_name(name: str) -> None:
    if name not in _DESCRIPTIONS:
        raise ValueError(f"no bundled data set named {name!r}; available: {', '.join(names())}")
