"""Describe a replay buffer: keys, shapes, dtypes, chunks, compressors, stored sizes, checksums and episode lengths.

    python -m datasets.inspect PATH [--verify]

The `checksum` column says what catches changed bytes in each array's chunks when they are read:
    crc32c       a CRC-32C of every chunk, in the array's codecs (zarr v3 buffers written here)
    zip          the zip member's CRC-32, checked when the member is read (any buffer stored as a .zip)
    none         nothing: a chunk that no longer decodes (a broken Blosc frame, a truncated file: Blosc chunks'
                 lengths are checked against their header) is named, but changed bytes that still decode (e.g. an
                 uncompressed chunk, or a flipped bit in compressed data that decompresses) are NOT detected
                 (zarr v2 directories, ours with zarr_format=2 or anyone's)

--verify reads every chunk of every key and reports, per key: chunks read, chunks missing (they would read as the
fill value), chunks that fail to decode or whose checksum does not match (named: array, chunk, steps, store key),
and for float arrays the steps holding NaN or inf (count, first episode and step); it also checks that every data
array holds every step of `meta/episode_ends` (which is already checked to be positive and strictly increasing
when the buffer opens). Exit status: 0 when nothing is wrong; 2 with one `error:` line (after the report) when
something is, or when the path is not a readable replay buffer.
"""

from __future__ import annotations

import math
import sys
import zipfile
from pathlib import Path

import numpy as np

from common import ArgumentParser, DataError, run_cli

from .replay_buffer import ReplayBuffer, ReplayBufferError

_BLOCK_BYTES = 64 << 20  # --verify decodes this much at a time


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
        elif not _is_checksum(c):
            names.append(str(c))
    return ", ".join(names) or "none"


def _is_checksum(codec) -> bool:
    """zarr v3's crc32c codec, or a numcodecs checksum (CRC32, CRC32C, Adler32, Fletcher32, JenkinsLookup3)."""
    return type(codec).__name__ == "Crc32cCodec" or type(codec).__module__.startswith(
        ("numcodecs.checksum32", "numcodecs.fletcher32"))


def checksums(rb: ReplayBuffer, key: str) -> str:
    """What catches changed bytes in data/<key>'s chunks on read: "crc32c", "zip", both, or "none" (module
    docstring); "-" in memory."""
    arr = rb.array(key)
    if isinstance(arr, np.ndarray):
        return "-"
    kinds = [type(c).__name__.replace("Crc32cCodec", "crc32c").lower()
             for c in (*getattr(arr, "filters", ()), *arr.compressors) if _is_checksum(c)]
    if rb.path is not None and rb.path.is_file():
        kinds.append("zip")
    return "+".join(kinds) or "none"


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
    header = (f"{'key':14s} {'shape':22s} {'dtype':8s} {'chunks':20s} {'chunk MB':>8s} {'stored':>9s} {'ratio':>6s} "
              f"{'checksum':10s}")
    lines += [header + "  compressor", "-" * len(header)]
    unchecked = []
    for key in rb.keys:
        arr = rb.array(key)
        shape = rb.shape(key)
        chunks = getattr(arr, "chunks", shape)
        chunk_mb = arr.dtype.itemsize * math.prod(chunks) / 2**20
        stored = _stored_bytes(rb, key)
        raw = arr.dtype.itemsize * math.prod(shape)
        ratio = f"{raw / stored:.1f}x" if stored else "-"
        check = checksums(rb, key)
        if check == "none":
            unchecked.append(key)
        lines.append(f"{key:14s} {str(shape):22s} {str(arr.dtype):8s} {str(chunks):20s} {chunk_mb:8.2f} "
                     f"{_fmt_bytes(stored):>9s} {ratio:>6s} {check:10s}  {_compressor(arr)}")
    if not rb.in_memory:
        lines.append("")
        if unchecked:
            lines.append(f"integrity: no checksum on {unchecked}: a chunk that fails to decode is named, changed bytes "
                         "that still decode are not detected (--verify reads every chunk)")
        else:
            lines.append("integrity: every chunk is checksummed; changed or truncated chunks fail on read, named")
    return "\n".join(lines)


def _where(rb: ReplayBuffer, row: int) -> str:
    episode = int(np.searchsorted(rb.episode_ends, row, side="right"))
    start = int(rb.episode_ends[episode - 1]) if episode else 0
    return f"episode {episode} step {row - start} (row {row})"


def verify(rb: ReplayBuffer, report: list[str] | None = None) -> list[str]:
    """Read every chunk of every key (module docstring); returns the problems found (empty when all is well) and
    appends one line per key to `report` when given."""
    problems = []
    n = rb.n_steps
    for key in rb.keys:
        arr = rb.array(key)
        notes = []
        if not isinstance(arr, np.ndarray):
            grid = [math.ceil(s / c) for s, c in zip(arr.shape, arr.chunks)]
            expected = math.prod(grid)
            if arr.nchunks_initialized < expected:
                problems.append(f"'data/{key}': {expected - arr.nchunks_initialized} of {expected} chunks missing "
                                "(they read as the fill value)")
            rows = arr.chunks[0]
            step_bytes = arr.dtype.itemsize * math.prod(arr.shape[1:])
            block = max(1, _BLOCK_BYTES // max(1, step_bytes * rows)) * rows
            n_chunks = math.ceil(n / rows) * math.prod(grid[1:])
            notes.append(f"{n_chunks} chunk{'s' if n_chunks != 1 else ''} read")
        else:
            block = max(1, n)
        bad_rows, first_bad, undecodable = 0, None, 0
        floating = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)
        for s in range(0, n, block):
            try:
                x = rb.read(key, s, min(s + block, n))
            except ReplayBufferError as e:
                problems.append(str(e))
                undecodable += 1
                continue
            if floating:
                bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
                if bad.any():
                    bad_rows += int(bad.sum())
                    first_bad = s + int(np.argmax(bad)) if first_bad is None else first_bad
        if undecodable:
            notes.append("UNREADABLE chunks (below)")
        if first_bad is not None:
            problems.append(f"'data/{key}' holds NaN or inf in {bad_rows} step(s), first at {_where(rb, first_bad)}")
            notes.append(f"NaN/inf in {bad_rows} step(s), first at {_where(rb, first_bad)}")
        elif floating:
            notes.append("finite" if not undecodable else "finite where readable")
        else:
            notes.append(f"{arr.dtype} (always finite)")
        if arr.shape[0] > n:
            notes.append(f"{arr.shape[0] - n} steps past episode_ends[-1] ignored (an interrupted append)")
        if report is not None:
            report.append(f"  {key:14s} " + "; ".join(notes or ["ok"]))
    return problems


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a replay buffer: zarr directory or .zip")
    parser.add_argument("--verify", action="store_true", help="read every chunk (slow for images)")
    args = parser.parse_args(argv)
    with ReplayBuffer.open(Path(args.path)) as rb:
        print(describe(rb))
        if not args.verify:
            return 0
        report = []
        problems = verify(rb, report)
        print(f"\nverify: {rb.n_episodes} episodes, episode_ends positive and strictly increasing, every data array "
              f"holds its {rb.n_steps} steps")
        print("\n".join(report))
        if not problems:
            print("verify: every chunk decodes, checksums match where stored, no NaN or inf")
            return 0
        print(f"verify: {len(problems)} problem(s)")
        for p in problems:
            print("  " + p)
        sys.stdout.flush()
        first = problems[0].removeprefix(f"{rb.source}: ")
        raise DataError(f"{args.path}: verify found {len(problems)} problem(s); the first: {first}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
