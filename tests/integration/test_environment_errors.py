"""Environment errors on every command that writes: a full disk, a read-only file system, a bad output path,
entries planted where kit keeps its temporary files, and a kill before the rename.

Each is one line on stderr with its documented exit code (12 `io` for the host, 2 `usage` for a bad path),
no traceback, nothing under a final name, and nothing left behind once a rerun succeeds. The disks are real:
a 1 MiB tmpfs filled to the last page (ENOSPC) and a tmpfs remounted read-only (EROFS; root ignores
`chmod`, so permissions would not stop these tests). Without the right to mount, the tests skip.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kitbuilder import atomic
from kitbuilder.errors import HostIOError, UsageError
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair
from tests.factories.kits import write_spec
from tests.factories.oci_images import build_image_set

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
TEMP_NAME = re.compile(r".*\.kit-tmp-.*|\.kit-export-tmp-.*")


# -- disks ---------------------------------------------------------------------------------------------------


class Mount:
    """A small tmpfs of our own: filled to ENOSPC, or remounted read-only, then given back for the rerun."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(path)], capture_output=True, text=True
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.strip()}); these tests need root (CAP_SYS_ADMIN)")

    def fill(self, leave: int = 0) -> None:
        """Write a filler file until the disk refuses; ``leave`` bytes are given back afterwards."""
        filler = self.path / "filler"
        with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        assert _free(self.path) < 4096
        if leave:
            os.truncate(filler, filler.stat().st_size - leave)

    def free(self) -> None:
        (self.path / "filler").unlink()

    def readonly(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def writable(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)

    def names(self) -> set[str]:
        return {p.name for p in self.path.iterdir()} - {"filler"}

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Mount]:
    mount = Mount(tmp_path / "disk")
    yield mount
    mount.unmount()


# -- what the commands need ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    root: Path
    spec: Path
    next_spec: Path  # the next release, for --delta-from
    key: Path
    pub: Path
    new_key: Path
    new_pub: Path
    base: Path  # a kit built from ``spec``
    trust: Path
    successor: Path  # trust root version 2, signed by ``key`` and ``new_key``
    image_kit: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    key, pub = write_pair(ed25519_key("release"), root / "release")
    new_key, new_pub = write_pair(ed25519_key("successor"), root / "successor")
    spec = write_spec(root / "v1")
    next_spec = write_spec(root / "v2", version="1.1.0", sequence=2)
    (root / "v2/src/docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, then apply. Changed in 1.1.\n")
    base = root / "base.kit.tar.zst"
    trust = root / "trust.json"
    successor = root / "trust-v2.json"
    images = build_image_set(root / "images")
    image_spec = images.root / "kit.yaml"
    image_spec.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kitbuilder/v1",
                "name": "image-kit",
                "version": "1.0.0",
                "sequence": 1,
                "expires": "2099-01-01T00:00:00Z",
                "product": "demo",
                "images": [{"ref": "registry.local/app-a:1", "source": "layout", "sourceRef": "app-a"}],
            }
        )
    )
    image_kit = root / "images.kit.tar.zst"
    for argv in (
        ["build", spec, "--key", key, "--out", base],
        ["build", image_spec, "--key", key, "--out", image_kit],
        ["trust", "init", "--key", pub, "--expires", "2099-01-01", "--out", trust],
        ["trust", "rotate", "--trust-root", trust, "--key", new_pub, "--expires", "2099-01-01"]
        + ["--sign-key", key, "--sign-key", new_key, "--out", successor],
    ):
        result = run_kit(*argv, env=EPOCH)
        assert result.exit_code == 0, result.output
    return Inputs(root, spec, next_spec, key, pub, new_key, new_pub, base, trust, successor, image_kit)


@dataclass(frozen=True)
class Case:
    """One writing command: its argv for an output at ``out`` and the names a success leaves beside it."""

    name: str
    primary: str
    argv: Callable[[Inputs, Path], list[object]]
    finals: tuple[str, ...]
    env: dict[str, str] | None = None


