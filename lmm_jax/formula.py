"""lme4 formula syntax: split `y ~ fixed + (expr | g)` into its fixed and random parts.

The fixed part is left to formulaic; this module only finds the random-effect terms
(bars), expands the lme4 shorthands and checks that each part is well formed:

- ``(expr | g)``   correlated random effects for the columns of ``expr`` within levels of g;
- ``(expr || g)``  uncorrelated: one term per formula term of ``expr`` (lme4's ``||``);
- ``(expr | a/b)`` nested: ``(expr | a) + (expr | b:a)``;
- ``(expr | a:b)`` the interaction of factors a and b as one grouping factor;
- ``us(expr | g)`` the same; ``diag(expr | g)`` one term with a diagonal covariance (for a
  factor, one variance per level: glmmTMB's diag, unlike ``||``); ``cs``, ``homcs``,
  ``ar1``, ``toep`` and keywords added by `register_structure`: the term's covariance
  structure (`custom_structures.py`).

The result is plain data (`ParsedFormula`): everything here is host-side string work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import formulaic

from .custom_structures import structure_keywords
from .errors import plain_message

_NAME = re.compile(r"^(?!\d)[\w.]+$")  # letters of any script, digits, '_' and '.'; not a digit first
_OFFSET = re.compile(r"^offset\s*\((.*)\)$", re.S)
_KEYWORD_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)?\s*\((.*)\)$", re.S)


class FormulaError(ValueError):
    """A formula that cannot be parsed; the message quotes the offending part."""


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-effect term ``(expr | factor_1:factor_2:...)`` after expansion.

    `expr` is a formulaic right-hand side ("1 + Days", "0 + Machine"); `factors` the
    variables whose interaction is the grouping factor, in the order of its name;
    `structure` the covariance keyword ("us": unstructured, lme4's default; "cs", "ar1", ...).
    """

    expr: str
    factors: tuple[str, ...]
    structure: str
    source: str

    @property
    def group_name(self) -> str:
        return ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into `fixed` (a formulaic formula with the response) and `random` terms."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTermSpec, ...]
    fixed_rhs: str = "1"  # the fixed part's right-hand side: `fixed` is f"{response} ~ {fixed_rhs}"


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4-style formula; raise `FormulaError` naming the bad part."""
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string like 'y ~ x + (1 | g)', got {type(formula).__name__}")
    _check_parentheses(formula)
    sides = _split_top_level(formula, "~")
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise FormulaError(f"formula {formula!r} must have the form 'response ~ terms'")
    response, rhs = python_powers(sides[0].strip()), sides[1].strip()
    fixed_parts: list[str] = []
    random_terms: list[RandomTermSpec] = []
    for chunk in _split_top_level(rhs, "+"):
        part = chunk.strip()
        if not part:
            raise FormulaError(f"formula {formula!r} has an empty term (a doubled or trailing '+')")
        bar = _random_term(part)
        if bar is None:
            if "|" in part:
                raise FormulaError(
                    f"term {part!r} in formula {formula!r}: a random-effect term must be "
                    "written in parentheses, as '(expr | group)'")
            _check_not_offset(part, response)
            fixed_parts.append(python_powers(part))
        else:
            random_terms.extend(bar)
    fixed_rhs = " + ".join(fixed_parts) if fixed_parts else "1"
    return ParsedFormula(formula, response, f"{response} ~ {fixed_rhs}", tuple(random_terms), fixed_rhs)


def python_powers(text: str) -> str:
    """`text` with each `^` inside a Python expression of the formula (a call's arguments,
    `I(x^2)`, `log(x^2)`, or formulaic's `{...}`) written `**`: R's `^` is a power there, and
    Python's is XOR, which gave I(Days^2) = Days XOR 2 for an integer column (another model,
    silently) and an error for a float one. `^` between formula terms, `(a + b)^2`, and inside
    quotes or backticks is left as it is."""
    if "^" not in text:  # the usual case: parse_formula calls this on every part of every fit
        return text
    out, python_depth, stack, quote = [], 0, [], None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char in "([{":
            previous = text[:i].rstrip()[-1:]
            is_python = char != "(" or python_depth > 0 or previous.isalnum() or previous in "_.])"
            stack.append(is_python)
            python_depth += is_python
        elif char in ")]}" and stack:
            python_depth -= stack.pop()
        elif char == "^" and python_depth > 0:
            out.append("**")
            continue
        out.append(char)
    return "".join(out)


def _check_not_offset(part: str, response: str) -> None:
    """lme4's `offset(x)` (a term with coefficient fixed at 1) is not supported; formulaic
    would read `offset` as a column name and fail with a misleading error."""
    match = _OFFSET.match(part)
    if match:
        raise FormulaError(f"term {part!r}: offset() terms are not supported; subtract the offset "
                           f"from the response instead, as 'I({response} - ({match.group(1)})) ~ ...'")


def _random_term(part: str) -> list[RandomTermSpec] | None:
    """The expanded random terms of `part`, or None when `part` is a fixed-effect term."""
    match = _KEYWORD_CALL.match(part)
    if match is None:
        return None
    keyword, inner = match.group(1), match.group(2)
    pieces = _split_top_level(inner, "|")
    if len(pieces) == 1:
        _check_bar_not_missing(part, keyword, inner)
        return None  # a parenthesised fixed-effect expression or a function call
    if keyword is not None and keyword not in structure_keywords():
        raise FormulaError(
            f"random term {part!r}: unknown covariance structure {keyword!r} "
            f"(supported: {', '.join(structure_keywords())})")
    if len(pieces) == 3 and pieces[1] == "":
        expr, group, uncorrelated = pieces[0], pieces[2], True
    elif len(pieces) == 2:
        expr, group, uncorrelated = pieces[0], pieces[1], False
    else:
        raise FormulaError(f"random term {part!r} must be '(expr | group)' or '(expr || group)'")
    expr, group = python_powers(expr.strip()), group.strip()
    if not expr:
        raise FormulaError(f"random term {part!r} has nothing before the bar; write '(1 | g)' for an intercept")
    if not group:
        raise FormulaError(f"random term {part!r} has no grouping factor after the bar")
    exprs = _uncorrelated_exprs(expr, part) if uncorrelated else [expr]
    return [RandomTermSpec(e, factors, keyword or "us", part)
            for factors in _grouping_factors(group, part) for e in exprs]


def _check_bar_not_missing(part: str, keyword: str | None, inner: str) -> None:
    """`(x g)` or `ar1(x g)` without a bar is a random term missing its '|' (formulaic would
    report a fixed-part error, "missing operator"): raised when `part` is one parenthesised
    group, bare or after a structure keyword, whose inside formulaic cannot parse."""
    if keyword is not None and keyword not in structure_keywords() or not _balanced(inner):
        return  # a function call, or '(a):(b)', not one group
    try:
        _expanded_terms(inner)
    except Exception:
        raise FormulaError(f"term {part!r} reads as a random-effect term without its '|': write "
                           f"'{keyword or ''}(expr | group)', e.g. '{keyword or ''}(x | g)'") from None


def _grouping_factors(group: str, part: str) -> list[tuple[str, ...]]:
    """`a/b/c` -> [(a,), (b, a), (c, b, a)] as lme4 names them ('b:a'); `a:b` -> [(a, b)].
    A name in backticks (`` `sub ject` ``) is any column's."""
    quoted = {_unquoted(name) for name in re.findall(r"`[^`]+`", group)}
    nested = [piece.strip() for piece in group.split("/")]
    out: list[tuple[str, ...]] = []
    outer: tuple[str, ...] = ()
    for piece in nested:
        factors = tuple(_unquoted(name.strip()) for name in piece.split(":"))
        for name in factors:
            if not (_NAME.match(name) or name in quoted):
                raise FormulaError(
                    f"random term {part!r}: grouping factor {name!r} is not a column name")
        outer = factors + outer
        out.append(outer)
    return out


