"""Kit build / verify / patch throughput against the shell pipelines a user would otherwise type.

Run: python bench/kit_bench.py [--size-gib 1.0] [--workdir DIR] [--repeat 2]

One run measures, on the same generated inputs (about 40% incompressible, 40%
text-like, 20% small files):
  build   kit build --level 3 (single-threaded) vs  tar -I 'zstd -3 -T2' -cf        (target >= 0.9x)
  verify  kit verify                            vs  zstd -dc KIT >/dev/null         (target >= 0.9x)
          kit verify                            vs  zstd -dc | tar -x && sha256sum -c (target >= 2x)
  patch   kit patch BASE DELTA (1% changed)     vs  cp BASE                         (target <= 1.5x the time)
          kit patch                             vs  full kit build of the new spec  (target >= 10x faster)
plus the peak RSS of every kit process (target < 150 MiB). Each command runs
--repeat times and the best time counts; results go to bench/out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = [sys.executable, "-m", "kitbuilder.cli"]
MiB = 1 << 20


def generate(source: Path, total: int) -> None:
    rng = random.Random(20251125)
    (source / "images").mkdir(parents=True)
    (source / "data").mkdir()
    (source / "small").mkdir()
    random_bytes = int(total * 0.4)
    for number in range(max(1, random_bytes // (64 * MiB))):
        (source / "images" / f"layer-{number:03d}.bin").write_bytes(os.urandom(min(64 * MiB, random_bytes)))
    text_bytes = int(total * 0.4)
    line = 0
    for number in range(max(1, text_bytes // (32 * MiB))):
        with (source / "data" / f"observations-{number:03d}.ndjson").open("w") as out:
            written = 0
            while written < 32 * MiB:
                row = (
                    f'{{"id":{line},"tenant":"t{line % 7}","advisory":"CVE-2025-{line % 99999:05d}",'
                    f'"source":"{("nvd", "ghsa", "osv")[line % 3]}","score":{rng.random():.4f}}}\n'
                )
                out.write(row)
                written += len(row)
                line += 1
    small_bytes = int(total * 0.2)
    written = number = 0
    while written < small_bytes:
        size = rng.randint(1024, 128 * 1024)
        payload = (f"-- migration {number}\n" * (size // 24 + 1)).encode()[: size // 2] + os.urandom(size // 2)
        (source / "small" / f"m-{number:05d}.sql").write_bytes(payload)
        written += size
        number += 1
    # A migration must have the script it runs (kit build refuses one without); the bulk above rides along.
    (source / "small" / "up.sql").write_text("CREATE TABLE IF NOT EXISTS bench_marker (id INTEGER);\n")


SPEC = """\
apiVersion: kitbuilder/v1
name: bench
version: "1"
sequence: {sequence}
expires: "2099-01-01"
product: bench
migrations:
  - id: small
    phase: "1"
    source: src/small
seeds:
  - id: data
    source: src/data
    table: observations
    key: [id]
docs:
  - id: images
    source: src/images
