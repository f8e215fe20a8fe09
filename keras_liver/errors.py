"""Errors raised on bad input: one message naming the file and the problem."""
from __future__ import annotations


class DataError(ValueError):
    """A dataset file is unusable. ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelInputError(ValueError):
    """A model cannot take the requested input (e.g. a spatial size it cannot divide)."""