CASES = [
    Case(
        "build",
        "k.kit.tar.zst",
        lambda i, out: ["build", i.spec, "--key", i.key, "--out", out],
        ("k.kit.tar.zst", "k.kit.tar.zst.intoto.jsonl"),
    ),
    Case(
        "build-sigstore-bundle",
        "k.kit.tar.zst",
        lambda i, out: ["build", i.spec, "--key", i.key, "--out", out, "--no-provenance", "--sigstore-bundle"],
        ("k.kit.tar.zst",),
    ),
    Case(
        "build-delta",
        "d.kit.tar.zst",
        lambda i, out: ["build", i.next_spec, "--key", i.key, "--delta-from", i.base, "--out", out],
        ("d.kit.tar.zst",),
    ),
    Case(
        "build-delta-full-out",
        "full.kit.tar.zst",
        lambda i, out: (
            ["build", i.next_spec, "--key", i.key, "--delta-from", i.base]
            + ["--full-out", out, "--out", out.with_name("d.kit.tar.zst")]
        ),
        ("full.kit.tar.zst", "full.kit.tar.zst.intoto.jsonl", "d.kit.tar.zst"),
    ),
    Case(
        "images-export",
        "layout",
        lambda i, out: ["images", "export", i.image_kit, out, "--key", i.pub],
        ("layout",),
    ),
    Case("keygen", "new.key", lambda i, out: ["keygen", "--out", out.with_suffix("")], ("new.key", "new.pub")),
    Case(
        "trust-init",
        "trust.json",
        lambda i, out: ["trust", "init", "--key", i.pub, "--expires", "2099-01-01", "--out", out],
        ("trust.json",),
    ),
    Case(
        "trust-rotate",
        "trust-v2.json",
        lambda i, out: (
            ["trust", "rotate", "--trust-root", i.trust, "--key", i.new_pub, "--expires", "2099-01-01"]
            + ["--sign-key", i.key, "--sign-key", i.new_key, "--out", out]
        ),
        ("trust-v2.json",),
    ),
    Case(
        "trust-update",
        "trust.json",
        lambda i, out: ["trust", "update", "--trust-root", i.trust, i.successor, "--out", out],
        ("trust.json",),
    ),
    Case("sbom", "sbom.json", lambda i, out: ["sbom", i.base, "--key", i.pub, "-o", out], ("sbom.json",)),
]
BY_NAME = {case.name: case for case in CASES}
IO_LINE = (
    r"kit: io error: {where}\S*: cannot [a-z -]+ \((No space left on device|Read-only file system)\): "
    r"(free space there and rerun|choose a writable location)"
)


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _no_temp_names(directory: Path) -> None:
    leftovers = [p.name for p in directory.rglob("*") if TEMP_NAME.fullmatch(p.name)]
    assert not leftovers, leftovers


# -- disk full, read-only ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_a_write_the_host_refuses_is_one_line_exit_12_and_a_rerun_completes(
    case: Case, fault: str, inputs: Inputs, disk: Mount
) -> None:
    if fault == "disk-full":
        disk.fill()
    else:
        disk.readonly()
    result = run_kit(*case.argv(inputs, disk.path / case.primary), env=EPOCH)
    assert result.exit_code == 12, result.output
    assert re.fullmatch(IO_LINE.format(where=re.escape(str(disk.path))), _one_line(result.stderr))
    # Nothing under a final name, no temporary file left (export may leave the directory it made, empty).
    assert disk.names() <= ({"layout"} if case.name == "images-export" else set())
    assert not any(disk.path.rglob("*/*"))
    if fault == "disk-full":
        disk.free()
    else:
        disk.writable()
    rerun = run_kit(*case.argv(inputs, disk.path / case.primary), env=EPOCH)
    assert rerun.exit_code == 0, rerun.output
    assert disk.names() == set(case.finals)
    _no_temp_names(disk.path)


