"""genpipe's errors: one base class, :class:`GenpipeError`, whose ``exit_code`` is what the CLI
exits with (1 the job ran and failed, 2 the input has to change, 3 the cluster or store cannot
be reached). Every module's own errors subclass it (often together with the builtin they used
to be, e.g. ``ValueError``, so ``except ValueError`` elsewhere keeps working), and the CLI
catches this one type. The message of a GenpipeError is shown to the user as it is: it must
already be free of credentials (see :mod:`pipeline.publish.storage`).
"""

from __future__ import annotations

from typing import Any

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 1, 2, 3


class GenpipeError(Exception):
    """Base of every error genpipe raises on purpose; ``exit_code`` says what kind it is."""

    exit_code: int = EXIT_FAILED


class BadInput(GenpipeError, ValueError):
    """The job cannot run as specified (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class JobFailed(GenpipeError, RuntimeError):
    """The job ran and failed: training error or quality gate (exit code 1)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, metrics: dict[str, Any] | None = None):
        super().__init__(message)
        self.metrics = metrics
