"""Turning exceptions into the one-line messages lookbench prints instead of tracebacks."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe(error: BaseException) -> str:
    """``Type: first line`` of ``error``, or just its type name when the message is empty."""
    name = type(error).__name__
    return f"{name}: {first_line(error)}" if str(error).strip() else name
