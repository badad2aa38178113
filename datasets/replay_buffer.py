"""The zarr replay buffer: the field's demonstration format (Diffusion Policy's `ReplayBuffer`).

A replay buffer is a zarr group with
    data/<key>          one array per key, all episodes concatenated along axis 0 (time)
    meta/episode_ends   int64, cumulative exclusive ends: episode i is [ends[i-1], ends[i])
stored as a directory or a zip file. Files written by Diffusion Policy (zarr format v2, e.g. `pusht.zip`,
whose group sits under `pusht/pusht_cchi_v7_replay.zarr/` inside the zip; float32 or uint8 images) open
as they are. New buffers are written as zarr v3 directories by default (`ReplayBuffer.create`), or as a
zip (packed from a `<name>.zip.partial/` directory when the buffer is closed).

Appending writes the data arrays first and `meta/episode_ends` last, so a writer killed mid-episode
leaves a buffer whose data arrays are longer than `episode_ends[-1]`; opening tolerates that (the extra
steps are ignored, with a warning) and the next `add_episode` overwrites them. Data arrays *shorter*
than `episode_ends[-1]` are an error. A writer that may be interrupted (the demonstration generators, the
converter) uses `create_or_continue`: its buffer carries `attrs["in_progress"]` (what it makes, who writes it)
until `finish_writing()`, so that the same command afterwards continues it (or restarts it) instead of refusing,
a second writer is refused while the first runs, and training from an unfinished buffer says so.

Chunking and compression, measured with `python bench/bench_loader.py --storage --episodes 40` (the first
40 Push-T episodes, 5,077 steps; images written as uint8 unless noted; write = create + add_episode per
episode; "decode all" = to_memory of the key, "1 episode" = get_episode, best of 3; 2 shared CPU cores,
so times vary ~2x between runs, sizes do not):

| layout                           | codec             | stored | ratio | write s | decode all | 1 episode |
|----------------------------------|-------------------|--------|-------|---------|------------|-----------|
| published layout: f32, 161 steps | zstd 5 bitshuffle | 5.71MB | 93.8x |    6.34 |     1.62 s |   34.2 ms |
| u8, 161 steps (4.3 MB)           | zstd 5 bitshuffle | 3.24MB | 41.3x |    3.93 |     0.28 s |    6.8 ms |
| u8, 1 MB                         | zstd 5 bitshuffle | 3.25MB | 41.2x |    1.58 |     0.18 s |    5.1 ms |
| u8, 1 MB                         | zstd 3 bitshuffle | 4.22MB | 31.7x |    1.23 |     0.19 s |    5.5 ms |
| u8, 1 MB                         | lz4 5 bitshuffle  | 9.53MB | 14.0x |    0.81 |     0.16 s |    4.4 ms |
| u8, 1 MB                         | zstd 1 noshuffle  | 3.49MB | 38.4x |    1.05 |     0.20 s |    5.6 ms |
| u8, 1 MB                         | zstd 3 noshuffle  | 1.51MB | 88.9x |    1.15 |     0.15 s |    4.8 ms |
| u8, 1 MB  (chosen)               | zstd 5 noshuffle  | 1.16MB |115.8x |    1.30 |     0.21 s |    3.5 ms |
| u8, 1 MB                         | lz4 5 noshuffle   | 3.63MB | 36.9x |    0.93 |     0.11 s |    3.0 ms |
| u8, 256 KB                       | zstd 3 noshuffle  | 1.51MB | 88.5x |    1.14 |     0.35 s |    5.6 ms |
| u8, 2 MB                         | zstd 3 noshuffle  | 1.50MB | 89.5x |    1.08 |     0.47 s |    4.9 ms |
| u8, 4 MB                         | zstd 3 noshuffle  | 1.49MB | 89.6x |    1.63 |     0.06 s |    3.4 ms |
| low-dim (4 keys), 161 steps      | zstd 5 bitshuffle | 0.25MB |  2.0x |    1.31 |     0.03 s |    2.6 ms |
| low-dim, 1 MB                    | zstd 3 bitshuffle | 0.24MB |  2.1x |    1.12 |     0.01 s |    5.3 ms |
| low-dim, 1 MB                    | zstd 3 shuffle    | 0.22MB |  2.3x |    1.04 |     0.00 s |    4.2 ms |
| low-dim, 1 MB  (chosen)          | zstd 5 shuffle    | 0.22MB |  2.3x |    1.17 |     0.00 s |    3.8 ms |
| low-dim, 1 MB                    | lz4 5 shuffle     | 0.27MB |  1.9x |    0.94 |     0.00 s |    4.2 ms |

Chosen defaults: Blosc zstd level 5, no shuffle for 1-byte types (bit-shuffling uint8 pixels splits each
byte's bit planes and compresses ~2.8x worse) and byte shuffle for wider types, chunks of about 1 MiB along
time (`DEFAULT_CHUNK_BYTES`: 37 image steps; a whole small low-dim array); chunk size barely changes the
ratio, and 1 MiB keeps one-episode reads and append rewrites small. The whole Push-T set written this way
(206 episodes, `ReplayBuffer.create("pusht.zip")`): 7.1 MB instead of the published 31 MB, written in
13 s, loaded into memory in 2.4 s instead of 11 s, identical values.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numcodecs
import numpy as np
import zarr
import zarr.codecs
import zarr.storage
from zarr.storage import WrapperStore

from common import DataError, is_image_shape, locks
from common.errors import signals_deferred
from common.paths import broken_link

DEFAULT_CHUNK_BYTES = 1 << 20  # ~1 MiB of uncompressed data per chunk, along time
DEFAULT_CNAME = "zstd"
DEFAULT_CLEVEL = 5
DEFAULT_SHUFFLE = "auto"  # no shuffle for 1-byte types (uint8 images), byte shuffle for wider ones

_ENDS_MARKERS = ("meta/episode_ends/.zarray", "meta/episode_ends/zarr.json")
_SHUFFLE_V2 = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
               "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
_READ_BLOCK_BYTES = 64 << 20  # to_memory decodes this much at a time, so float images never sit whole in RAM


IN_PROGRESS = "in_progress"  # attrs key of a buffer whose writer has not finished it (create_or_continue)


class ReplayBufferError(DataError):
    """A replay buffer that is not what the format requires; the message names the file and key."""


class MissingKeyError(ReplayBufferError, KeyError):
    """A data key that the buffer does not have (also a KeyError, so `except KeyError` keeps working)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class BufferExistsError(ReplayBufferError, FileExistsError):
    """`create` on a path that exists, without overwrite (also a FileExistsError)."""


