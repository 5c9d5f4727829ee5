"""SBOMs: the CycloneDX 1.6 SBOM of the kit itself, and the checks of SBOMs a kit ships.

``render_kit_sbom`` writes ``sbom/kit.cdx.json``: the kit as ``metadata.component``,
one component per kit component with the inventory of its files (count, bytes, the
digest of its SHA256SUMS lines; ``inventory``), container images with their manifest
digests, and shipped SBOMs as ``bom`` external references. The bytes depend only on
the inputs, so rebuilds stay identical; ``kit_sbom_matches`` checks one against the
signed manifest.

``check_sbom`` accepts CycloneDX JSON 1.4/1.5/1.6 and SPDX 2.3 (and 2.2) JSON.
CycloneDX is checked against the official schemas that cyclonedx-python-lib
ships, with validators built by jsonschema-rs (Rust: linear, milliseconds) once per version and only
when first needed; jsonschema runs only to explain an invalid document. SPDX is
checked by spdx-tools. Layout and choices: docs/sbom.md.

Where things are: ``model`` holds the values, the constants and SbomError; ``render`` the kit's own SBOM;
``inventory`` a component's inventory, computed and read back; ``check`` tells a shipped SBOM's format apart
and reads it as strict JSON; ``cyclonedx`` and ``spdx`` validate one format each; ``summary`` counts what a
document lists. Importing the package loads none of jsonschema, jsonschema-rs, spdx-tools, cyclonedx-python-lib
or packageurl: each is imported where first used.
"""

from kitbuilder.core.sbom.check import check_sbom, check_sbom_document, load_sbom
from kitbuilder.core.sbom.inventory import component_inventories, kit_sbom_matches, stated_inventories
from kitbuilder.core.sbom.model import (
    CYCLONEDX_VERSIONS,
    KIT_SBOM_PATH,
    KIT_SPEC_VERSION,
    SPDX_VERSIONS,
    Inventory,
    KitComponent,
    SbomError,
    SbomImage,
    SbomInfo,
    SbomSummary,
    ShippedSbom,
    json_path,
)
from kitbuilder.core.sbom.render import render_kit_sbom
from kitbuilder.core.sbom.summary import listed_files, summarize_sbom

__all__ = [
    "CYCLONEDX_VERSIONS",
    "KIT_SBOM_PATH",
    "KIT_SPEC_VERSION",
    "SPDX_VERSIONS",
    "Inventory",
    "KitComponent",
    "SbomError",
    "SbomImage",
    "SbomInfo",
    "SbomSummary",
    "ShippedSbom",
    "check_sbom",
    "check_sbom_document",
    "component_inventories",
    "load_sbom",
    "json_path",
    "kit_sbom_matches",
    "listed_files",
    "render_kit_sbom",
    "stated_inventories",
    "summarize_sbom",
]
