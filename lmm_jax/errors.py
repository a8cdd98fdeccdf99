"""The error raised for input data that cannot be fitted (formula errors: `formula.FormulaError`)."""


class DataError(ValueError):
    """Input data that cannot be fitted; the message names the column, level or term."""
