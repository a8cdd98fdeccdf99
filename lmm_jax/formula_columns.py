"""Which data columns a formula reads, and which rows its `C(x, levels=[...])` calls exclude.

`used_columns(parsed, frame)` lists the columns a parsed lme4 formula needs (an error names
a missing one and the part that uses it), from formulaic's required variables plus what
formulaic 1.2.2 misses: columns inside stateful transforms, R's dotted names (`my.days`),
and Python builtins that are no columns. `formulaic_formula` is formulaic's cached parse.
"""

from __future__ import annotations

import ast
import builtins
import re
from functools import lru_cache

import formulaic
import numpy as np
import pandas as pd

from .errors import DataError, plain_message
from .factor_levels import FACTOR_CALLS
from .formula import FormulaError, ParsedFormula


@lru_cache(maxsize=256)
def formulaic_formula(text: str) -> formulaic.Formula:
    """formulaic's parse of `text`, cached: parsing costs more than building a small matrix."""
    return formulaic.Formula(text)


def used_columns(parsed: ParsedFormula, frame: pd.DataFrame) -> list[str]:
    """The data columns the formula needs; a missing one is an error naming the term."""
    needed: dict[str, str] = {}
    try:
        fixed_vars = formula_variables(parsed.fixed, frame)
    except Exception as error:  # formulaic's parse errors
        raise FormulaError(f"cannot parse the fixed part {parsed.fixed!r}: {plain_message(error)}") from None
    for var in sorted(fixed_vars):
        needed.setdefault(var, f"fixed part {parsed.fixed!r}")
    for spec in parsed.random:
        try:
            expr_vars = formula_variables(spec.expr, frame)
        except Exception as error:
            raise FormulaError(f"cannot parse {spec.expr!r} in random term {spec.source!r}: "
                               f"{plain_message(error)}") from None
        for var in sorted(expr_vars) + list(spec.factors):
            needed.setdefault(var, f"random term {spec.source!r}")
    for var, where in needed.items():
        if var not in frame.columns:
            called = re.search(rf"(?<![\w.]){re.escape(str(var))}\s*\(", where) is not None
            raise DataError(f"{'function' if called else 'column'} {var!r} (used in {where}) is "
                            f"{'neither a known function nor a column' if called else 'not in the data'}; "
                            f"columns are: {', '.join(map(str, frame.columns))}")
    return list(needed)


def formula_variables(text: str, frame: pd.DataFrame) -> set[str]:
    """The data columns formula `text` reads: formulaic's `required_variables`, and the
    columns named inside its stateful transforms (`center(x)`, `scale(x)`, `poly(x, 2)`,
    `bs(x)`), which formulaic 1.2.2 leaves out (its introspection of them fails and it
    returns no variables; fixed upstream in formulaic PR #268, not yet released). Python's
    builtins that formulaic reports (`list`, `range` in `C(x, levels=list(range(5)))`) are no
    columns unless the data has one of that name, and dotted names are read whole
    (`_dotted_columns`)."""
    columns = set(frame.columns)
    required = set()
    for name in formulaic_formula(text).required_variables:
        dotted = _dotted_columns(name, text, columns)
        if name in columns or not (dotted or hasattr(builtins, name) or name in FACTOR_CALLS):
            required.add(name)
        required |= dotted
    return required | (_python_factor_names(text) & columns)


def _dotted_columns(name: str, text: str, columns: set) -> set:
    """The columns `name.rest` (R's dotted names, `my.days`) that `text` names: formulaic
    reports `my.days` and `` `my.days` `` as a variable 'my', though it reads the column."""
    return {column for column in columns if isinstance(column, str) and column.startswith(f"{name}.")
            and re.search(rf"(?<![\w.]){re.escape(column)}(?![\w.])", text)}


@lru_cache(maxsize=256)
def _python_factor_names(text: str) -> frozenset[str]:
    """Every name the Python factors of `text` read as a value, not the functions they call:
    not `center` in `center(x)`, nor `np` in `np.log(x)` (a data column named `np` would
    otherwise be handed to formulaic and hide numpy from it)."""
    names = set()
    for tree in _python_factor_trees(text):
        called = {id(_callee_root(node.func)) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called}
    return frozenset(names)


def _callee_root(func: ast.expr) -> ast.expr:
    """The name a called expression starts from: `np` for `np.log`, `f` for `f`."""
    while isinstance(func, ast.Attribute):
        func = func.value
    return func


@lru_cache(maxsize=256)
def _python_factor_trees(text: str) -> tuple[ast.Expression, ...]:
    """The parsed Python expressions of the Python factors of formula `text` (not those in
    formulaic's own quoting, `a b`, which are no Python: formulaic reports their variables)."""
    formula = formulaic_formula(text)
    parts = (formula.lhs, formula.rhs) if hasattr(formula, "lhs") else (formula,)
    trees = []
    for factor in (f for part in parts for term in part for f in term.factors):
        if factor.eval_method == factor.EvalMethod.PYTHON:
            try:
                trees.append(ast.parse(factor.expr, mode="eval"))
            except SyntaxError:
                pass
    return tuple(trees)


def outside_given_levels(parsed: ParsedFormula, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """For each `C(column, levels=[...])` with literal levels, the rows whose value is none
    of them (a label -> row flags). R's factor(x, levels=) makes such values NA and lmer drops
    their rows; formulaic would code them as the reference level, a silently different fit."""
    out = {}
    for text in (parsed.fixed, *(spec.expr for spec in parsed.random)):
        for tree in _python_factor_trees(text):
            for node in ast.walk(tree):
                column = categorical_call_column(node, frame)
                levels = None if column is None else _literal_levels(node)
                if levels is not None:
                    values = frame[column]
                    flags = ~values.isin(levels).to_numpy() & ~pd.isna(values.to_numpy())
                    out[f"{column} outside the levels of {ast.unparse(node)}"] = flags
    return out


def categorical_call_column(node: ast.AST, frame: pd.DataFrame) -> str | None:
    """x when `node` is a call `C(x, ...)` (or `factor(x)`) on a column x of `frame`, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FACTOR_CALLS
            and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in frame.columns):
        return node.args[0].id
    return None


def _literal_levels(node: ast.Call):
    """The levels of a `C(column, ..., levels=<literal>)` call node, else None."""
    for keyword in node.keywords:
        if keyword.arg == "levels":
            try:
                return list(ast.literal_eval(keyword.value))
            except (ValueError, TypeError, SyntaxError):
                return None
    return None