def _find_group_prefix(names: Iterable[str], source: str) -> str:
    """The prefix of the replay-buffer group among a store's member names ('' for the root).

    Diffusion Policy's zips nest the group (`pusht/pusht_cchi_v7_replay.zarr/`) without group metadata
    on the levels above it, so we look for `meta/episode_ends` rather than walk groups from the root.
    """
    prefixes = sorted(
        {n[: -len(m)] for n in names for m in _ENDS_MARKERS if n == m or n.endswith("/" + m)},
        key=lambda p: (p.count("/"), p),
    )
    if not prefixes:
        raise ReplayBufferError(f"{source}: no 'meta/episode_ends' array found; not a zarr replay buffer")
    if len(prefixes) > 1:  # picking one would train on it without a word about the others
        listed = ", ".join(repr(p.rstrip("/") or ".") for p in prefixes[:5]) + (", ..." if len(prefixes) > 5 else "")
        raise ReplayBufferError(f"{source}: holds {len(prefixes)} replay buffers ({listed}); expected one: give the "
                                f"path of the one to use (e.g. {source}/{prefixes[0].rstrip('/')})")
    return prefixes[0].rstrip("/")


def _check_episode_ends(ends: np.ndarray, source: str, from_store: bool) -> np.ndarray:
    """Validate meta/episode_ends; returns it as int64 (trailing fill zeros of an interrupted append dropped)."""
    ends = np.asarray(ends)
    if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise ReplayBufferError(
            f"{source}: 'meta/episode_ends' must be a 1-D integer array, got shape {ends.shape} {ends.dtype}"
        )
    ends = ends.astype(np.int64)
    if from_store and len(ends) and ends[-1] == 0:
        # A writer killed between resizing episode_ends and writing its new entry leaves fill zeros at the end.
        keep = len(ends) - int(np.argmax(ends[::-1] != 0)) if np.any(ends) else 0
        warnings.warn(f"{source}: dropping {len(ends) - keep} unwritten trailing entries of 'meta/episode_ends' "
                      "(an interrupted append)", stacklevel=3)
        ends = ends[:keep]
    if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        bad = 0 if ends[0] <= 0 else int(np.argmax(np.diff(ends) <= 0)) + 1
        raise ReplayBufferError(
            f"{source}: 'meta/episode_ends' must be strictly increasing and positive (no empty or decreasing "
            f"episodes), but episode {bad} ends at {ends[bad]} after {ends[bad - 1] if bad else 0}"
        )
    return ends


