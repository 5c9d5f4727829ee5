"""Every speed and memory figure of issue 12 in one run: kit against the plain tools, same inputs, paired.

Run:   python bench/run.py [--size-mib 512] [--big-size-mib 512] [--scale-files 1000000] [--repeat 3]
Quick: python bench/run.py --quick          (a small smoke run; the figures mean nothing)

For two generated mixes (many small files: ~24 files per MiB, 35% incompressible, 45% NDJSON, 20%
SQL of 1-20 KiB; few big files: 64 MiB incompressible layers + 32 MiB NDJSON shards), each repeat
runs every kit command right beside the plain command it is compared with, warm page cache:

  build    kit build --level 3              vs  tar -I 'zstd -3 -T2' -cf PLAIN        target >= 0.9x throughput
  verify   kit verify                       vs  zstd -dc PLAIN > /dev/null           target >= 0.9x
  stock    zstd -dc KIT > /dev/null         vs  zstd -dc PLAIN > /dev/null           target <= 1.2x the time
           kit verify                       vs  zstd -dc KIT | tar -x && sha256sum -c  (shown, no target)
  floor    kit build, kit verify            vs  the same work with stock tools on all cores: compress or
                                                decompress, plus the SHA-256 passes kit makes (shown)
  inspect  kit inspect                                                               (time, RSS)
  patch    kit patch BASE DELTA (1% of files changed; DELTA from kit build --delta-from)
                                            vs  cp BASE NEW && sync NEW              target <= 1.5x the time
                                            vs  a full kit build of the new spec     target >= 10x faster
           and whether the patched kit is byte-identical to that full build.

Then: inspect of a 25,000-file kit (target < 0.3 s, < 100 MiB); a scale run of --scale-files tiny files
(build, verify, inspect, delta build, patch; target: all succeed, peak RSS < 500 MiB; metadata member
sizes recorded, a refusal is a result, not a crash); bench/backfill_bench.py on PostgreSQL. Peak RSS
of every kit process (target < 150 MiB) comes from GNU time. Medians and min-max over --repeat runs;
ratios are taken per pair, then summarised. Writes bench/out/results.json (keys: bench/README.md).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import gen  # noqa: E402

KIT = [sys.executable, "-m", "kitbuilder.cli"]
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MiB = 1 << 20
BASE_EPOCH = "1700000000"
NEXT_EPOCH = "1700086400"
SCHEMA = "kitbuilder-bench/v1"

# The targets, in one place.
BUILD_MIN = 0.9  # kit build throughput / tar|zstd throughput
VERIFY_MIN = 0.9  # kit verify throughput / zstd -dc PLAIN throughput
STOCK_MAX = 1.2  # zstd -dc KIT time / zstd -dc PLAIN time
PATCH_CP_MAX = 1.5  # kit patch time / (cp + sync) time
PATCH_BUILD_MIN = 10.0  # full build time / kit patch time
INSPECT_SECONDS_MAX = 0.3
INSPECT_RSS_MAX = 100.0
RSS_MAX = 150.0
SCALE_RSS_MAX = 500.0
BACKFILL_MIN = {1: 0.8, 2: 1.0}


@dataclass(frozen=True)
class Run:
    seconds: float
    exit_code: int
    peak_rss_mib: float
    error: str
    timed_out: bool
    cpu_seconds: float = 0.0  # user + sys of the command and every descendant it waited for (wait4)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exitCode": self.exit_code,
            "seconds": round(self.seconds, 3),
            "peakRssMiB": round(self.peak_rss_mib, 1),
            "error": self.error,
            "timedOut": self.timed_out,
        }


class CommandFailed(Exception):
    """A compared command failed; the mix's figures would be meaningless."""


def run(
    command: Sequence[str] | str,
    *,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
    timeout: float | None = None,
) -> Run:
    """Wall time, exit code and peak RSS (the largest of the process and its descendants) of one command.

    A string is run by bash with pipefail. The process gets its own session so a timeout can stop its
    whole tree (by its process group id, which is its pid). The peak RSS comes from GNU time, not from
    our own wait4(): a child's ru_maxrss starts at the RSS of the process it was forked from (exec keeps
    the old address space's high-water mark), so wait4() here would report at least this script's own
    peak. GNU time forks from a ~1 MiB process.
    """
    argv: Sequence[str] = ["bash", "-c", "set -o pipefail; " + command] if isinstance(command, str) else command
    full_env = {**os.environ, **(env or {})}
    with (
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(prefix="kit-bench-rss-") as rss,
        stdout.open("wb") if stdout else open(os.devnull, "wb") as out,
    ):
        if TIME:
            argv = [TIME, "-f", "%M", "-o", rss.name, *argv]
        timed_out = threading.Event()
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, start_new_session=True)

        def stop() -> None:
            timed_out.set()
            os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        if timer:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
        peak_kib = usage.ru_maxrss
        if TIME:
            # time writes "Command exited with non-zero status N" first when it does; %M is the last line.
            reported = [line.strip() for line in Path(rss.name).read_text().splitlines() if line.strip()]
            peak_kib = int(reported[-1]) if reported and reported[-1].isdigit() else 0
    error = "" if process.returncode == 0 else (lines[-1][:400] if lines else "")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(elapsed, process.returncode, peak_kib / 1024, error, timed_out.is_set(), cpu)


