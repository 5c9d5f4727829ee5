"""A metadata member's frames (docs/format.md §0.2): one frame under LARGE, else a header frame and CHUNK frames."""

from __future__ import annotations

import io

import pytest

from kitbuilder.archive import layout, tarfmt
from kitbuilder.archive.writer2 import KitWriter2, metadata_frames


def test_small_member_is_one_frame_and_large_one_is_a_header_then_chunks() -> None:
    assert [len(f) for f in metadata_frames("SHA256SUMS", 3, [b"abc"])] == [1024]
    data = bytes(range(256)) * (layout.LARGE // 256 + 3)
    frames = list(metadata_frames("manifest.files.jsonl", len(data), [data[:1000], data[1000:]], chunk=4096))
    assert frames[0] == tarfmt.build_header("manifest.files.jsonl", len(data), 0)
    assert all(len(f) == 4096 for f in frames[1:-1]) and len(frames[-1]) <= 4096
    assert b"".join(frames[1:]) == data + bytes(layout.padded(len(data)) - len(data))
    with pytest.raises(ValueError, match="bytes given"):
        list(metadata_frames("x", len(data), [data[:-1]]))


def test_the_writer_lays_out_a_large_metadata_member_and_its_index_tiles() -> None:
    writer = KitWriter2(io.BytesIO(), level=1, metadata_chunk=1024)
    writer.add_file("docs/a.md", io.BytesIO(b"x"), 1)
    writer.finish_payload()
    entry = writer.add_metadata_stream("manifest.files.jsonl", 5000, [b"y" * 2500, b"y" * 2500])
    writer.add_metadata("manifest.json", b"{}")
    index = writer.finish()
    sizes = [f.size for f in index.frames]
    assert sizes[entry.frame : entry.frame + 6] == [512, 1024, 1024, 1024, 1024, 1024]
    assert [m.path for m in index.members] == ["docs/a.md", "manifest.files.jsonl", "manifest.json"]