def _blosc(cname: str, clevel: int, shuffle: str, itemsize: int, zarr_format: int):
    """The compressors of a new array: Blosc; in zarr v3 followed by a CRC-32C checksum of every chunk, so that a
    changed or truncated chunk file fails to decode instead of decoding into wrong values (a directory store has
    no checksum of its own; zip members do)."""
    if shuffle == "auto":
        shuffle = "noshuffle" if itemsize == 1 else "shuffle"
    if zarr_format == 2:
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=_SHUFFLE_V2[shuffle])
    return [zarr.codecs.BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, typesize=itemsize),
            zarr.codecs.Crc32cCodec()]


def _whole_0_255(block: np.ndarray) -> bool:
    """Whether a float array holds only whole numbers in 0..255 (so uint8 stores it exactly)."""
    return bool(block.size == 0 or (block.min() >= 0 and block.max() <= 255 and np.all(np.floor(block) == block)))


_METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup"}


class _BloscCheckedStore(WrapperStore):
    """A store that checks a Blosc chunk's length against its header before zarr decodes it.

    c-blosc 1 decompresses without being told the buffer's length, so a truncated chunk file would decode
    silently into garbage (reading past its end) instead of failing. `blosc_dirs` holds the store paths
    ("<prefix>/data/<key>/") of arrays whose stored chunks are Blosc frames.
    """

    def __init__(self, store, blosc_dirs: set[str] | None = None):
        super().__init__(store)
        self.blosc_dirs = set() if blosc_dirs is None else blosc_dirs

    def _with_store(self, store):
        return type(self)(store, self.blosc_dirs)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None and byte_range is None and key.rsplit("/", 1)[-1] not in _METADATA_FILES and any(
            key.startswith(d) for d in self.blosc_dirs
        ):
            raw = buf.as_numpy_array().view(np.uint8)
            expected = int(raw[12:16].view("<u4")[0]) if len(raw) >= 16 else None
            if expected != len(raw):
                raise ValueError(f"chunk '{key}' holds {len(raw)} bytes but its Blosc header says {expected}")
        return buf

    async def _get_many(self, requests):
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def _is_blosc_only(arr) -> bool:
    """Whether the array's stored chunks are Blosc frames (its only bytes-to-bytes codec is Blosc)."""
    codecs = arr.compressors
    return len(codecs) == 1 and isinstance(codecs[0], (numcodecs.Blosc, zarr.codecs.BloscCodec))


def _open_structure(store, path: Path, prefix: str, mode: str):
    """(group, {key: zarr.Array}, episode_ends) of the buffer at `prefix`; metadata that zarr cannot read
    (corrupt JSON, an undecodable episode_ends chunk) raises ReplayBufferError naming the file."""
    try:
        root = zarr.open_group(store, mode="r" if mode == "r" else "r+", path=prefix)
        if "data" not in root:
            if mode == "r":
                raise ReplayBufferError(f"{path}: missing group 'data' next to 'meta/episode_ends'")
            root.create_group("data")
        arrays = dict(root["data"].arrays())
        store.blosc_dirs.update(f"{a.store_path.path}/" for a in arrays.values() if _is_blosc_only(a))
        return root, arrays, root["meta/episode_ends"][:]
    except ReplayBufferError:
        raise
    except Exception as e:  # zarr, numcodecs, json, zipfile errors
        where = _unreadable_node(store, path, prefix) or "the replay buffer's metadata or 'meta/episode_ends'"
        raise ReplayBufferError(f"{path}: cannot read {where}: {type(e).__name__}: {e}") from e