def checked(command: Sequence[str] | str, **kwargs: Any) -> Run:
    result = run(command, **kwargs)
    if not result.ok:
        shown = command if isinstance(command, str) else " ".join(command)
        raise CommandFailed(f"{shown} -> exit {result.exit_code}: {result.error}")
    return result


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


# Paired rounds: each list holds one Run per round, in round order, so lists of one round pair up by position.


def seconds(runs: Sequence[Run]) -> dict[str, Any]:
    return summary([r.seconds for r in runs])


def cpu_seconds(runs: Sequence[Run]) -> dict[str, Any]:
    return summary([r.cpu_seconds for r in runs])


def ratio(a: Sequence[Run], b: Sequence[Run]) -> dict[str, Any]:
    """Per round, ``a``'s time over ``b``'s (the rounds paired), then summarised."""
    return summary([x.seconds / y.seconds for x, y in zip(a, b, strict=True)])


def peak(runs: Sequence[Run]) -> float:
    return round(max(r.peak_rss_mib for r in runs), 1)


def verify_floor(kit: Path) -> str:
    """The least work any verifier of ``kit`` does, with stock tools on all cores: decompress the whole stream and
    hash it (the members' content digests), and hash the compressed bytes twice (each frame's signed digest and
    the whole file's digest). openssl, not sha256sum: coreutils' SHA-256 may not use the CPU's SHA instructions."""
    return (
        f"openssl dgst -sha256 '{kit}' '{kit}' >/dev/null & hashing=$!; "
        f"zstd -dcq '{kit}' | openssl dgst -sha256 >/dev/null; wait $hashing"
    )


def build_floor(src: Path, out: Path) -> str:
    """The least work any builder of ``src`` does with stock tools: tar | zstd -3 -T2 (as compared with), plus
    each file's digest (the signed file list) beside it, and the output hashed twice (frame digests, file digest)."""
    return (
        f"(find '{src}' -type f -print0 | xargs -0 openssl dgst -sha256 >/dev/null) & hashing=$!; "
        f"tar -cf - -C '{src}' . | zstd -3 -T2 -q | tee '{out}' | openssl dgst -sha256 >/dev/null; "
        f"openssl dgst -sha256 '{out}' >/dev/null; wait $hashing"
    )


def remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            # rm -rf is several times faster than shutil.rmtree on a million files.
            subprocess.run(["rm", "-rf", "--", str(path)], check=True)
        elif path.exists():
            path.unlink()


_HELP: dict[str, str] = {}


def supports(command: str, option: str) -> bool:
    """Whether `kit COMMAND` has OPTION today (the format work may add or drop options)."""
    if command not in _HELP:
        done = subprocess.run([*KIT, *command.split(), "--help"], capture_output=True, text=True)
        _HELP[command] = done.stdout
    return re.search(rf"(^|\s){re.escape(option)}(\s|,|$)", _HELP[command], re.MULTILINE) is not None


def member_cap(command: str, members: int) -> list[str]:
    """--max-members for a kit near or past the default cap (50,000), where the command takes it."""
    if members < 40_000 or not supports(command, "--max-members"):
        return []
    return ["--max-members", str(members + 1000)]


def warm(root: Path) -> None:
    """Read every input once so each command meets a warm page cache."""
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(4 * MiB):
                    pass


def write_spec(path: Path, sequence: int, *, sql: bool, seeds: bool, docs: Sequence[tuple[str, str]]) -> None:
    lines = [
        "apiVersion: kitbuilder/v1",
        "name: bench",
        'version: "1"',
        f"sequence: {sequence}",
        'expires: "2099-01-01"',
        "product: bench",
    ]
    if sql:
        lines += ["migrations:", "  - id: sql", '    phase: "1"', "    source: src/sql"]
    if seeds:
        lines += ["seeds:", "  - id: ndjson", "    source: src/ndjson", "    table: observations", "    key: [id]"]
    if docs:
        lines += ["docs:"] + [f"  - id: {name}\n    source: {source}" for name, source in docs]
    path.write_text("\n".join(lines) + "\n")


