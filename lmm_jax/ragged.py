"""One model over many data sets of different sizes: padding with masks, shapes in buckets.

Each data set gets its own design (its own rows, its own factor levels). To fit them in
one compiled program they are padded to shared shapes:

* rows: to n̄ rows, the extra rows with prior weight 0 and all-zero y, X and Z rows.
  Weight 0 removes them from every cross-product (Z'WZ, X'WX, ...); the criterion
  counts n = #{i : wᵢ > 0} and Σ log wᵢ over those rows only (`ModelShape.padded`).
* levels: each term to m̄_k levels; the extra levels receive no rows, so their block
  of Λ'Z'WZΛ + I is the identity: log-determinant 0, random effect 0 — the likelihood
  of the padded model is that of the data set.

n̄ and m̄_k are rounded up on the ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of 2
and 1.5 × powers of 2), so data sets of similar size share a bucket and one program,
at most 50% padding per dimension; with more than `MAX_PROGRAMS` such shapes, the buckets
that add the least padding are merged (`group_by_bucket`). Terms are put in the first data
set's order (lme4 orders terms by decreasing number of levels, which may differ between
data sets); θ is reported in that order.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np
import pandas as pd

from .arrays import ModelArrays, ModelShape
from .design import DataError, Design, build_design
from .formula import FormulaError
from .model import _is_reml


def bucket_size(n: int) -> int:
    """The smallest 2^k or 3·2^(k-1) that is ≥ n (n ≥ 1)."""
    if n <= 2:
        return max(int(n), 1)
    power = 2 ** math.floor(math.log2(n - 1))  # power < n ≤ 2·power
    return 3 * power // 2 if n <= 3 * power // 2 else 2 * power


def dataset_designs(formula: str, datasets) -> tuple[tuple, list[Design]]:
    """(names, designs): one design per data set, terms in the first one's order."""
    if isinstance(datasets, pd.DataFrame):  # iterating it would give its column names
        raise DataError("datasets must be a list or dict of data sets, got one DataFrame; pass "
                        "datasets=[frame], or data=frame with responses=")
    if isinstance(datasets, dict):
        names, frames = tuple(datasets), list(datasets.values())
    else:
        frames = list(datasets)
        names = tuple(range(len(frames)))
    if not frames:
        raise DataError("datasets must hold at least one data set")
    designs = []
    for i, frame in zip(names, frames):
        try:
            design = build_design(formula, frame)
        except (DataError, FormulaError) as error:
            raise type(error)(f"dataset {i!r}: {error}") from None
        designs.append(_check_same_structure(design, designs[0] if designs else None, i, names[0]))
    return names, designs


def _check_same_structure(design: Design, first: Design | None, name, first_name) -> Design:
    """`design` with its terms in `first`'s order; an error naming the data set otherwise."""
    if first is None:
        return design
    if design.fixed_names != first.fixed_names:
        raise DataError(f"dataset {name!r} has fixed-effect columns {list(design.fixed_names)}, "
                        f"dataset {first_name!r} has {list(first.fixed_names)}; every data set "
                        "must give the same columns (same factor levels, none dropped as rank deficient)")
    by_spec = {t.spec: t for t in design.terms}  # the spec, not its source: (x || g) has two terms
    for term in first.terms:
        other = by_spec[term.spec]
        if other.column_names != term.column_names:
            raise DataError(f"dataset {name!r} has columns {list(other.column_names)} in random term "
                            f"{term.spec.source!r}, dataset {first_name!r} has {list(term.column_names)}")
    return dataclasses.replace(design, terms=tuple(by_spec[t.spec] for t in first.terms))


def bucket_key(design: Design) -> tuple[int, tuple[int, ...]]:
    """(n̄, (m̄_1, ..., m̄_K)): the padded shape of a data set."""
    return bucket_size(design.nobs), tuple(bucket_size(t.n_levels) for t in design.terms)


MAX_PROGRAMS = 4  # compiled programs (bucket shapes) per fit_batch(datasets=...) call


def group_by_bucket(designs: list[Design], max_programs: int = MAX_PROGRAMS) -> dict[tuple, list[int]]:
    """Indices of the data sets sharing each padded shape, in at most `max_programs`
    shapes: while there are more, the two buckets whose merge adds the least padded work
    (`_merge_cost`) share the larger of their shapes, entry by entry. Every shape is a
    program to compile (~1-3 s on a CPU, and each holds memory maps that are never freed):
    120 data sets of 8-260 rows and 3-24 groups had 27 shapes, 30-47 s of compiling per
    call, and repeated calls ran out of memory maps (LLVM's "Unable to allocate section
    memory" aborted the process)."""
    groups = defaultdict(list)
    for i, design in enumerate(designs):
        groups[bucket_key(design)].append(i)
    return merged_buckets(dict(groups), max_programs)


def merged_buckets(groups: dict[tuple, list[int]], max_programs: int) -> dict[tuple, list[int]]:
    """`groups` (shape -> members) merged pairwise, least added padding first, down to
    `max_programs` shapes (`group_by_bucket`)."""
    groups = dict(groups)
    while len(groups) > max_programs:
        keys = list(groups)
        pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
        a, b = min(pairs, key=lambda pair: _merge_cost(*pair, groups))
        merged = _covering_key(a, b)
        members = groups.pop(a) + groups.pop(b)
        groups[merged] = sorted(groups.get(merged, []) + members)
    return groups


def _covering_key(a: tuple, b: tuple) -> tuple:
    """The smallest shape holding both: the larger row count and level counts."""
    return max(a[0], b[0]), tuple(max(x, y) for x, y in zip(a[1], b[1]))


def _fit_work(key: tuple) -> int:
    """A proxy for one fit's cost in shape (n̄, m̄): its rows and its random-effect levels."""
    return key[0] + sum(key[1])


def _merge_cost(a: tuple, b: tuple, groups: dict) -> int:
    """The padded work merging buckets a and b adds: their fits at the covering shape."""
    covering = _fit_work(_covering_key(a, b))
    return sum(len(groups[k]) * (covering - _fit_work(k)) for k in (a, b))


def padded_arrays(design: Design, n_rows: int) -> ModelArrays:
    """The design's arrays (numpy) padded to n_rows rows of weight 0; codes of padding rows 0."""
    extra = n_rows - design.nobs

    def pad(a):
        return np.concatenate([a, np.zeros((extra,) + a.shape[1:], a.dtype)])

    return ModelArrays(pad(design.y), pad(design.X), pad(design.weights),
                       tuple(pad(t.codes) for t in design.terms), tuple(pad(t.values) for t in design.terms))


def stacked_arrays(designs: list[Design], key) -> ModelArrays:
    """The padded arrays of data sets of one bucket, stacked along a leading batch axis."""
    parts = [padded_arrays(d, key[0]) for d in designs]
    return ModelArrays(*(np.stack([getattr(p, f) for p in parts]) for f in ("y", "X", "weights")),
                       tuple(np.stack(c) for c in zip(*(p.codes for p in parts))),
                       tuple(np.stack(v) for v in zip(*(p.values for p in parts))))


def padded_shape(design: Design, key, method: str) -> ModelShape:
    """The static shape of a bucket: padded level counts, and n counted from the weights."""
    return ModelShape(tuple(key[1]), tuple(t.structure for t in design.terms), _is_reml(method),
                      padded=True)
