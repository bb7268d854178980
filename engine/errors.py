"""Errors the engine raises for problems a user can fix: each prints as one line."""


class WorkbenchError(Exception):
    """Bad input or environment (path, architecture, ratio, corpus size...)."""


class InvalidFunctionError(WorkbenchError):
    """An allocation function that cannot be parsed or that produced invalid values.

    `op` names the operation responsible (or None for a syntax problem).
    """

    def __init__(self, message: str, op: str | None = None):
        super().__init__(message)
        self.op = op
