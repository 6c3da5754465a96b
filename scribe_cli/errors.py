"""Errors the CLI turns into one-line messages and documented exit codes."""


class ScribeError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UserInputError(ScribeError):
    """Bad input or configuration: the message names the problem and the fix (exit 2)."""

    exit_code = 2


class ToolchainError(ScribeError):
    """The Stan toolchain is missing or failed to build (exit 1)."""

    exit_code = 1


class DiagnosticsFailed(ScribeError):
    """Convergence checks failed under ``--strict`` (exit 3)."""

    exit_code = 3
