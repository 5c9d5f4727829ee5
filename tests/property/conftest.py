"""Hypothesis profiles for the property tests.

``ci`` (the default) is bounded and deterministic: a fixed number of examples drawn from a
derandomized generator and no example database, so every run of the suite tries the same
mutants. ``KIT_HYPOTHESIS_PROFILE=long`` tries thousands of random mutants and keeps the
failures it finds in .hypothesis/ so a rerun replays them first.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("KIT_HYPOTHESIS_EXAMPLES", "5000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("KIT_HYPOTHESIS_PROFILE", "ci"))
