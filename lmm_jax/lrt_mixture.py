"""Chi-bar-square mixtures for likelihood-ratio tests of variance components.

Under H0 a statistic whose tested parameters include variances at zero follows
Σ_j w_j χ²_j (χ²₀: a point mass at zero). Per random term of the full model, matched
with the reduced model's terms on the same grouping factor:

    unchanged                                        χ²₀ (weight 1 at 0 df)
    a parameters added, no new variance              χ²_a                (interior)
    one new variance and a - 1 covariances           ½χ²_{a-1} + ½χ²_a   (Stram & Lee 1994)
    two or more new variances in one term            no closed form -> None

and a fixed effects added give χ²_a. Independent pieces add: the law of the sum is the
convolution of the pieces' weights (exact when the estimators of the pieces are
asymptotically independent, as Self & Liang's (1987) orthogonal cases).
"""

from __future__ import annotations

from fractions import Fraction


from .term_select import term_label

Mixture = dict[int, Fraction]  # degrees of freedom -> weight


def convolve(a: Mixture, b: Mixture) -> Mixture:
    """The mixture of X + Y for independent X ~ a and Y ~ b (degrees of freedom add)."""
    out: Mixture = {}
    for da, wa in a.items():
        for db, wb in b.items():
            out[da + db] = out.get(da + db, Fraction(0)) + wa * wb
    return out


def describe(mixture: Mixture) -> str:
    """'1/2 χ²(1) + 1/2 χ²(2)'."""
    return " + ".join(f"{w} χ²({d})" if w != 1 else f"χ²({d})" for d, w in sorted(mixture.items()))


def mixture_p_value(statistic: float, mixture: Mixture) -> float:
    """Σ_j w_j P(χ²_j > statistic), P(χ²₀ > s) = 0 for s > 0 (and 1 for s <= 0)."""
    from scipy import stats  # scipy.stats takes 0.3 s to import: only when needed
    total = 0.0
    for df, weight in mixture.items():
        tail = (1.0 if statistic <= 0 else 0.0) if df == 0 else stats.chi2.sf(max(statistic, 0.0), df)
        total += float(weight) * float(tail)
    return float(total)


def _term_piece(term, matched) -> tuple[Mixture | None, str | None]:
    """The mixture of one full-model term given the reduced terms nested in it."""
    added = term.structure.n_params - sum(t.structure.n_params for t in matched)
    old = {c for t in matched for c in t.column_names}
    new = [c for c in term.column_names if c not in old]
    label = term_label(term)
    if added == 0:
        return {0: Fraction(1)}, None
    if not new:
        return {added: Fraction(1)}, f"{label} adds {added} covariance(s), interior: χ²({added})"
    if len(new) == 1:
        half = Fraction(1, 2)
        why = (f"{label} adds the variance of {new[0]} (on the boundary) and {added - 1} "
               f"covariance(s): 1/2 χ²({added - 1}) + 1/2 χ²({added}) (Self & Liang 1987; "
               "Stram & Lee 1994)")
        return {added - 1: half, added: half}, why
    return None, (f"{label} adds {len(new)} variances at once ({', '.join(new)}): the mixture "
                  "weights depend on the information matrix; no closed form")


def _match(reduced_terms, term) -> list:
    factors = frozenset(term.spec.factors)
    return [t for t in reduced_terms if frozenset(t.spec.factors) == factors
            and set(t.column_names) <= set(term.column_names)]


def variance_mixture(reduced_design, full_design) -> tuple[Mixture | None, str]:
    """The chi-bar-square mixture of the LRT of `reduced` within `full`, and why.

    Returns (None, reason) when the random parts are not nested or no closed form applies.
    """
    mixture: Mixture = {max(0, full_design.n_fixed - reduced_design.n_fixed): Fraction(1)}
    reasons, boundary_pieces, used = [], 0, []
    for term in full_design.terms:
        matched = [t for t in _match(reduced_design.terms, term) if all(t is not u for u in used)]
        used.extend(matched)
        piece, why = _term_piece(term, matched)
        if piece is None:
            return None, why
        boundary_pieces += len(piece) > 1
        mixture = convolve(mixture, piece)
        if why:
            reasons.append(why)
    if len(used) != len(reduced_design.terms):
        return None, "the random terms of `reduced` are not all within those of `full`: not nested"
    note = ("; the pieces are convolved, which assumes asymptotically independent estimates"
            if len(reasons) > 1 and boundary_pieces else "")
    fixed = full_design.n_fixed - reduced_design.n_fixed
    if fixed:  # β and θ are asymptotically independent in a linear mixed model
        reasons.append(f"{fixed} fixed effect(s) added, interior: χ²({fixed})")
    if boundary_pieces == 0:
        return mixture, f"{describe(mixture)}: no variance on the boundary ({'; '.join(reasons)})"
    return mixture, f"{describe(mixture)}: {'; '.join(reasons)}{note}"
