"""Generated inputs for bench/run.py, shaped like the kits in the field, the same bytes on every run.

Three shapes:
- many small files: about 24 files per MiB (512 MiB -> about 12,500 files). 20% of the bytes are
  SQL migrations of 1-20 KiB, 45% NDJSON seed shards, 35% incompressible blobs; the shards and blobs
  vary from 0.3x to 1.7x their mean size (about 170 KiB).
- few big files: 64 MiB incompressible layers (half the bytes) and 32 MiB NDJSON shards (the other half).
- scale: N tiny files (16-200 bytes), 1,000 per directory, as in a docs tree or a wheelhouse index.

Everything comes from a seeded random.Random, so two runs (and the base of a patch and its full
rebuild) see identical inputs. Every generator returns the list of files it wrote, relative to its
root, so a patch can pick which ones to change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20

# The migrations component must carry the script it runs; kit build refuses one without.
UP_SQL = "CREATE TABLE IF NOT EXISTS bench_marker (id INTEGER);\n"
FILES_PER_MIB = 12_500 / 512
SOURCES = ("nvd", "ghsa", "osv", "kev", "redhat", "debian")


@dataclass(frozen=True)
class Generated:
    root: Path
    files: tuple[str, ...]  # relative to root, sorted; the ones a patch may change (up.sql excluded)
    total_bytes: int


def _ndjson(rng: random.Random, size: int, first_id: int) -> bytes:
    """Seed rows like an advisory observation export: ids, tenants, CVE ids, scores, timestamps."""
    parts: list[str] = []
    written = 0
    row = first_id
    while written < size:
        line = (
            f'{{"id":{row},"rev":0,"tenant":"t{rng.randrange(10)}","advisory":"CVE-20{rng.randrange(15, 26)}-'
            f'{rng.randrange(100000):05d}","source":"{rng.choice(SOURCES)}","score":{rng.random():.4f},'
            f'"seen":"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:'
            f'{rng.randrange(60):02d}:00Z","purl":"pkg:npm/p{rng.randrange(50000)}@{rng.randrange(1, 9)}.'
            f'{rng.randrange(30)}.{rng.randrange(30)}"}}\n'
        )
        parts.append(line)
        written += len(line)
        row += 1
    return "".join(parts).encode()


def _sql(rng: random.Random, size: int, number: int) -> bytes:
    lines: list[str] = [f"-- migration {number:06d}\n"]
    written = len(lines[0])
    column = 0
    while written < size:
        line = (
            f"ALTER TABLE t{number % 400} ADD COLUMN IF NOT EXISTS c{column} "
            f"{rng.choice(('integer', 'text', 'bigint', 'boolean'))} DEFAULT {rng.randrange(1000)};\n"
        )
        lines.append(line)
        written += len(line)
        column += 1
    return "".join(lines).encode()[:size]


def _write(root: Path, relative: str, data: bytes, files: list[str]) -> int:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files.append(relative)
    return len(data)


def many_small(root: Path, total: int, seed: int = 12) -> Generated:
    """About `total` bytes: sql/ (20%, 1-20 KiB each), ndjson/ (45%), bin/ (35% incompressible)."""
    rng = random.Random(seed)
    files: list[str] = []
    written = 0
    sql_bytes = int(total * 0.20)
    number = 0
    done = 0
    while done < sql_bytes:
        size = rng.randint(1 * KiB, 20 * KiB)
        done += _write(root, f"sql/{number // 1000:03d}/V{number:06d}__step.sql", _sql(rng, size, number), files)
        number += 1
    written += done
    (root / "sql" / "up.sql").write_text(UP_SQL)
    # The rest: as many files as the field's 24 per MiB leaves after the SQL ones.
    rest_files = max(2, round(total / MiB * FILES_PER_MIB) - number)
    bin_files = max(1, round(rest_files * 35 / 80))
    text_files = max(1, rest_files - bin_files)
    for kind, count, share in (("bin", bin_files, 0.35), ("ndjson", text_files, 0.45)):
        mean = total * share / count
        for index in range(count):
            size = max(1, int(mean * rng.uniform(0.3, 1.7)))
            if kind == "bin":
                data = rng.randbytes(size)
                relative = f"bin/{index // 1000:03d}/blob-{index:05d}.bin"
            else:
                data = _ndjson(rng, size, index * 1_000_000)
                relative = f"ndjson/{index // 1000:03d}/shard-{index:05d}.ndjson"
            written += _write(root, relative, data, files)
    return Generated(root, tuple(sorted(files)), written + len(UP_SQL))


def few_big(root: Path, total: int, seed: int = 13) -> Generated:
    """Half the bytes in 64 MiB incompressible layers, half in 32 MiB NDJSON shards (at least one each)."""
    rng = random.Random(seed)
    files: list[str] = []
    written = 0
    layers = max(1, round(total / 2 / (64 * MiB)))
    shards = max(1, round(total / 2 / (32 * MiB)))
    layer_size = min(64 * MiB, max(MiB, total // 2 // layers))
    shard_size = min(32 * MiB, max(MiB, total // 2 // shards))
    for index in range(layers):
        written += _write(root, f"bin/layer-{index:03d}.bin", rng.randbytes(layer_size), files)
    for index in range(shards):
        written += _write(root, f"ndjson/shard-{index:03d}.ndjson", _ndjson(rng, shard_size, index * 10_000_000), files)
    (root / "sql" / "up.sql").parent.mkdir(parents=True, exist_ok=True)
    (root / "sql" / "up.sql").write_text(UP_SQL)
    return Generated(root, tuple(sorted(files)), written + len(UP_SQL))


def tiny_files(root: Path, count: int, seed: int = 14) -> Generated:
    """`count` files of 16-200 bytes, 1,000 per directory."""
    rng = random.Random(seed)
    files: list[str] = []
    written = 0
    for number in range(count):
        directory = root / f"d{number // 1000:04d}"
        if number % 1000 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        body = f"file {number}\n".encode() + rng.randbytes(rng.randint(0, 184)).hex().encode()[: rng.randint(4, 184)]
        name = f"d{number // 1000:04d}/f{number:07d}.txt"
        (root / name).write_bytes(body)
        files.append(name)
        written += len(body)
    return Generated(root, tuple(files), written)


def change(generated: Generated, fraction: float, seed: int = 15) -> tuple[int, int]:
    """Change `fraction` of the files (at least one) in place, as a release would; (files, their bytes).

    NDJSON rows get a new revision in a run of lines in the middle (same length, still valid JSON),
    blobs get 4 KiB of new bytes in the middle, everything else one appended line.
    """
    rng = random.Random(seed)
    count = max(1, round(len(generated.files) * fraction))
    chosen = sorted(rng.sample(generated.files, count))
    changed_bytes = 0
    for relative in chosen:
        path = generated.root / relative
        data = bytearray(path.read_bytes())
        if relative.endswith(".ndjson"):
            start = data.find(b'"rev":0', len(data) // 2)
            if start < 0:
                start = data.find(b'"rev":0')
            for _ in range(16):
                if start < 0:
                    break
                data[start : start + 7] = b'"rev":1'
                start = data.find(b'"rev":0', start)
        elif relative.endswith(".bin"):
            piece = rng.randbytes(min(4 * KiB, len(data)))
            middle = (len(data) - len(piece)) // 2
            data[middle : middle + len(piece)] = piece
        else:
            data += b"-- changed\n"
        path.write_bytes(bytes(data))
        changed_bytes += len(data)
    return count, changed_bytes