def _unquoted(name: str) -> str:
    return name[1:-1] if len(name) > 2 and name[0] == name[-1] == "`" else name


def _uncorrelated_exprs(expr: str, part: str) -> list[str]:
    """lme4's `||` (expandDoubleVerts): one term per term of the expanded expression, the
    intercept on its own: '1 + x' -> ['1', '0 + x'], 'x * z' -> ['1', '0 + x', '0 + z',
    '0 + x:z'] (formulaic expands `*`, `/` and powers as R's terms() does)."""
    try:
        terms = _expanded_terms(expr)
    except Exception as error:  # formulaic's parse errors
        raise FormulaError(f"random term {part!r}: cannot parse {expr!r} before '||': "
                           f"{plain_message(error)}") from None
    return [term if term == "1" else f"0 + {term}" for term in terms]


@lru_cache(maxsize=256)
def _expanded_terms(expr: str) -> tuple[str, ...]:
    """formulaic's terms of `expr`, cached: a parse costs ~0.13 ms, ~10x the rest of
    `parse_formula`, on every fit."""
    return tuple(str(term) for term in formulaic.Formula(expr))


def _balanced(text: str) -> bool:
    """Whether no ')' in `text` closes a '(' before it (`a):(b` is not)."""
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return False
    return True


def _check_parentheses(text: str) -> None:
    depth = 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            raise FormulaError(f"formula {text!r} has an unmatched ')' at position {i}")
    if depth:
        raise FormulaError(f"formula {text!r} has an unclosed '('")


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split `text` at `sep` characters outside parentheses."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out
