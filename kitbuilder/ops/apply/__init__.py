"""kit apply / rollback / status / repair: a verified kit's steps against a database.

One module per command (run, revert, state_report, repairs) over what they all open (session: the
verified, privately staged kit and the connection) and what apply checks first (preflight). The
public names are re-exported here, so callers import them from ``kitbuilder.ops.apply``.
"""

from __future__ import annotations

from kitbuilder.ops.apply.repairs import repair
from kitbuilder.ops.apply.revert import rollback_kit
from kitbuilder.ops.apply.run import DEFAULT_ARTIFACTS, StepHook, apply_kit
from kitbuilder.ops.apply.session import STAGING_PREFIX, VerifiedKit, connected, verified_kit
from kitbuilder.ops.apply.state_report import status

__all__ = [
    "DEFAULT_ARTIFACTS",
    "STAGING_PREFIX",
    "StepHook",
    "VerifiedKit",
    "apply_kit",
    "connected",
    "repair",
    "rollback_kit",
    "status",
    "verified_kit",
]
