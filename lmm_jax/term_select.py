"""Pick one random term of a fitted design by name, and build its dense Z block (host side).

A term may be named as lme4 names it in `VarCorr` ("Subject", "Subject.1"), by its
grouping factor ("cask:batch"; the order of the factors in an interaction does not
matter) or as written in a formula ("(1 | batch:cask)"; spaces do not matter). Used by
the variance-component tests (`rlrt`, `exact_f_test`), which test one term.
"""

from __future__ import annotations

import numpy as np

from .design import Design, RandomTerm


def term_label(term: RandomTerm) -> str:
    """The term as a formula would write it after expansion: "(1 | cask:batch)"."""
    return f"({term.spec.expr} | {term.group})"


def _normalise(text: str) -> str:
    return "".join(str(text).split())


def _keys(term: RandomTerm) -> set:
    """All the spellings that name `term`: its VarCorr name, its group, its bar expression."""
    factors = frozenset(term.spec.factors)
    expr = _normalise(term.spec.expr)
    return {("name", _normalise(term.name)), ("group", factors), ("bar", expr, factors)}


def _parse_key(text: str):
    """A user's spelling -> the keys it may match (see `_keys`)."""
    flat = _normalise(text)
    if flat.startswith("(") and flat.endswith(")") and "|" in flat:
        expr, _, group = flat[1:-1].partition("|")
        return {("bar", expr.lstrip("|"), frozenset(group.lstrip("|").split(":")))}
    return {("name", flat), ("group", frozenset(flat.split(":")))}


def available_terms(design: Design) -> str:
    return ", ".join(f"{term_label(t)} (name {t.name!r})" for t in design.terms)


def find_term(design: Design, term: str | None) -> int:
    """Index in `design.terms` of the term named `term`; None picks the only term.

    Raises ValueError naming the available terms when `term` matches none or several.
    """
    terms = design.terms
    if term is None:
        if len(terms) == 1:
            return 0
        raise ValueError(f"the model has {len(terms)} random terms; say which one to test with "
                         f"term=...; available: {available_terms(design)}")
    if not isinstance(term, str):
        raise ValueError(f"term must be a string such as '(1 | group)', got {type(term).__name__}")
    wanted = _parse_key(term)
    hits = [i for i, t in enumerate(terms) if _keys(t) & wanted]
    if len(hits) == 1:
        return hits[0]
    what = "matches no" if not hits else "matches several"
    raise ValueError(f"term {term!r} {what} random term of the model; available: "
                     f"{available_terms(design)}")


DENSE_LIMIT = 2 ** 27  # entries (1 GiB of float64): the dense tests refuse bigger Z blocks


def dense_z(term: RandomTerm) -> np.ndarray:
    """Z_k (n x levels·dim): row i holds term.values[i] in the columns of its level."""
    n, dim = term.values.shape
    if n * term.n_levels * dim > DENSE_LIMIT:
        raise ValueError(f"term {term_label(term)} would need a dense {n} x {term.n_levels * dim} "
                         "matrix, too large for this test (it works on dense matrices)")
    z = np.zeros((n, term.n_levels * dim))
    columns = term.codes[:, None] * dim + np.arange(dim)[None, :]
    np.put_along_axis(z, columns, term.values, axis=1)
    return z
