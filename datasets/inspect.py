"""Describe a replay buffer: keys, shapes, dtypes, chunks, compressors, stored sizes and episode lengths.

    python -m datasets.inspect PATH [--verify]

--verify decodes every chunk of every key (and reports chunks that are missing or do not decode).
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

import numpy as np

from .replay_buffer import ReplayBuffer, ReplayBufferError


def _stored_bytes(rb: ReplayBuffer, key: str) -> int | None:
    """Bytes the key's chunks take in the file (compressed), or None when not on disk."""
    if rb.path is None:
        return None
    member = f"{rb.prefix + '/' if rb.prefix else ''}data/{key}/"
    if rb.path.is_file():
        with zipfile.ZipFile(rb.path) as zf:
            return sum(i.compress_size for i in zf.infolist() if i.filename.startswith(member))
    return sum(p.stat().st_size for p in (rb.path / member).rglob("*") if p.is_file())


def _compressor(arr) -> str:
    if isinstance(arr, np.ndarray):
        return "-"
    names = []
    for c in arr.compressors:
        if hasattr(c, "cname"):  # numcodecs.Blosc (zarr v2) or zarr.codecs.BloscCodec (v3): one spelling
            cname, shuffle = getattr(c.cname, "value", c.cname), getattr(c.shuffle, "value", c.shuffle)
            shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(shuffle, shuffle)
            names.append(f"blosc {cname} {c.clevel} {shuffle}")
        else:
            names.append(str(c))
    return ", ".join(names) or "none"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def describe(rb: ReplayBuffer) -> str:
    """A multi-line, human-readable description of `rb`."""
    lengths = rb.episode_lengths
    where = "in memory" if rb.in_memory else f"zarr v{rb.zarr_format}, {'zip' if rb.path.is_file() else 'directory'}"
    lines = [f"{rb.source}  ({where}{', group ' + repr(rb.prefix) if rb.prefix else ''})",
             f"episodes: {rb.n_episodes}   steps: {rb.n_steps}"]
    if rb.n_episodes:
        lines.append(f"episode length: min {lengths.min()}  median {np.median(lengths):g}  "
                     f"mean {lengths.mean():.1f}  max {lengths.max()}")
    lines.append("")
    header = f"{'key':14s} {'shape':22s} {'dtype':8s} {'chunks':20s} {'chunk MB':>8s} {'stored':>9s} {'ratio':>6s}"
    lines += [header + "  compressor", "-" * len(header)]
    for key in rb.keys:
        arr = rb.array(key)
        shape = rb.shape(key)
        chunks = getattr(arr, "chunks", shape)
        chunk_mb = arr.dtype.itemsize * math.prod(chunks) / 2**20
        stored = _stored_bytes(rb, key)
        raw = arr.dtype.itemsize * math.prod(shape)
        ratio = f"{raw / stored:.1f}x" if stored else "-"
        lines.append(f"{key:14s} {str(shape):22s} {str(arr.dtype):8s} {str(chunks):20s} {chunk_mb:8.2f} "
                     f"{_fmt_bytes(stored):>9s} {ratio:>6s}  {_compressor(arr)}")
    return "\n".join(lines)


def verify(rb: ReplayBuffer) -> list[str]:
    """Decode every chunk of every key; returns the problems found (empty when all is well)."""
    problems = []
    for key in rb.keys:
        arr = rb.array(key)
        if isinstance(arr, np.ndarray):
            continue
        expected = math.prod(math.ceil(s / c) for s, c in zip(arr.shape, arr.chunks))
        if arr.nchunks_initialized < expected:
            problems.append(f"'data/{key}': {expected - arr.nchunks_initialized} of {expected} chunks missing "
                            "(they read as the fill value)")
        rows = arr.chunks[0]
        for s in range(0, rb.n_steps, rows * 16):
            try:
                rb.read(key, s, min(s + rows * 16, rb.n_steps))
            except ReplayBufferError as e:
                problems.append(str(e))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a replay buffer: zarr directory or .zip")
    parser.add_argument("--verify", action="store_true", help="decode every chunk (slow for images)")
    args = parser.parse_args(argv)
    try:
        rb = ReplayBuffer.open(Path(args.path))
    except (ReplayBufferError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(describe(rb))
    if args.verify:
        problems = verify(rb)
        print("\nverify: " + ("every chunk decodes" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print("  " + p)
        rb.close()
        return 1 if problems else 0
    rb.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
