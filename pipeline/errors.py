"""genpipe's errors: one base class, :class:`GenpipeError`, whose ``exit_code`` is what the CLI
exits with (1 the job ran and failed, 2 the input has to change, 3 the cluster or store cannot
be reached). Every module's own errors subclass it (often together with the builtin they used
to be, e.g. ``ValueError``, so ``except ValueError`` elsewhere keeps working), and the CLI
catches this one type: it prints ``genpipe: error: <message>`` and exits with ``exit_code``
(a :class:`~pipeline.spec.SpecError` prints one line per problem instead). The message is
shown as it is, after the class name where ``name_in_message`` is set (for errors whose
message alone does not say what failed: ``StorageError: writing s3://...``); it must already
be free of credentials (see :mod:`pipeline.publish.storage`).

This module imports nothing heavy: the CLI imports it before it knows whether a job runs
(a bad spec must not cost a torch import).
"""

from __future__ import annotations

from typing import Any

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 1, 2, 3


class GenpipeError(Exception):
    """Base of every error genpipe raises on purpose; ``exit_code`` says what kind it is."""

    exit_code: int = EXIT_FAILED
    #: the CLI's line starts with the class name ("StorageError: ...")
    name_in_message: bool = False


class BadInput(GenpipeError, ValueError):
    """The job cannot run as specified (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class JobFailed(GenpipeError, RuntimeError):
    """The job ran and failed: training error or quality gate (exit code 1)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, metrics: dict[str, Any] | None = None):
        super().__init__(message)
        self.metrics = metrics