def test_a_disk_filling_up_mid_kit_leaves_nothing_and_says_so_in_json(inputs: Inputs, disk: Mount) -> None:
    disk.fill(leave=96 << 10)  # the kit is ~210 KiB: its write starts, then fails part-way
    out = disk.path / "k.kit.tar.zst"
    result = run_kit("build", inputs.spec, "--key", inputs.key, "--out", out, "--json")
    assert result.exit_code == 12
    assert _one_line(result.stderr) == (
        f"kit: io error: {out}: cannot write (No space left on device): free space there and rerun"
    )
    assert json.loads(result.stdout)["error"] == {
        "kind": "io",
        "exitCode": 12,
        "message": f"{out}: cannot write (No space left on device): free space there and rerun",
    }
    assert disk.names() == set()


def test_anti_rollback_state_on_a_full_or_read_only_disk_is_exit_12(inputs: Inputs, disk: Mount) -> None:
    env = {"KIT_STATE_DIR": str(disk.path)}
    disk.fill()
    full = run_kit("verify", inputs.base, "--key", inputs.pub, env=env)
    assert full.exit_code == 12
    assert _one_line(full.stderr) == (
        f"kit: io error: {disk.path}/demo-kit@stable.json: cannot write (No space left on device): "
        "free space there and rerun"
    )
    disk.free()
    disk.readonly()
    nested = {"KIT_STATE_DIR": str(disk.path / "state")}
    readonly = run_kit("verify", inputs.base, "--key", inputs.pub, env=nested)
    assert readonly.exit_code == 12
    assert re.fullmatch(IO_LINE.format(where=re.escape(str(disk.path / "state"))), _one_line(readonly.stderr))
    assert disk.names() == set()
    disk.writable()
    assert run_kit("verify", inputs.base, "--key", inputs.pub, env=env).exit_code == 0
    assert disk.names() == {"demo-kit@stable.json"}


