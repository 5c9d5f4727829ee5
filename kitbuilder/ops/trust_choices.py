"""What a command that reads a kit trusts and remembers: keys or a trust root, policy, caps, anti-rollback store.

The CLI parses its options into one ``TrustChoices``; this module turns it into what the operations take
(a ``TrustPolicy`` loaded from the key files, ``VerifyOptions`` with the file-backed freshness store wired
in), through ops/trust_inputs, which reads those files. The CLI never opens a key file or picks a state
directory itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kitbuilder.archive.reader import Caps
from kitbuilder.ops.trust_inputs import file_freshness, load_policy
from kitbuilder.trust.freshness import Freshness
from kitbuilder.trust.signatures import TrustPolicy

if TYPE_CHECKING:
    from kitbuilder.ops.verify import KeylessCheck, VerifyOptions


@dataclass(frozen=True, kw_only=True)
class TrustChoices:
    """The trust and policy choices shared by every command that reads a kit; ``now`` is the judging time."""

    keys: tuple[Path, ...] = ()
    trust_root: Path | None = None
    threshold: int | None = None
    product: str | None = None
    channel: str | None = None
    now: datetime
    state_dir: Path | None = None
    no_state: bool = False
    allow_downgrade: bool = False
    max_members: int = Caps.max_members

    @property
    def given(self) -> bool:
        """Whether keys or a trust root were given (commands that only read metadata may go without)."""
        return bool(self.keys) or self.trust_root is not None

    @property
    def caps(self) -> Caps:
        return Caps(max_members=self.max_members)

    def policy(self) -> TrustPolicy:
        """The trust policy from the key files or the trust root; raises UsageError, TrustError, PolicyError."""
        return load_policy(list(self.keys), self.trust_root, self.threshold, now=self.now)

    def optional_policy(self) -> TrustPolicy | None:
        """The policy when trust was given, else None (the signatures are then reported as unverified)."""
        return self.policy() if self.given else None

    def freshness(self) -> Freshness | None:
        """The anti-rollback store (highest sequence and latest time seen), or None with --no-state."""
        if self.no_state:
            return None
        return file_freshness(self.state_dir, allow_downgrade=self.allow_downgrade)

    def verify_options(
        self,
        *,
        require_provenance: bool = False,
        detached_attestations: tuple[Path, ...] = (),
        keyless: KeylessCheck | None = None,
    ) -> VerifyOptions:
        """Everything a full verification needs: the policy, the clock, the caps and the freshness store."""
        from kitbuilder.ops.verify import VerifyOptions  # only verify needs it: inspect does not load ops.verify

        freshness = self.freshness()
        return VerifyOptions(
            policy=self.policy(),
            now=self.now,
            product=self.product,
            channel=self.channel,
            caps=self.caps,
            freshness=freshness,
            require_provenance=require_provenance,
            detached_attestations=detached_attestations,
            keyless=keyless,
        )
