"""Bad specs: one line naming file, line and field; exit 2; no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories.cli import KitEnv, run_kit


def _build(kit_env: KitEnv, spec_text: str, tmp_path: Path) -> tuple[int, str]:
    spec = kit_env.root / "bad.yaml"
    spec.write_text(spec_text)
    result = run_kit("build", spec, "--key", kit_env.ed_key, "--out", tmp_path / "o.kit.tar.zst")
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert not (tmp_path / "o.kit.tar.zst").exists()
        assert not list(tmp_path.glob(".o.kit.tar.zst.*")), "temporary output left behind"
    return result.exit_code, result.stderr.strip()


GOOD = (
    'apiVersion: kitbuilder/v1\nname: demo\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\nproduct: demo\n'
    "docs:\n  - id: d\n    source: src/docs\n"
)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (("sequence: 1", "sequence: zero"), "bad.yaml:4: sequence: 'zero' is not of type 'integer'"),
        (("sequence: 1", "sequence: 0"), "bad.yaml:4: sequence: 0 is less than the minimum of 1"),
        (('version: "1"', "version: 2025.11"), "bad.yaml:3: version: 2025.11 is not of type 'string'"),
        (("name: demo", "name: Demo Kit"), "bad.yaml:2: name: 'Demo Kit' does not match"),
        (("source: src/docs", "source: src/nowhere"), "bad.yaml:9: docs[0].source: src/nowhere does not exist"),
        (('expires: "2099-01-01"', 'expires: "soon"'), "bad.yaml:5: expires: expected an RFC 3339 UTC time"),
        (("product: demo\n", "product: demo\nproduct: again\n"), "bad.yaml:7: 'product' is given twice"),
        (("docs:", "doc:"), "bad.yaml:1: (top level): Additional properties are not allowed ('doc' was unexpected)"),
        (("  - id: d\n", "  - id: d\n    dest: ../escape\n"), "bad.yaml:9: docs[0].dest: '../escape': path component"),
        (("name: demo", "name: [demo"), "bad.yaml"),
    ],
    ids=[
        "sequence_type",
        "sequence_minimum",
        "version_float",
        "name_pattern",
        "missing_source",
        "expires_format",
        "duplicate_key",
        "unknown_section",
        "dest_escape",
        "yaml_syntax",
    ],
)
def test_bad_spec_is_named_precisely(kit_env: KitEnv, tmp_path: Path, mutation: tuple[str, str], expected: str) -> None:
    code, message = _build(kit_env, GOOD.replace(*mutation), tmp_path)
    assert code == 2
    assert expected in message
    assert message.count("\n") == 0


def test_good_spec_builds(kit_env: KitEnv, tmp_path: Path) -> None:
    code, _ = _build(kit_env, GOOD, tmp_path)
    assert code == 0


def test_case_collision_between_components_is_refused(kit_env: KitEnv, tmp_path: Path) -> None:
    (kit_env.root / "src/a").mkdir()
    (kit_env.root / "src/a/README.md").write_text("x")
    (kit_env.root / "src/b").mkdir()
    (kit_env.root / "src/b/readme.md").write_text("y")
    text = GOOD.replace(
        "  - id: d\n    source: src/docs\n",
        "  - id: a\n    source: src/a\n    dest: docs/x\n  - id: b\n    source: src/b\n    dest: docs/x\n",
    )
    code, message = _build(kit_env, text, tmp_path)
    assert code == 2
    assert "clashes with another input: duplicate of docs/x/README.md" in message


def test_unportable_file_name_is_refused(kit_env: KitEnv, tmp_path: Path) -> None:
    (kit_env.root / "src/docs/na\u00efve notes.md").write_text("x")
    code, message = _build(kit_env, GOOD, tmp_path)
    assert code == 2
    assert "outside [A-Za-z0-9._+@=,-]" in message
