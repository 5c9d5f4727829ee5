"""The error tree every layer raises and the CLI maps to exit codes.

Each class carries its exit code, so the mapping lives in one place and a
second implementation (or a script) can rely on it. Library code never prints
or exits; the CLI renders ``str(error)`` as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class KitError(Exception):
    """Base of every error a user can cause; ``exit_code`` is documented in docs/exit-codes.md."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(KitError):
    """Bad arguments, unreadable or invalid input files (spec, key, trust root)."""

    exit_code = 2
    kind = "usage"


class SpecError(UsageError):
    """A kit spec that does not match the contract; message names file, line and field."""

    kind = "spec"


class TrustError(KitError):
    """Signatures missing, invalid, untrusted, or below the threshold."""

    exit_code = 3
    kind = "trust"


class IntegrityError(KitError):
    """A payload file's digest or size differs from the signed manifest, or files are missing/unlisted."""

    exit_code = 4
    kind = "integrity"


class ArchiveError(KitError):
    """Unsafe or malformed archive: hostile members, truncation, bad index, caps exceeded."""

    exit_code = 5
    kind = "archive"


class PolicyError(KitError):
    """The kit is genuine but not acceptable here: expired, wrong product/channel, downgrade."""

    exit_code = 6
    kind = "policy"


class FormatError(ArchiveError):
    """A metadata document inside a kit (manifest, envelope, index) is not what the schema requires."""

    kind = "format"


class DatabaseError(KitError):
    """The database is unreachable, a script failed, or its state forbids going on (e.g. checksum drift)."""

    exit_code = 8
    kind = "database"


class LockBusyError(KitError):
    """Another `kit apply` holds the database lock and did not release it within --lock-timeout."""

    exit_code = 9
    kind = "lock"


class CheckFailedError(KitError):
    """A halting check failed, or a backfill paused/stopped on errors; the database is consistent and resumable."""

    exit_code = 10
    kind = "check"


class RegistryError(KitError):
    """An OCI registry is unreachable, refuses the credentials, or fails a request after retries.

    What was pushed stays pushed; rerunning the same push completes without re-sending it.
    """

    exit_code = 11
    kind = "registry"


class HostIOError(KitError):
    """The host refused an I/O kit needed: disk full, read-only or missing directory, permission denied.

    An environment problem, never a bug in kit: the message names the path and
    what to do. Nothing half-written is left under a final name.
    """

    exit_code = 12
    kind = "io"

    @classmethod
    def from_os_error(cls, exc: OSError, *, path: object = None, action: str = "write") -> HostIOError:
        where = path if path is not None else (exc.filename or "(unknown path)")
        reason = exc.strerror or type(exc).__name__
        hint = {
            28: "free space there and rerun",  # ENOSPC
            122: "raise the quota there and rerun",  # EDQUOT
            30: "choose a writable location",  # EROFS
            13: "check the permissions and rerun",  # EACCES
            1: "check the permissions and rerun",  # EPERM
        }.get(exc.errno or 0, "fix the path and rerun")
        return cls(f"{where}: cannot {action} ({reason}): {hint}")


class InterruptedRun(KitError):
    """SIGINT or SIGTERM stopped kit at a safe point; rerunning the same command resumes.

    Exit 130 for SIGINT, 143 for SIGTERM (128 + the signal number, as shells report).
    """

    exit_code = 130
    kind = "interrupted"

    def __init__(self, message: str = "interrupted", *, signal_number: int = 2) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number


class FailedRunError(KitError):
    """A run that failed after it had done part of its work: ``cause`` is the failure, ``report`` what was done.

    The one way a partial report travels with an error (an apply run's steps and evidence, or an apply whose
    image push failed after the database part succeeded): given when the error is built, never attached later.
    Kind, exit code and message are the cause's, so the exit-code contract is unchanged; ``--json`` prints the
    report's fields beside the failure document. Raise it ``from`` the cause.
    """

    def __init__(self, cause: KitError, *, report: Mapping[str, object]) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.report: Mapping[str, object] = MappingProxyType(dict(report))
        self.kind = cause.kind
        self.exit_code = cause.exit_code


# A bug in kit, not the user's input or the environment.
INTERNAL_EXIT_CODE = 70


def _kinds(cls: type[KitError]) -> dict[str, int]:
    table = {cls.kind: cls.exit_code} if cls not in (KitError, FailedRunError) else {}
    for sub in cls.__subclasses__():
        table.update(_kinds(sub))
    return table


# kind -> exit code, derived from the class tree above (docs/exit-codes.md documents the same table).
EXIT_CODES: dict[str, int] = {"ok": 0, **_kinds(KitError), "internal": INTERNAL_EXIT_CODE}