"""


def timed(
    command: list[str] | str, repeat: int, *, shell: bool = False, cleanup: str | None = None
) -> tuple[float, int]:
    """Best wall time over ``repeat`` runs, and the peak RSS (KiB) of the command's process tree's largest child."""
    best = float("inf")
    peak = 0
    for _ in range(repeat):
        if cleanup:
            subprocess.run(cleanup, shell=True, check=True)
        start = time.perf_counter()
        process = subprocess.Popen(command, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"{command} failed: {process.stderr.read().decode() if process.stderr else ''}")
        best = min(best, elapsed)
        peak = max(peak, usage.ru_maxrss)
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kit-bench-", dir=args.workdir))
    results: dict[str, object] = {"sizeGiB": args.size_gib}
    try:
        src = work / "src"
        total = int(args.size_gib * (1 << 30))
        generate(src, total)
        input_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        files = sum(1 for p in src.rglob("*") if p.is_file())
        (work / "spec.yaml").write_text(SPEC.format(sequence=1))
        subprocess.run([*KIT, "keygen", "--out", str(work / "k")], check=True, capture_output=True)
        env_epoch = "SOURCE_DATE_EPOCH=1700000000"
        kit = work / "base.kit.tar.zst"
        build_s, build_rss = timed(
            f"{env_epoch} {' '.join(KIT)} build {work}/spec.yaml --key {work}/k.key --out {kit} --level 3 -q",
            args.repeat,
            shell=True,
        )
        tar_s, _ = timed(f"tar -I 'zstd -3 -T2' -cf {work}/ref.tar.zst -C {src} .", args.repeat, shell=True)
        verify_s, verify_rss = timed(
            [*KIT, "verify", str(kit), "--key", f"{work}/k.pub", "-q", "--no-state"], args.repeat
        )
        zstd_s, _ = timed(f"zstd -dcq {kit} > /dev/null", args.repeat, shell=True)
        pipeline_s, _ = timed(
            f"mkdir {work}/x && zstd -dcq {kit} | tar -x -C {work}/x && cd {work}/x && "
            "sha256sum -c --strict --quiet SHA256SUMS",
            args.repeat,
            shell=True,
            cleanup=f"rm -rf {work}/x",
        )
        shutil.rmtree(work / "x", ignore_errors=True)
        mb = input_bytes / 1e6
        results["build"] = {
            "kitSeconds": build_s,
            "tarZstdSeconds": tar_s,
            "kitMBps": mb / build_s,
            "tarZstdMBps": mb / tar_s,
            "ratio": tar_s / build_s,
            "target": ">= 0.9",
            "peakRssMiB": build_rss / 1024,
        }
        results["verify"] = {
            "kitSeconds": verify_s,
            "zstdToDevNullSeconds": zstd_s,
            "pipelineSeconds": pipeline_s,
            "ratioVsZstd": zstd_s / verify_s,
            "ratioVsPipeline": pipeline_s / verify_s,
            "kitMBps": mb / verify_s,
            "targets": ">= 0.9 vs zstd, >= 2 vs pipeline",
            "peakRssMiB": verify_rss / 1024,
        }
        # Patch: change about 1% of the bytes (a few small files and one data file), bump the sequence.
        changed = 0
        for path in sorted((src / "small").iterdir())[:: max(1, files // 60)]:
            path.write_bytes(path.read_bytes()[::-1])
            changed += path.stat().st_size
        first_data = sorted((src / "data").iterdir())[0]
        with first_data.open("a") as out:
            out.write('{"id":-1,"tenant":"t0","advisory":"CVE-2025-99999","source":"kev","score":1.0}\n')
        changed += first_data.stat().st_size
        (work / "spec.yaml").write_text(SPEC.format(sequence=2))
        delta = work / "delta.kit.tar.zst"
        delta_build_s, delta_rss = timed(
            f"SOURCE_DATE_EPOCH=1700086400 {' '.join(KIT)} build {work}/spec.yaml "
            f"--key {work}/k.key --out {delta} --level 3 -q "
            f"--delta-from {kit}",
            1,
            shell=True,
        )
        full_s, _ = timed(
            f"SOURCE_DATE_EPOCH=1700086400 {' '.join(KIT)} build {work}/spec.yaml --key {work}/k.key "
            f"--out {work}/full2.kit.tar.zst --level 3 -q",
            1,
            shell=True,
        )
        patch_s, patch_rss = timed(
            [
                *KIT,
                "patch",
                str(kit),
                str(delta),
                "--key",
                f"{work}/k.pub",
                "--out",
                f"{work}/patched.kit.tar.zst",
                "--no-state",
            ],
            args.repeat,
            cleanup=f"rm -f {work}/patched.kit.tar.zst",
        )
        cp_s, _ = timed(
            ["cp", str(kit), f"{work}/copy.kit.tar.zst"], args.repeat, cleanup=f"rm -f {work}/copy.kit.tar.zst"
        )
        # kit patch fsyncs the new kit before renaming it into place; cp does not, so also time cp + sync.
        cp_sync_s, _ = timed(
            f"cp {kit} {work}/copy.kit.tar.zst && sync {work}/copy.kit.tar.zst",
            args.repeat,
            shell=True,
            cleanup=f"rm -f {work}/copy.kit.tar.zst",
        )
        identical = (work / "patched.kit.tar.zst").read_bytes() == (work / "full2.kit.tar.zst").read_bytes()
        results["patch"] = {
            "kitBytes": kit.stat().st_size,
            "deltaBytes": delta.stat().st_size,
            "changedInputBytes": changed,
            "changedFraction": changed / input_bytes,
            "patchSeconds": patch_s,
            "cpSeconds": cp_s,
            "cpSyncSeconds": cp_sync_s,
            "patchOverCpSync": patch_s / cp_sync_s,
            "fullRebuildSeconds": full_s,
            "deltaBuildSeconds": delta_build_s,
            "patchOverCp": patch_s / cp_s,
            "rebuildOverPatch": full_s / patch_s,
            "targets": "<= 1.5x cp, >= 10x faster than rebuild",
            "patchedEqualsFullBuild": identical,
            "peakRssMiB": patch_rss / 1024,
            "deltaBuildPeakRssMiB": delta_rss / 1024,
        }
        results["inputs"] = {"bytes": input_bytes, "files": files, "kitBytes": kit.stat().st_size}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    build, verify, patch = results["build"], results["verify"], results["patch"]
    assert isinstance(build, dict) and isinstance(verify, dict) and isinstance(patch, dict)
    print(json.dumps(results, indent=2))
    print(
        f"\nbuild   kit {build['kitMBps']:.0f} MB/s vs tar|zstd {build['tarZstdMBps']:.0f} MB/s: "
        f"{build['ratio']:.2f}x (target >= 0.9), peak RSS {build['peakRssMiB']:.0f} MiB"
    )
    print(
        f"verify  {verify['kitMBps']:.0f} MB/s: {verify['ratioVsZstd']:.2f}x zstd -dc (>= 0.9), "
        f"{verify['ratioVsPipeline']:.2f}x the extract+sha256sum pipeline (>= 2), "
        f"peak RSS {verify['peakRssMiB']:.0f} MiB"
    )
    print(
        f"patch   {patch['patchSeconds']:.2f} s = {patch['patchOverCp']:.2f}x cp (<= 1.5), "
        f"{patch['patchOverCpSync']:.2f}x cp+sync, rebuild "
        f"{patch['rebuildOverPatch']:.1f}x slower (>= 10); delta {patch['deltaBytes'] / 1e6:.1f} MB of "
        f"{patch['kitBytes'] / 1e6:.0f} MB; identical to full build: {patch['patchedEqualsFullBuild']}"
    )


if __name__ == "__main__":
    main()