def _unreadable_node(store, path: Path, prefix: str) -> str | None:
    """Which of meta/episode_ends and data/<key> cannot be opened (for an error message), if one is found."""
    base = f"{prefix}/" if prefix else ""
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            names = {n[len(base) + 5:].split("/")[0] for n in zf.namelist() if n.startswith(base + "data/")}
    else:
        data_dir = path / base / "data"
        names = {p.name for p in data_dir.iterdir() if p.is_dir()} if data_dir.is_dir() else set()
    for node in ["meta/episode_ends", *(f"data/{n}" for n in sorted(names) if n)]:
        try:
            zarr.open_array(store, path=base + node, mode="r")
        except Exception:
            return f"'{node}' (its metadata)"
    return None


class ReplayBuffer:
    """A zarr replay buffer, read from disk, held in memory, or being written.

    >>> rb = ReplayBuffer.open("../shared/data/pusht.zip")
    >>> rb.n_episodes, rb.keys, rb.episode_lengths[:3]
    >>> ep = rb.get_episode(0)                 # {"state": (161, 5), "action": (161, 2), "img": (161, 96, 96, 3), ...}
    >>> mem = ReplayBuffer.open("../shared/data/pusht.zip", in_memory=True)   # numpy arrays, images uint8

    >>> with ReplayBuffer.create("demos.zarr") as out:      # zarr v3 directory ("demos.zip": a zip)
    ...     out.add_episode({"state": states, "action": actions})   # arrays (T, ...)
    """

    def __init__(self, arrays: Mapping, episode_ends: np.ndarray, source: str, *, from_store: bool = False,
                 root: zarr.Group | None = None, store=None, path: Path | None = None, prefix: str = "",
                 attrs: Mapping | None = None):
        """Use `open`, `create` or `from_arrays`. `arrays`: {key: zarr.Array or np.ndarray (>= n_steps, ...)}."""
        self.source = source
        # JSON metadata of the buffer (the root group's attributes), e.g. a robomimic dataset's env_meta.
        self.attrs: dict = dict(root.attrs) if root is not None else dict(attrs or {})
        self.path = path  # the directory or zip file (None in memory); the group sits at `prefix` inside it
        self.prefix = prefix
        self.root = root
        self._store = store
        self._writable = False
        self._zip_target: Path | None = None
        self._codec = (DEFAULT_CNAME, DEFAULT_CLEVEL, DEFAULT_SHUFFLE, DEFAULT_CHUNK_BYTES)
        self.episode_ends = _check_episode_ends(episode_ends, source, from_store)
        n = self.n_steps
        self._arrays = dict(arrays)
        for key, arr in self._arrays.items():
            if arr.ndim < 1:
                raise ReplayBufferError(f"{source}: 'data/{key}' is a scalar; expected an array (n_steps, ...)")
            if arr.shape[0] < n:
                raise ReplayBufferError(
                    f"{source}: 'data/{key}' has {arr.shape[0]} steps but meta/episode_ends[-1] is {n}; "
                    "the data array must hold every step of every episode"
                )
            if arr.shape[0] > n:
                warnings.warn(f"{source}: 'data/{key}' has {arr.shape[0] - n} steps beyond meta/episode_ends[-1]"
                              f" = {n} (an interrupted append); ignoring them", stacklevel=3)
                if isinstance(arr, np.ndarray):
                    self._arrays[key] = arr[:n]

    # ---------------------------------------------------------------- opening and creating

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", in_memory: bool = False) -> ReplayBuffer:
        """Open a replay buffer: a zarr directory or a `.zip` file, zarr v2 or v3.

        mode "r" reads; "a" appends episodes (directory stores only). `in_memory=True` loads every array
        into numpy (see `to_memory`) and closes the file.
        """
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"{path}: mode must be 'r' or 'a', got {mode!r}")
        if mode == "a" and in_memory:
            raise ValueError(f"{path}: in_memory=True reads a snapshot; it cannot be combined with mode='a'")
        if not path.exists():
            raise FileNotFoundError(broken_link(path) or f"{path}: no such replay buffer (a zarr directory or .zip "
                                    "file)")
        if path.is_file():
            if mode == "a":
                raise ReplayBufferError(f"{path}: zip replay buffers cannot be appended to (zip members cannot be "
                                        "rewritten); write a directory store, or create a new .zip")
            if not zipfile.is_zipfile(path):
                with open(path, "rb") as f:
                    if f.read(8) == b"\x89HDF\r\n\x1a\n":
                        raise ReplayBufferError(f"{path}: an HDF5 file, not a replay buffer; convert a robomimic hdf5 "
                                                f"first: python -m demos.robomimic_hdf5 convert {path} OUT.zarr")
                raise ReplayBufferError(f"{path}: not a zip file (truncated or corrupt?) nor a zarr directory")
            with zipfile.ZipFile(path) as zf:
                prefix = _find_group_prefix(zf.namelist(), str(path))
            store = _BloscCheckedStore(zarr.storage.ZipStore(path, mode="r"))
        else:
            if any((path / m).is_file() for m in _ENDS_MARKERS):
                prefix = ""
            else:
                names = [p.relative_to(path).as_posix() for pat in ("zarr.json", ".zarray") for p in path.rglob(pat)]
                prefix = _find_group_prefix(names, str(path))
            store = _BloscCheckedStore(zarr.storage.LocalStore(path, read_only=mode == "r"))
        try:
            root, arrays, ends = _open_structure(store, path, prefix, mode)
            rb = cls(arrays, ends, str(path), from_store=True, root=root, store=store, path=path, prefix=prefix)
        except Exception:
            store.close()
            raise
        rb._writable = mode == "a"
        if in_memory:
            try:
                data = rb.to_memory()
            finally:
                rb.close()
            return cls(data, rb.episode_ends, str(path), path=path, prefix=prefix, attrs=rb.attrs)
        return rb

    @classmethod
    def create(cls, path: str | Path, *, zarr_format: int = 3, overwrite: bool = False,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES, cname: str = DEFAULT_CNAME, clevel: int = DEFAULT_CLEVEL,
               shuffle: str = DEFAULT_SHUFFLE) -> ReplayBuffer:
        """Create an empty replay buffer to `add_episode` to.

        A path ending in `.zip` is written to the directory `<path>.partial` and packed into the zip (atomically)
        by `close()`; if the writer dies first, that directory is itself a readable buffer of the complete
        episodes. Arrays are created on the first episode, chunked to about `chunk_bytes` along time and
        compressed with Blosc(cname, clevel, shuffle) (shuffle: "auto", "noshuffle", "shuffle" or "bitshuffle";
        "auto" = none for 1-byte types, byte shuffle otherwise). Defaults: see the module docstring.
        """
        path = Path(path)
        if zarr_format not in (2, 3):
            raise ValueError(f"{path}: zarr_format must be 2 or 3, got {zarr_format}")
        if shuffle not in (*_SHUFFLE_V2, "auto"):
            raise ValueError(f"{path}: shuffle must be 'auto' or one of {sorted(_SHUFFLE_V2)}, got {shuffle!r}")
        zip_target = path if path.suffix == ".zip" else None
        target = Path(str(path) + ".partial") if zip_target else path
        for p in {path, target}:
            if p.exists():
                if not overwrite:
                    raise BufferExistsError(f"{p}: already exists; expected a new path (or overwrite=True, "
                                            "--overwrite on the command line, to replace it)")
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        store = _BloscCheckedStore(zarr.storage.LocalStore(target))
        root = zarr.open_group(store, mode="w", zarr_format=zarr_format)
        root.create_group("data")
        ends = root.create_array("meta/episode_ends", shape=(0,), chunks=(4096,), dtype="int64",
                                 compressors=_blosc(cname, clevel, "auto", 8, zarr_format))
        rb = cls({}, ends[:], str(target), root=root, store=store, path=target)
        rb._writable, rb._zip_target = True, zip_target
        rb._codec = (cname, clevel, shuffle, chunk_bytes)
        return rb

    # ---------------------------------------------------------------- writers that can be interrupted

    @staticmethod
    def _write_target(path: Path) -> Path:
        return Path(str(path) + ".partial") if path.suffix == ".zip" else path

    @classmethod
    def unfinished(cls, path: str | Path) -> dict | None:
        """The `in_progress` record of a buffer whose writer has not finished it (at `path`, or in `<path>.partial`
        for a .zip), or None (no buffer there, or a finished one)."""
        target = cls._write_target(Path(path))
        if not target.is_dir():
            return None
        try:
            with warnings.catch_warnings():  # the tail an interrupted append left is expected here
                warnings.simplefilter("ignore")
                with cls.open(target) as rb:
                    return rb.attrs.get(IN_PROGRESS)
        except (ReplayBufferError, FileNotFoundError):
            return None

    @classmethod
    def create_or_continue(cls, path: str | Path, plan: dict, overwrite: bool = False, continue_: bool = True,
                           **create) -> ReplayBuffer:
        """A buffer to write `plan` into (a dict saying what the writer makes: its command and arguments).

        A new path: `create(path, **create)`, marked unfinished (attrs["in_progress"] = plan + this writer) until
        `finish_writing()`. A path holding an unfinished buffer of the same plan whose writer is gone (interrupted,
        killed): with `continue_`, that buffer opened to append (`rb.attrs["in_progress"]` tells where it stopped);
        without, it is replaced. Refused naming the reason: a finished buffer (unless overwrite), an unfinished one
        of another plan (unless overwrite), one whose writer still runs.
        """
        path = Path(path)
        record = cls.unfinished(path)
        if record is not None and not overwrite:
            writer = record.get("writer", {})
            if locks.alive(writer) is not False:
                raise BufferExistsError(f"{path}: being written by {locks.describe(writer)}; wait for it to end or "
                                        "write elsewhere")
            theirs = {k: v for k, v in record.items() if k in plan}
            if theirs != plan:
                changed = ", ".join(f"{k}: {theirs.get(k)!r} there, {v!r} now" for k, v in plan.items()
                                    if theirs.get(k) != v)
                raise BufferExistsError(f"{path}: an unfinished buffer of another run ({changed}); run that command "
                                        "again to finish it, or --overwrite to start this one in its place")
            if continue_:
                with warnings.catch_warnings():  # the tail of an interrupted append: overwritten by the next episode
                    warnings.simplefilter("ignore")
                    rb = cls.open(cls._write_target(path), mode="a")
                rb._zip_target = path if path.suffix == ".zip" else None
                rb.update_attrs(**{IN_PROGRESS: {**record, "writer": locks.this_writer()}})
                return rb
            print(f"note: {path}: replacing the unfinished buffer that an interrupted run left (by "
                  f"{locks.describe(writer)})", file=sys.stderr)
            overwrite = True  # restarted cleanly
        rb = cls.create(path, overwrite=overwrite, **create)
        rb.update_attrs(**{IN_PROGRESS: {**plan, "writer": locks.this_writer()}})
        return rb

    def finish_writing(self) -> None:
        """Mark a buffer from `create_or_continue` finished (its `in_progress` record removed)."""
        if IN_PROGRESS in self.root.attrs:
            del self.root.attrs[IN_PROGRESS]
        self.attrs.pop(IN_PROGRESS, None)

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], episode_ends, source: str = "<arrays>",
                    attrs: Mapping | None = None) -> ReplayBuffer:
        """An in-memory buffer over numpy arrays {key: (n_steps, ...)} and cumulative `episode_ends`."""
        return cls({k: np.asarray(v) for k, v in data.items()}, np.asarray(episode_ends), source, attrs=attrs)

    # ---------------------------------------------------------------- structure

    @property
    def keys(self) -> list[str]:
        return sorted(self._arrays)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        """(n_episodes,) int64."""
        return np.diff(self.episode_ends, prepend=0)

    @property
    def in_memory(self) -> bool:
        return all(isinstance(a, np.ndarray) for a in self._arrays.values()) and self.root is None

    @property
    def zarr_format(self) -> int | None:
        """2 or 3 for a zarr-backed buffer, None in memory."""
        return None if self.root is None else self.root.metadata.zarr_format

    def array(self, key: str):
        """The underlying zarr.Array or np.ndarray of data/<key> (it may be longer than n_steps: slice it)."""
        self._require_keys([key])
        return self._arrays[key]

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of data/<key> as the buffer holds it: (n_steps, ...)."""
        return (self.n_steps, *self.array(key).shape[1:])

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"{self.source}: episode {i} out of range (0..{self.n_episodes - 1})")
        i = i % self.n_episodes
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else f"zarr v{self.zarr_format}"
        return f"ReplayBuffer({self.source!r}, {where}, {self.n_episodes} episodes, {self.n_steps} steps, {self.keys})"

    # ---------------------------------------------------------------- reading

    def _require_keys(self, keys: Iterable[str]) -> None:
        missing = [k for k in keys if k not in self._arrays]
        if missing:
            raise MissingKeyError(f"{self.source}: missing data keys {missing}; available: {self.keys}")

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Steps [start, stop) of data/<key> as numpy (dtype as stored). A chunk that does not decode raises
        ReplayBufferError naming the file, key and chunk."""
        self._require_keys([key])
        stop = self.n_steps if stop is None else stop
        arr = self._arrays[key]
        if isinstance(arr, np.ndarray):
            return arr[start:stop]
        try:
            return arr[start:stop]
        except Exception as e:  # numcodecs RuntimeError, zipfile BadZipFile (CRC), OSError, ...
            raise ReplayBufferError(f"{self.source}: cannot decode 'data/{key}' {self._bad_chunks(key, start, stop)}"
                                    f": {type(e).__name__}: {e}; the file is corrupt or truncated") from e

    def _bad_chunks(self, key: str, start: int, stop: int) -> str:
        """Find which chunks of data/<key> in [start, stop) fail to decode, for the error message."""
        arr = self._arrays[key]
        rows = arr.chunks[0]
        bad = []
        for c in range(start // rows, math.ceil(stop / rows)):
            try:
                arr[c * rows: min((c + 1) * rows, arr.shape[0])]
            except Exception:
                member = f"{arr.store_path.path}/" + arr.metadata.encode_chunk_key((c,) + (0,) * (arr.ndim - 1))
                bad.append(f"chunk {c} (steps {c * rows}..{min((c + 1) * rows, arr.shape[0]) - 1}, "
                           f"store key '{member}')")
        return ", ".join(bad) if bad else f"steps {start}..{stop - 1}"

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Episode i as {key: array (T, ...)}, dtypes as stored (views of the arrays of an in-memory buffer)."""
        sl = self.episode_slice(i)
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        return {k: self.read(k, sl.start, sl.stop) for k in keys}

    def to_memory(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All steps of `keys` (default all) as numpy arrays {key: (n_steps, ...)}.

        Float images ((N, H, W, C) arrays) that hold whole numbers 0..255, as Diffusion Policy stores them,
        come back as uint8: a quarter of the memory, exactly the same values. Other arrays of an in-memory
        buffer are returned as they are (no copy).
        """
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        return {k: self._load(k) for k in keys}

    def _load(self, key: str) -> np.ndarray:
        arr, n = self._arrays[key], self.n_steps
        float_images = is_image_shape(arr.shape[1:]) and np.issubdtype(arr.dtype, np.floating)
        if isinstance(arr, np.ndarray):
            return arr.astype(np.uint8) if float_images and _whole_0_255(arr) else arr
        if not float_images:
            return self.read(key, 0, n)
        # Decode a few chunks at a time into a uint8 array; fall back to float if a value is not a whole 0..255.
        step_bytes = arr.dtype.itemsize * math.prod(arr.shape[1:])
        block = max(1, _READ_BLOCK_BYTES // (step_bytes * arr.chunks[0])) * arr.chunks[0]
        out = np.empty((n, *arr.shape[1:]), np.uint8)
        for s in range(0, n, block):
            x = self.read(key, s, min(s + block, n))
            if not _whole_0_255(x):
                rest = self.read(key, s, n)
                return np.concatenate([out[:s].astype(arr.dtype), rest])
            out[s: s + len(x)] = x
        return out

    # ---------------------------------------------------------------- writing

    def update_attrs(self, **values) -> None:
        """Set JSON-serializable metadata (the root group's attributes) of a buffer opened for writing."""
        if not self._writable:
            raise ReplayBufferError(f"{self.source}: opened read-only; open with mode='a' or create() to write")
        try:
            json.dumps(values)
        except TypeError as e:
            raise ReplayBufferError(f"{self.source}: attribute values must be JSON-serializable: {e}") from e
        with signals_deferred():  # zarr writes from its own thread: not cut in the middle
            self.root.attrs.update(values)
        self.attrs.update(values)

    def add_episode(self, episode: Mapping[str, np.ndarray]) -> None:
        """Append one episode {key: array (T, ...)}, the same T for every key and the same keys as the buffer.

        The data arrays are written first and meta/episode_ends last, so an interrupted append leaves the
        earlier episodes readable.
        """
        if not self._writable:
            raise ReplayBufferError(f"{self.source}: opened read-only; use ReplayBuffer.create(...) or "
                                    "ReplayBuffer.open(path, mode='a') on a directory store to append")
        episode = {k: np.asarray(v) for k, v in episode.items()}
        if not episode:
            raise ReplayBufferError(f"{self.source}: add_episode got no arrays")
        if self._arrays and set(episode) != set(self._arrays):
            missing, extra = sorted(set(self._arrays) - set(episode)), sorted(set(episode) - set(self._arrays))
            raise ReplayBufferError(f"{self.source}: episode keys {sorted(episode)} differ from the buffer's "
                                    f"{self.keys} (missing {missing}, extra {extra})")
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in episode.items()}
        T = next(iter(lengths.values()))
        if any(t != T for t in lengths.values()) or not T:
            raise ReplayBufferError(f"{self.source}: episode arrays must share one length T >= 1 along axis 0, "
                                    f"got {lengths}")
        for k, v in episode.items():
            if k in self._arrays:
                arr = self._arrays[k]
                if v.shape[1:] != arr.shape[1:]:
                    raise ReplayBufferError(f"{self.source}: 'data/{k}' holds steps of shape {arr.shape[1:]}, "
                                            f"the episode's are {v.shape[1:]}")
                if not np.can_cast(v.dtype, arr.dtype, casting="same_kind"):
                    raise ReplayBufferError(f"{self.source}: 'data/{k}' is {arr.dtype}, cannot store {v.dtype}")
        for k, v in episode.items():
            if k not in self._arrays:
                self._arrays[k] = self._create_array(k, v)
                if _is_blosc_only(self._arrays[k]):  # v2 (no checksum codec): check Blosc frame lengths
                    self._store.blosc_dirs.add(f"{self._arrays[k].store_path.path}/")
        n = self.n_steps
        try:
            with signals_deferred():  # an episode is written whole: Ctrl-C takes effect after it
                for k, v in episode.items():
                    arr = self._arrays[k]
                    arr.resize((n + T, *arr.shape[1:]))  # also drops the stale tail of an interrupted append
                    arr[n: n + T] = v
                ends = self.root["meta/episode_ends"]
                ends.resize((self.n_episodes + 1,))
                ends[self.n_episodes] = n + T
                self.episode_ends = np.append(self.episode_ends, np.int64(n + T))
        except OSError as e:  # zarr's store writes name no file: say which buffer, and what is kept
            raise ReplayBufferError(f"{self.source}: could not write episode {self.n_episodes} ({e.strerror or e}; is "
                                    f"the disk full?); the {self.n_episodes} episodes before it are kept") from e

    def _create_array(self, key: str, example: np.ndarray):
        cname, clevel, shuffle, chunk_bytes = self._codec
        step_bytes = example.dtype.itemsize * max(1, math.prod(example.shape[1:]))
        rows = max(1, chunk_bytes // step_bytes)
        return self.root["data"].create_array(
            key, shape=(0, *example.shape[1:]), chunks=(rows, *example.shape[1:]), dtype=example.dtype,
            compressors=_blosc(cname, clevel, shuffle, example.dtype.itemsize, self.zarr_format),
        )

    def close(self) -> None:
        """Close the store; a buffer created as a .zip is packed now (atomically) and its .partial dir removed."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._zip_target is not None:
            _pack_zip(Path(self.source), self._zip_target)
            self._zip_target = None

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._zip_target is not None:
            # The writer failed or was interrupted: its complete episodes stay in the .partial directory, readable
            # and continuable; packing them would make an incomplete .zip that looks finished.
            self._zip_target = None
        self.close()


def _pack_zip(directory: Path, target: Path) -> None:
    """Zip a zarr directory store (members stored uncompressed: the chunks already are) via tmp + rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for p in sorted(directory.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(directory).as_posix())
    os.replace(tmp, target)
    shutil.rmtree(directory)