def test_a_report_printed_to_a_full_disk_is_one_line_exit_12(inputs: Inputs, disk: Mount) -> None:
    """Output kit prints itself (stdout redirected to a file) is covered too, not only files kit opens."""
    disk.fill()
    with (disk.path / "sbom.json").open("wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "kitbuilder.cli", "sbom", str(inputs.base), "--key", str(inputs.pub)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 12
    assert _one_line(result.stderr) == (
        "kit: io error: standard output: cannot write (No space left on device): free space there and rerun"
    )


# -- a bad output path ---------------------------------------------------------------------------------------


FILE_OUTPUTS = [case for case in CASES if case.name != "images-export"]


@pytest.mark.parametrize("case", FILE_OUTPUTS, ids=lambda c: c.name)
def test_an_output_path_that_is_a_directory_is_a_usage_error(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    (tmp_path / case.primary).mkdir()
    (tmp_path / case.primary / "keep.txt").write_text("mine")
    result = run_kit(*case.argv(inputs, tmp_path / case.primary), env=EPOCH)
    assert result.exit_code == 2, result.output
    line = _one_line(result.stderr)
    assert line.startswith(f"kit: usage error: {tmp_path / case.primary}")
    assert [p.name for p in (tmp_path / case.primary).iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [case.primary]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_an_output_under_a_missing_directory_is_a_usage_error(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "missing" / case.primary
    result = run_kit(*case.argv(inputs, out), env=EPOCH)
    assert result.exit_code == 2, result.output
    line = _one_line(result.stderr)
    assert "missing does not exist; create it or choose another path" in line
    assert not (tmp_path / "missing").exists(), "kit does not create directories the user did not ask for"


def test_export_into_a_file_is_a_usage_error(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    out.write_text("mine")
    result = run_kit("images", "export", inputs.image_kit, out, "--key", inputs.pub)
    assert result.exit_code == 2
    assert _one_line(result.stderr) == f"kit: usage error: {out}: exists and is not a directory"
    assert out.read_text() == "mine"


# -- planted entries -----------------------------------------------------------------------------------------


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (what a killed run's temporary names carry)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.mark.parametrize("name", [".kit-export-tmp-planted", ".kit-export-tmp-{pid}-0123456789abcdef"])
def test_export_never_follows_an_entry_planted_at_its_temp_dir(
    name: str, inputs: Inputs, tmp_path: Path, dead_pid: int
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    out = tmp_path / "layout"
    out.mkdir()
    planted = out / name.format(pid=dead_pid)
    planted.symlink_to(victim, target_is_directory=True)
    result = run_kit("images", "export", inputs.image_kit, out, "--key", inputs.pub)
    assert result.exit_code == 2, result.output
    assert _one_line(result.stderr) == (
        f"kit: usage error: {planted}: not a directory an earlier export left (a symbolic link, or another "
        "user's); remove it and rerun"
    )
    assert [p.name for p in victim.iterdir()] == ["precious"] and (victim / "precious").read_text() == "keep"
    assert [p.name for p in out.iterdir()] == [planted.name] and planted.is_symlink()


@pytest.mark.parametrize("case", ["build", "build-delta", "trust-init"])
def test_symlinks_planted_under_temp_names_are_neither_followed_nor_removed(
    case: str, inputs: Inputs, tmp_path: Path, dead_pid: int
) -> None:
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("keep")
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "precious").write_text("keep")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    primary = BY_NAME[case].primary
    planted = [
        (out_dir / f".{primary}.kit-tmp-{dead_pid}-0123456789abcdef.part", victim_file),
        (out_dir / f".{primary}.kit-tmp-{dead_pid}-0123456789abcdef.d", victim_dir),
        (out_dir / f".{primary}.intoto.jsonl.kit-tmp-{dead_pid}-0123456789abcdef.part", victim_file),
    ]
    for link, target in planted:
        link.symlink_to(target)
    result = run_kit(*BY_NAME[case].argv(inputs, out_dir / primary), env=EPOCH)
    assert result.exit_code == 0, result.output
    assert victim_file.read_text() == "keep"
    assert [p.name for p in victim_dir.iterdir()] == ["precious"]
    assert all(link.is_symlink() for link, _ in planted), "not provably kit's own: left alone"
    assert {p.name for p in out_dir.iterdir()} == set(BY_NAME[case].finals) | {link.name for link, _ in planted}


def test_a_temp_name_already_taken_is_skipped_not_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    final = tmp_path / "out.json"
    tokens = iter(["0123456789abcdef", "fedcba9876543210"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda _: next(tokens))
    planted = tmp_path / f".out.json.kit-tmp-{os.getpid()}-0123456789abcdef.part"
    planted.symlink_to(victim)
    atomic.write_atomic(final, b"new\n")
    assert final.read_bytes() == b"new\n" and victim.read_text() == "keep" and planted.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim.txt", "out.json", planted.name])


def test_only_leftovers_provably_kits_own_are_cleared(tmp_path: Path, dead_pid: int) -> None:
    final = tmp_path / "out.json"
    pattern = atomic.temp_pattern(final)
    stale = tmp_path / f"{pattern.prefix}{dead_pid}-0123456789abcdef.part"
    stale.write_text("a killed run's")
    foreign = tmp_path / f"{pattern.prefix}{dead_pid}-1111111111111111.part"
    foreign.write_text("another user's")
    os.chown(foreign, 4242, 4242)
    running = tmp_path / f"{pattern.prefix}{os.getpid()}-2222222222222222.part"
    running.write_text("this process, between creating and locking it")
    with atomic.AtomicFile(final) as live:  # a write in progress: its temp file is locked
        live.stream.write(b"{}\n")
        kept = atomic.clear_stale(tmp_path, pattern, is_dir=False)
        assert {(k.path.name, k.live) for k in kept} == {
            (foreign.name, False),
            (running.name, True),
            (live.temp.name, True),
        }
    assert not stale.exists() and foreign.exists() and running.exists()
    assert final.read_bytes() == b"{}\n"


def test_a_lock_held_by_a_live_process_keeps_its_file(tmp_path: Path, dead_pid: int) -> None:
    final = tmp_path / "out.json"
    held = tmp_path / f"{atomic.temp_pattern(final).prefix}{dead_pid}-0123456789abcdef.part"
    held.write_text("")
    with held.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # whatever the name says, a lock holder is alive
        atomic.write_atomic(final, b"x")
        assert held.exists()
    atomic.write_atomic(final, b"y")
    assert not held.exists()


# -- killed runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "fault"),
    [
        ("build", "atomic-before-rename"),
        ("build-delta", "atomic-before-rename:2"),  # the full kit is in place in the scratch dir, the delta not
        ("build-delta", "scratch-dir-created"),
        ("keygen", "atomic-before-rename"),
        ("images-export", "export-before-rename"),
    ],
)
def test_a_run_killed_before_its_rename_leaves_nothing_final_and_the_rerun_clears_it(
    case: str, fault: str, inputs: Inputs, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [str(a) for a in BY_NAME[case].argv(inputs, out_dir / BY_NAME[case].primary)]
    command = [sys.executable, "-m", "kitbuilder.cli", *argv]
    env = {**os.environ, **EPOCH}
    killed = subprocess.run(command, env={**env, "KIT_FAULT": fault}, capture_output=True)
    assert killed.returncode == 137, killed.stderr
    leftovers = [p for p in out_dir.rglob("*") if TEMP_NAME.fullmatch(p.name)]
    assert leftovers, "the kill left its temporary entries (what the rerun must clear)"
    finals = set(BY_NAME[case].finals)
    if case == "images-export":
        assert [p.name for p in (out_dir / "layout").iterdir()] == [leftovers[0].name]
    else:
        assert not finals & {p.name for p in out_dir.iterdir()}
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert {p.name for p in out_dir.iterdir()} == finals
    _no_temp_names(out_dir)


# -- the safety net in the CLI -------------------------------------------------------------------------------


def test_an_oserror_no_site_converted_is_exit_12_naming_its_path(capsys: pytest.CaptureFixture[str]) -> None:
    from kitbuilder.cli.errors import exit_on_error

    with pytest.raises(SystemExit) as exited, exit_on_error(False):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/kits/x.kit.tar.zst")
    assert exited.value.code == 12
    assert _one_line(capsys.readouterr().err) == (
        "kit: io error: /srv/kits/x.kit.tar.zst: cannot access (Permission denied): check the permissions and rerun"
    )
    with pytest.raises(SystemExit) as exited, exit_on_error(False):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert exited.value.code == 12
    assert _one_line(capsys.readouterr().err) == (
        "kit: io error: (unknown path): cannot write (No space left on device): free space there and rerun"
    )
    with pytest.raises(SystemExit) as exited, exit_on_error(False):
        raise ValueError("a bug")
    assert exited.value.code == 70, "other exceptions are still bugs"
    capsys.readouterr()


def test_write_errors_name_the_target_not_the_temp_file(tmp_path: Path) -> None:
    """The classes atomic maps to: the host refusing (12) versus a path that cannot be a file (2)."""
    target = tmp_path / "t.json"
    full = atomic.os_error(OSError(errno.ENOSPC, "No space left on device", "/x/.t.json.kit-tmp-1-a.part"), target)
    assert isinstance(full, HostIOError) and str(full).startswith(f"{target}: cannot write (No space")
    assert isinstance(atomic.os_error(OSError(errno.EISDIR, "Is a directory"), target), UsageError)


def test_a_failure_reported_as_json_to_a_full_disk_keeps_its_own_exit_code(
    inputs: Inputs, disk: Mount, tmp_path: Path
) -> None:
    disk.fill()
    out = tmp_path / "missing" / "k.kit.tar.zst"
    with (disk.path / "report.json").open("wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "kitbuilder.cli", "build", str(inputs.spec), "--key", str(inputs.key)]
            + ["--out", str(out), "--json"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(f"kit: usage error: {out}: cannot write: directory")
