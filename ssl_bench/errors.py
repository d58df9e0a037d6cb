"""Errors a user can cause. The CLI turns each into one clear line and a non-zero exit."""
from __future__ import annotations


class UserError(Exception):
    """Something the user asked for or supplied is wrong (name, path, config value, input file)."""


class ConfigError(UserError):
    """A configuration key or value is invalid."""


class DataError(UserError):
    """An input file or dataset layout is missing, unreadable or inconsistent."""


class ToolkitWarning(UserWarning):
    """Something the user should know that stops nothing; the CLI shows it as one ``warning:`` line."""


class DataWarning(ToolkitWarning):
    """Inputs that load but carry little to learn from (tiny or blank images)."""


def exception_text(exc: BaseException, limit: int = 120) -> str:
    """An exception's message on one line (whitespace runs as one space), cut at ``limit`` characters."""
    return " ".join(str(exc).split())[:limit]


def exception_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: message`` of an exception on one line (:func:`exception_text`, cut at ``limit``
    characters with `` ...`` when given), or the type alone when it has no message: how a library's
    failure is quoted inside one of the toolkit's own error or warning lines."""
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
