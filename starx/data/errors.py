"""The one exception type of the data layer."""


class DataError(ValueError):
    """A data source or dataset file is missing, malformed or inconsistent.

    The message always names the offending file (and field, where there is one),
    so the CLI can print it as a one-line error.
    """