def metadata_sizes(kit: Path, timeout: float) -> dict[str, Any]:
    """Sizes of the members that repeat the file list, read with stock tools, and the index from the footer."""
    sizes: dict[str, Any] = {}
    process = subprocess.Popen(
        f"zstd -dcq '{kit}' | tar -tv", shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    members = 0
    assert process.stdout is not None
    for line in process.stdout:
        fields = line.rstrip("\n").split(maxsplit=5)
        if len(fields) < 6:
            continue
        members += 1
        name = fields[5]
        if name in (
            "SHA256SUMS",
            "manifest.files.jsonl",
            "manifest.json",
            "manifest.dsse.json",
            "sbom/kit.cdx.json",
        ) or name.startswith("attestations/"):
            sizes[name] = int(fields[2])
    process.wait()
    timer.cancel()
    sizes["members"] = members
    # docs/format.md 1.4: the last 24 bytes are a skippable frame whose last 8 bytes are the index offset;
    # the index is a skippable frame (magic, u32 length, JSON).
    with kit.open("rb") as handle:
        handle.seek(-24, os.SEEK_END)
        footer = handle.read(24)
        if footer[8:16] == b"KITINDEX":
            (offset,) = struct.unpack("<Q", footer[16:24])
            handle.seek(offset)
            _, length = struct.unpack("<II", handle.read(8))
            sizes["index"] = length
    sizes["total"] = sum(v for k, v in sizes.items() if k != "members")
    # Linear growth shows as a flat figure across kit sizes.
    sizes["totalBytesPerMember"] = round(sizes["total"] / max(1, members), 1)
    return sizes


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


class Mix:
    """One mix: inputs, plain tar.zst, base kit, then the paired timings."""

    def __init__(self, name: str, work: Path, generate: Callable[[Path], gen.Generated], args: argparse.Namespace):
        self.name = name
        self.work = work / name
        self.work.mkdir(parents=True)
        self.src = self.work / "src"
        self.generated = generate(self.src)
        self.args = args
        self.spec = self.work / "spec.yaml"
        self.base = self.work / "base.kit.tar.zst"
        self.plain = self.work / "plain.tar.zst"
        self.files = sum(1 for p in self.src.rglob("*") if p.is_file())
        self.bytes = sum(p.stat().st_size for p in self.src.rglob("*") if p.is_file())

    def write_spec(self, sequence: int) -> None:
        write_spec(self.spec, sequence, sql=True, seeds=True, docs=[("bin", "src/bin")])

    def build(self, out: Path, epoch: str, extra: Sequence[str] = ()) -> Run:
        remove(out, Path(f"{out}.intoto.jsonl"))
        command = [*KIT, "build", str(self.spec), "--key", str(self.keys.private), "--out", str(out), "--level", "3"]
        return checked([*command, *extra, "-q"], env={"SOURCE_DATE_EPOCH": epoch})

    def measure(self, keys: Keys) -> dict[str, Any]:
        self.keys = keys
        repeat = self.args.repeat
        pub = ["--key", str(keys.public), "--no-state"]
        cap = self.files + 100
        self.write_spec(1)
        warm(self.src)
        build: list[Run] = []
        tar: list[Run] = []
        verify: list[Run] = []
        verify_plain: list[Run] = []
        stock_kit: list[Run] = []
        stock_plain: list[Run] = []
        pipeline: list[Run] = []
        inspect: list[Run] = []
        floor_build: list[Run] = []
        floor_verify: list[Run] = []
        extract = self.work / "x"
        floor_out = self.work / "floor.tar.zst"
        for _ in range(repeat):
            build.append(self.build(self.base, BASE_EPOCH))
            remove(self.plain)
            tar.append(checked(f"tar -I 'zstd -3 -T2' -cf '{self.plain}' -C '{self.src}' ."))
            floor_build.append(checked(build_floor(self.src, floor_out)))
            remove(floor_out)
            verify.append(checked([*KIT, "verify", str(self.base), *pub, *member_cap("verify", cap), "-q"]))
            verify_plain.append(checked(["zstd", "-dcq", str(self.plain)]))
            floor_verify.append(checked(verify_floor(self.base)))
            stock_kit.append(checked(["zstd", "-dcq", str(self.base)]))
            stock_plain.append(checked(["zstd", "-dcq", str(self.plain)]))
            remove(extract)
            pipeline.append(
                checked(
                    f"mkdir '{extract}' && zstd -dcq '{self.base}' | tar -x -C '{extract}' && cd '{extract}' && "
                    "sha256sum -c --strict --quiet SHA256SUMS"
                )
            )
            remove(extract)
            inspect.append(checked([*KIT, "inspect", str(self.base), *pub, *member_cap("inspect", cap)]))
        metadata = metadata_sizes(self.base, 600)
        base_bytes = self.base.stat().st_size

        # The next release: 1% of the files changed, a delta against the base, and the full kit to compare.
        changed_files, changed_bytes = gen.change(self.generated, 0.01)
        self.write_spec(2)
        warm(self.src)
        delta = self.work / "delta.kit.tar.zst"
        delta_build = self.build(delta, NEXT_EPOCH, ["--delta-from", str(self.base)])
        patched = self.work / "patched.kit.tar.zst"
        full = self.work / "full.kit.tar.zst"
        copy = self.work / "copy.kit.tar.zst"
        patch: list[Run] = []
        cp_sync: list[Run] = []
        full_build: list[Run] = []
        for _ in range(repeat):
            remove(patched)
            command = [*KIT, "patch", str(self.base), str(delta), *pub, *member_cap("patch", cap)]
            patch.append(checked([*command, "--out", str(patched)]))
            remove(copy)
            cp_sync.append(checked(f"cp '{self.base}' '{copy}' && sync '{copy}'"))
            remove(copy)
            full_build.append(self.build(full, NEXT_EPOCH))
        identical = filecmp.cmp(patched, full, shallow=False)
        times, rss = seconds, peak
        megabytes = self.bytes / 1e6
        return {
            "inputs": {
                "files": self.files,
                "bytes": self.bytes,
                "kitBytes": base_bytes,
                "plainBytes": self.plain.stat().st_size,
            },
            "build": {
                "kitSeconds": times(build),
                "tarZstdSeconds": times(tar),
                "kitMBps": round(megabytes / statistics.median(r.seconds for r in build), 1),
                "tarZstdMBps": round(megabytes / statistics.median(r.seconds for r in tar), 1),
                "ratio": ratio(tar, build),
                "peakRssMiB": rss(build),
                "kitCpuSeconds": cpu_seconds(build),
                "tarZstdCpuSeconds": cpu_seconds(tar),
            },
            "verify": {
                "kitSeconds": times(verify),
                "zstdPlainSeconds": times(verify_plain),
                "ratio": ratio(verify_plain, verify),
                "peakRssMiB": rss(verify),
                "kitCpuSeconds": cpu_seconds(verify),
                "zstdPlainCpuSeconds": cpu_seconds(verify_plain),
            },
            "floor": {
                "buildSeconds": times(floor_build),
                "buildCpuSeconds": cpu_seconds(floor_build),
                "buildRatio": ratio(floor_build, build),
                "verifySeconds": times(floor_verify),
                "verifyCpuSeconds": cpu_seconds(floor_verify),
                "verifyRatio": ratio(floor_verify, verify),
            },
            "stockZstd": {
                "kitSeconds": times(stock_kit),
                "plainSeconds": times(stock_plain),
                "ratio": ratio(stock_kit, stock_plain),
            },
            "verifyVsPipeline": {
                "kitSeconds": times(verify),
                "pipelineSeconds": times(pipeline),
                "ratio": ratio(pipeline, verify),
            },
            "inspect": {"kitSeconds": times(inspect), "peakRssMiB": rss(inspect)},
            "patch": {
                "changedFiles": changed_files,
                "changedFileFraction": round(changed_files / self.files, 4),
                "changedFileBytes": changed_bytes,
                "deltaBytes": delta.stat().st_size,
                "deltaBuild": delta_build.as_json(),
                "kitSeconds": times(patch),
                "cpSyncSeconds": times(cp_sync),
                "fullBuildSeconds": times(full_build),
                "ratioVsCpSync": ratio(patch, cp_sync),
                "speedupVsFullBuild": ratio(full_build, patch),
                "peakRssMiB": rss(patch),
                "fullBuildPeakRssMiB": rss(full_build),
                "patchedEqualsFullBuild": identical,
            },
            "metadata": metadata,
        }


def measure_patch(work: Path, size_mib: int, keys: Keys, repeat: int) -> dict[str, Any]:
    """The issue's patch target as it states it: a kit of `size_mib` MiB of the many-small mix (~24 files per
    MiB), 1% of its files changed, the delta from `kit build --delta-from`; then, `repeat` times paired,
    `kit patch BASE DELTA --out NEW` against `cp BASE COPY && sync COPY` and a full build of the new spec.

    CPU seconds (user + sys, of each command and its children) come from wait4 (``Run.cpu_seconds``): a loaded
    machine stretches wall time, not CPU time.
    """
    root = work / "patch-size"
    root.mkdir()
    generated = gen.many_small(root / "src", size_mib * MiB)
    files = sum(1 for path in (root / "src").rglob("*") if path.is_file())
    spec = root / "spec.yaml"
    base, delta = root / "base.kit.tar.zst", root / "delta.kit.tar.zst"
    patched, full, copy = root / "patched.kit.tar.zst", root / "full.kit.tar.zst", root / "copy.kit.tar.zst"

    def spec_for(sequence: int) -> None:
        write_spec(spec, sequence, sql=True, seeds=True, docs=[("bin", "src/bin")])

    def build(out: Path, epoch: str, extra: Sequence[str] = ()) -> list[str]:
        remove(out, Path(f"{out}.intoto.jsonl"))
        return [*KIT, "build", str(spec), "--key", str(keys.private), "--out", str(out), "--level", "3", *extra, "-q"]

    spec_for(1)
    warm(root / "src")
    checked(build(base, BASE_EPOCH), env={"SOURCE_DATE_EPOCH": BASE_EPOCH})
    changed_files, changed_bytes = gen.change(generated, 0.01)
    spec_for(2)
    warm(root / "src")
    delta_command = build(delta, NEXT_EPOCH, ["--delta-from", str(base), *member_cap("build", files)])
    delta_build = checked(delta_command, env={"SOURCE_DATE_EPOCH": NEXT_EPOCH})
    patch_command = [
        *KIT, "patch", str(base), str(delta), "--key", str(keys.public), "--no-state", *member_cap("patch", files)
    ]  # fmt: skip
    patch: list[Run] = []
    cp_sync: list[Run] = []
    full_build: list[Run] = []
    for _ in range(repeat):
        remove(patched)
        patch.append(checked([*patch_command, "--out", str(patched)]))
        remove(copy)
        cp_sync.append(checked(f"cp '{base}' '{copy}' && sync '{copy}'"))
        remove(copy)
        full_build.append(checked(build(full, NEXT_EPOCH), env={"SOURCE_DATE_EPOCH": NEXT_EPOCH}))
    identical = filecmp.cmp(patched, full, shallow=False)
    kit_bytes = base.stat().st_size

    result = {
        "sizeMiB": size_mib,
        "files": files,
        "kitBytes": kit_bytes,
        "changedFiles": changed_files,
        "changedFileFraction": round(changed_files / files, 4),
        "changedFileBytes": changed_bytes,
        "deltaBytes": delta.stat().st_size,
        "deltaBuild": {**delta_build.as_json(), "cpuSeconds": round(delta_build.cpu_seconds, 3)},
        "kitSeconds": seconds(patch),
        "kitCpuSeconds": cpu_seconds(patch),
        "cpSyncSeconds": seconds(cp_sync),
        "cpSyncCpuSeconds": cpu_seconds(cp_sync),
        "fullBuildSeconds": seconds(full_build),
        "fullBuildCpuSeconds": cpu_seconds(full_build),
        "ratioVsCpSync": ratio(patch, cp_sync),
        "speedupVsFullBuild": ratio(full_build, patch),
        "peakRssMiB": peak(patch),
        "fullBuildPeakRssMiB": peak(full_build),
        "patchedEqualsFullBuild": identical,
    }
    remove(root)
    return result


def measure_inspect_files(work: Path, files: int, keys: Keys, repeat: int) -> dict[str, Any]:
    """Inspect of a kit of `files` small files (the issue's 25,000-file target)."""
    root = work / "inspect-files"
    generated = gen.tiny_files(root / "src", files)
    spec = root / "spec.yaml"
    write_spec(spec, 1, sql=False, seeds=False, docs=[("tree", "src")])
    kit = root / "kit.kit.tar.zst"
    build = run(
        [*KIT, "build", str(spec), "--key", str(keys.private), "--out", str(kit), "--level", "3", "-q"],
        env={"SOURCE_DATE_EPOCH": BASE_EPOCH},
    )
    result: dict[str, Any] = {"files": len(generated.files), "build": build.as_json()}
    if not build.ok:
        return result
    runs = [
        checked([*KIT, "inspect", str(kit), "--key", str(keys.public), "--no-state", *member_cap("inspect", files)])
        for _ in range(repeat)
    ]
    result.update(
        kitBytes=kit.stat().st_size,
        kitSeconds=summary([r.seconds for r in runs]),
        peakRssMiB=round(max(r.peak_rss_mib for r in runs), 1),
    )
    remove(root)
    return result


def measure_scale(work: Path, files: int, keys: Keys, timeout: float) -> dict[str, Any]:
    """Build, verify, inspect, delta-build and patch a kit of `files` tiny files; refusals are results."""
    root = work / "scale"
    started = time.perf_counter()
    generated = gen.tiny_files(root / "src", files)
    generate_seconds = time.perf_counter() - started
    spec = root / "spec.yaml"
    write_spec(spec, 1, sql=False, seeds=False, docs=[("tree", "src")])
    base = root / "base.kit.tar.zst"
    delta = root / "delta.kit.tar.zst"
    patched = root / "patched.kit.tar.zst"
    pub = ["--key", str(keys.public), "--no-state"]
    steps: dict[str, Any] = {}
    build_cmd = [*KIT, "build", str(spec), "--key", str(keys.private), "--level", "3", "-q"]
    first = run([*build_cmd, "--out", str(base)], env={"SOURCE_DATE_EPOCH": BASE_EPOCH}, timeout=timeout)
    steps["build"] = first.as_json()
    result: dict[str, Any] = {"files": files, "generateSeconds": round(generate_seconds, 1), "steps": steps}
    if first.ok:
        result["kitBytes"] = base.stat().st_size
        result["metadata"] = metadata_sizes(base, timeout)
        steps["verify"] = run(
            [*KIT, "verify", str(base), *pub, *member_cap("verify", files), "-q"], timeout=timeout
        ).as_json()
        steps["inspect"] = run(
            [*KIT, "inspect", str(base), *pub, *member_cap("inspect", files)], timeout=timeout
        ).as_json()
        gen.change(generated, 0.01)
        write_spec(spec, 2, sql=False, seeds=False, docs=[("tree", "src")])
        delta_build = run(
            [*build_cmd, "--out", str(delta), "--delta-from", str(base), *member_cap("build", files)],
            env={"SOURCE_DATE_EPOCH": NEXT_EPOCH},
            timeout=timeout,
        )
        steps["deltaBuild"] = delta_build.as_json()
        if delta_build.ok:
            result["deltaBytes"] = delta.stat().st_size
            steps["patch"] = run(
                [*KIT, "patch", str(base), str(delta), *pub, *member_cap("patch", files), "--out", str(patched)],
                timeout=timeout,
            ).as_json()
    for name in ("verify", "inspect", "deltaBuild", "patch"):
        steps.setdefault(name, {"ok": False, "skipped": "an earlier step failed"})
    result["allOk"] = all(step["ok"] for step in steps.values())
    result["peakRssMiB"] = max((step.get("peakRssMiB", 0.0) for step in steps.values()), default=0.0)
    remove(root)
    return result


def measure_backfill(rows: int, workers: Sequence[int], timeout: float, repeat: int = 3) -> dict[str, Any]:
    """bench/backfill_bench.py as one subprocess (it times every worker count itself, paired with the
    set-based UPDATE in each round): its JSON file in bench/out if it writes one, else its stdout."""
    script = BENCH / "backfill_bench.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    has_workers = "workers" in help_text
    started = time.time()
    with tempfile.NamedTemporaryFile(suffix=".out") as out:
        command = [sys.executable, str(script), "--rows", str(rows)]
        if "--runs" in help_text:
            command += ["--runs", str(repeat)]
        result = run(command, stdout=Path(out.name), timeout=timeout)
        text = Path(out.name).read_text(errors="replace")
    figures: Any = None
    source = ""
    if result.ok:
        figures, source = read_backfill_figures(text, started)
    runs: list[dict[str, Any]] = []
    for count in workers if has_workers else [1]:
        entry: dict[str, Any] = {"workers": count, "run": result.as_json(), "source": source}
        per_count = figures.get("workers", {}).get(str(count)) if isinstance(figures, dict) else None
        if isinstance(per_count, dict):
            entry["figures"] = per_count
            if isinstance(per_count.get("ratio"), int | float):
                entry["ratio"] = per_count["ratio"]
        elif isinstance(figures, dict) and isinstance(figures.get("ratio"), int | float):
            entry["figures"] = figures
            entry["ratio"] = figures["ratio"]
        runs.append(entry)
    return {"rows": rows, "workersOption": has_workers, "runs": runs}


def read_backfill_figures(stdout: str, started: float) -> tuple[Any, str]:
    out_dir = BENCH / "out"
    written = (
        sorted(
            (p for p in out_dir.glob("*backfill*.json") if p.stat().st_mtime >= started),
            key=lambda p: p.stat().st_mtime,
        )
        if out_dir.is_dir()
        else []
    )
    if written:
        return json.loads(written[-1].read_text()), str(written[-1].relative_to(ROOT))
    start = stdout.find("{")
    if start < 0:
        return None, "stdout (no JSON found)"
    figures, _ = json.JSONDecoder().raw_decode(stdout[start:])
    return figures, "stdout"


def target_rows(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(what: str, target: str, value: float | None, shown: str, met: bool | None) -> None:
        rows.append({"what": what, "target": target, "value": value, "measured": shown, "met": met})

    def ranged(block: dict[str, Any], unit: str = "x") -> str:
        return f"{block['median']:.2f}{unit} ({block['min']:.2f}-{block['max']:.2f})"

    mixes = results["mixes"]
    for name, mix in mixes.items():
        if "error" in mix:
            add(f"{name}: all measurements", "complete", None, mix["error"][:60], False)
            continue
        b, v, s, p = mix["build"], mix["verify"], mix["stockZstd"], mix["patch"]
        add(
            f"{name}: build throughput vs tar|zstd -3 -T2",
            ">= 0.9x",
            b["ratio"]["median"],
            ranged(b["ratio"]),
            b["ratio"]["median"] >= BUILD_MIN,
        )
        add(
            f"{name}: verify throughput vs zstd -dc PLAIN",
            ">= 0.9x",
            v["ratio"]["median"],
            ranged(v["ratio"]),
            v["ratio"]["median"] >= VERIFY_MIN,
        )
        if "floor" in mix:
            f = mix["floor"]
            for command, kit, floor in (("build", b, "build"), ("verify", v, "verify")):
                add(
                    f"{name}: {command} vs its floor (stock tools, all cores)",
                    "(shown)",
                    f[f"{floor}Ratio"]["median"],
                    f"{ranged(f[f'{floor}Ratio'])}; CPU {kit['kitCpuSeconds']['median']:.2f} s vs "
                    f"{f[f'{floor}CpuSeconds']['median']:.2f} s",
                    None,
                )
        add(
            f"{name}: zstd -dc KIT time vs zstd -dc PLAIN",
            "<= 1.2x",
            s["ratio"]["median"],
            ranged(s["ratio"]),
            s["ratio"]["median"] <= STOCK_MAX,
        )
        pipe = mix["verifyVsPipeline"]["ratio"]
        add(f"{name}: verify vs zstd -dc|tar -x && sha256sum -c", "(faster)", pipe["median"], ranged(pipe), None)
        add(
            f"{name}: patch time vs cp + sync",
            "<= 1.5x",
            p["ratioVsCpSync"]["median"],
            ranged(p["ratioVsCpSync"]),
            p["ratioVsCpSync"]["median"] <= PATCH_CP_MAX,
        )
        add(
            f"{name}: patch speed-up vs full build",
            ">= 10x",
            p["speedupVsFullBuild"]["median"],
            ranged(p["speedupVsFullBuild"]),
            p["speedupVsFullBuild"]["median"] >= PATCH_BUILD_MIN,
        )
        add(
            f"{name}: patched kit == full build",
            "yes",
            None,
            "yes" if p["patchedEqualsFullBuild"] else "NO",
            p["patchedEqualsFullBuild"],
        )
        add(
            f"{name}: inspect ({mix['inputs']['files']:,} files)",
            "(shown)",
            mix["inspect"]["kitSeconds"]["median"],
            f"{ranged(mix['inspect']['kitSeconds'], ' s')}, {mix['inspect']['peakRssMiB']:.0f} MiB",
            None,
        )
        for command, peak in (
            ("build", b["peakRssMiB"]),
            ("verify", v["peakRssMiB"]),
            ("patch", p["peakRssMiB"]),
            ("delta build", p["deltaBuild"]["peakRssMiB"]),
        ):
            add(f"{name}: peak RSS {command}", "< 150 MiB", peak, f"{peak:.0f} MiB", peak < RSS_MAX)
    patch = results["patchAtSize"]
    size = f"{patch.get('sizeMiB', args.patch_size_mib):,} MiB"
    if "error" in patch:
        add(f"patch, {size} kit: all measurements", "complete", None, patch["error"][:60], False)
    else:
        what = f"patch, {size} kit ({patch['files']:,} files, {patch['changedFileFraction']:.0%} changed)"
        add(
            f"{what}: time vs cp + sync",
            "<= 1.5x",
            patch["ratioVsCpSync"]["median"],
            ranged(patch["ratioVsCpSync"]),
            patch["ratioVsCpSync"]["median"] <= PATCH_CP_MAX,
        )
        add(
            f"{what}: speed-up vs full build",
            ">= 10x",
            patch["speedupVsFullBuild"]["median"],
            ranged(patch["speedupVsFullBuild"]),
            patch["speedupVsFullBuild"]["median"] >= PATCH_BUILD_MIN,
        )
        for name, key in (("patch", "kit"), ("cp + sync", "cpSync"), ("full build", "fullBuild")):
            add(
                f"{what}: {name} wall / CPU",
                "(shown)",
                patch[f"{key}Seconds"]["median"],
                f"{ranged(patch[f'{key}Seconds'], ' s')} / {ranged(patch[f'{key}CpuSeconds'], ' s')}",
                None,
            )
        add(
            f"{what}: delta build (kit build --delta-from)",
            "(shown)",
            patch["deltaBuild"]["seconds"],
            f"{patch['deltaBuild']['seconds']:.2f} s, CPU {patch['deltaBuild']['cpuSeconds']:.2f} s, "
            f"{patch['deltaBuild']['peakRssMiB']:.0f} MiB",
            None,
        )
        peak = patch["peakRssMiB"]
        add(f"{what}: peak RSS patch", "< 150 MiB", peak, f"{peak:.0f} MiB", peak < RSS_MAX)
        add(
            f"{what}: patched kit == full build",
            "yes",
            None,
            "yes" if patch["patchedEqualsFullBuild"] else "NO",
            patch["patchedEqualsFullBuild"],
        )
    files = results["inspectFiles"]
    if "kitSeconds" in files:
        seconds, peak = files["kitSeconds"]["median"], files["peakRssMiB"]
        add(
            f"inspect, {files['files']:,}-file kit",
            "< 0.3 s, < 100 MiB",
            seconds,
            f"{ranged(files['kitSeconds'], ' s')}, {peak:.0f} MiB",
            seconds < INSPECT_SECONDS_MAX and peak < INSPECT_RSS_MAX,
        )
    else:
        add(
            f"inspect, {files['files']:,}-file kit",
            "< 0.3 s, < 100 MiB",
            None,
            f"build failed: {files['build']['error'][:50]}",
            False,
        )
    scale = results["scale"]
    label = f"scale run, {scale['files']:,} files" + ("" if scale["files"] >= 1_000_000 else " (target is 1,000,000)")
    failed = [name for name, step in scale["steps"].items() if not step["ok"]]
    shown = ("all steps ok" if not failed else "failed: " + ", ".join(failed)) + f", {scale['peakRssMiB']:.0f} MiB"
    add(label, "all ok, < 500 MiB", scale["peakRssMiB"], shown, scale["allOk"] and scale["peakRssMiB"] < SCALE_RSS_MAX)
    backfill = results["backfill"]
    if backfill is None:
        add("backfill vs set-based UPDATE", ">= 0.8x (1 worker)", None, "not run (--no-backfill)", None)
    else:
        for entry in backfill["runs"]:
            workers = entry["workers"]
            target = BACKFILL_MIN.get(workers, 1.0)
            what = f"backfill vs set-based UPDATE, {workers} worker(s)"
            if "ratio" in entry:
                add(what, f">= {target}x", entry["ratio"], f"{entry['ratio']:.2f}x", entry["ratio"] >= target)
            else:
                add(what, f">= {target}x", None, f"failed: {entry['run']['error'][:50]}", False)
        if not backfill["workersOption"]:
            add("backfill, 2 workers", ">= 1.0x", None, "no --workers option yet", None)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["what"]) for r in rows)
    measured = max(len(r["measured"]) for r in rows)
    target = max(len(r["target"]) for r in rows)
    print(f"\n{'what':<{width}}  {'measured: median (min-max)':<{measured}}  {'target':<{target}}  met")
    for row in rows:
        met = {True: "met", False: "NOT MET", None: "-"}[row["met"]]
        print(f"{row['what']:<{width}}  {row['measured']:<{measured}}  {row['target']:<{target}}  {met}")


