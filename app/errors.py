"""The product's own exceptions: every message names the case and the problem."""

from __future__ import annotations


class CaseError(ValueError):
    """A case cannot be segmented as given (bad file, keys, shapes, dtypes or values)."""

    def __init__(self, case: str, problem: str) -> None:
        super().__init__(f"{case}: {problem}")
        self.case = case
        self.problem = problem