def host_info() -> dict[str, Any]:
    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError:
            return "unavailable"
        return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""

    return {
        "cpus": os.cpu_count(),
        "usableCpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "kit": first_line([*KIT, "--version"]),
        "zstd": first_line(["zstd", "--version"]),
        "tar": first_line(["tar", "--version"]),
        "loadAverageAtStart": [round(x, 2) for x in os.getloadavg()],
        "rssMethod": "GNU time %M" if TIME else "wait4 (no /usr/bin/time: at least this script's own peak RSS)",
    }


def compile_bytecode() -> None:
    """Compile kit's modules once, as installing it does (pip writes their bytecode).

    A source checkout run with PYTHONDONTWRITEBYTECODE set (as some CI and sandboxes do) would otherwise compile
    every module each kit command imports, every time: about 0.1 s of CPU per command that an installed kit
    never spends. Python checks each cached file against its source, so a stale one is never used.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "kitbuilder")], check=False, capture_output=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="many-small-files mix size (default 512)")
    parser.add_argument("--big-size-mib", type=int, help="few-big-files mix size (default: --size-mib)")
    parser.add_argument("--scale-files", type=int, default=1_000_000, help="files in the scale run (default 1M)")
    parser.add_argument("--inspect-files", type=int, default=25_000, help="files in the inspect kit (default 25k)")
    parser.add_argument("--repeat", type=int, default=3, help="paired runs per comparison (default 3)")
    parser.add_argument(
        "--patch-size-mib", type=int, default=2048, help="many-small kit the patch target is measured on (2048)"
    )
    parser.add_argument("--backfill-rows", type=int, default=200_000, help="rows for bench/backfill_bench.py")
    parser.add_argument("--backfill-workers", default="1,2", help="worker counts, if backfill_bench has --workers")
    parser.add_argument("--no-backfill", action="store_true", help="skip the PostgreSQL backfill bench")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per scale-run step and backfill run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    parser.add_argument("--workdir", type=Path, help="where inputs and kits go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--only", choices=["scale"], help="run only this part (scale: the --scale-files run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.big_size_mib = 4, 4
        args.scale_files, args.inspect_files, args.repeat, args.backfill_rows = 2000, 1000, 1, 2000
        args.patch_size_mib = 4
    big_size = args.big_size_mib if args.big_size_mib is not None else args.size_mib
    started = time.time()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="kit-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": host_info(),
        "options": {
            "sizeMiB": args.size_mib,
            "bigSizeMiB": big_size,
            "scaleFiles": args.scale_files,
            "inspectFiles": args.inspect_files,
            "repeat": args.repeat,
            "patchSizeMiB": args.patch_size_mib,
            "backfillRows": None if args.no_backfill else args.backfill_rows,
            "quick": args.quick,
        },
    }
    try:
        keys = Keys(work / "k.key", work / "k.pub")
        # Ed25519 signatures are deterministic, so a patched kit can equal a separate full build byte for byte.
        plain_env = {k: v for k, v in os.environ.items() if k != "KIT_PASSPHRASE"}
        subprocess.run(
            [*KIT, "keygen", "--type", "ed25519", "--out", str(work / "k")],
            check=True,
            capture_output=True,
            env=plain_env,
        )
        if args.only == "scale":
            return _only_scale(work, keys, args, results)
        mixes: dict[str, Any] = {}
        for name, generate in (
            ("many-small", lambda root: gen.many_small(root, args.size_mib * MiB)),
            ("few-big", lambda root: gen.few_big(root, big_size * MiB)),
        ):
            print(f"[{time.strftime('%H:%M:%S')}] {name} mix", file=sys.stderr)
            try:
                mixes[name] = Mix(name, work, generate, args).measure(keys)
            except CommandFailed as failure:
                mixes[name] = {"error": str(failure)}
            remove(work / name)
        results["mixes"] = mixes
        print(f"[{time.strftime('%H:%M:%S')}] patch, {args.patch_size_mib:,} MiB kit", file=sys.stderr)
        try:
            results["patchAtSize"] = measure_patch(work, args.patch_size_mib, keys, args.repeat)
        except CommandFailed as failure:
            results["patchAtSize"] = {"error": str(failure)}
        remove(work / "patch-size")
        print(f"[{time.strftime('%H:%M:%S')}] inspect, {args.inspect_files:,} files", file=sys.stderr)
        results["inspectFiles"] = measure_inspect_files(work, args.inspect_files, keys, args.repeat)
        print(f"[{time.strftime('%H:%M:%S')}] scale run, {args.scale_files:,} files", file=sys.stderr)
        results["scale"] = measure_scale(work, args.scale_files, keys, args.timeout)
        if args.no_backfill:
            results["backfill"] = None
        else:
            print(f"[{time.strftime('%H:%M:%S')}] backfill, {args.backfill_rows:,} rows", file=sys.stderr)
            workers = [int(n) for n in args.backfill_workers.split(",") if n.strip()]
            results["backfill"] = measure_backfill(args.backfill_rows, workers, args.timeout, args.repeat)
    finally:
        if not args.keep:
            remove(work)
    results["host"]["loadAverageAtEnd"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.time() - started, 1)
    results["targets"] = target_rows(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results["targets"])
    print(f"\nwrote {args.out} ({results['seconds']:.0f} s)")
    return 0


def _only_scale(work: Path, keys: Keys, args: argparse.Namespace, results: dict[str, Any]) -> int:
    """--only scale: the scale run alone, its JSON written and printed."""
    print(f"[{time.strftime('%H:%M:%S')}] scale run, {args.scale_files:,} files", file=sys.stderr)
    results["scale"] = measure_scale(work, args.scale_files, keys, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["scale"], indent=2))
    return 0 if results["scale"]["allOk"] else 1


if __name__ == "__main__":
    sys.exit(main())
