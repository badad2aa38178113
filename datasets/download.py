"""Fetch published demonstration data into a local cache, checked by sha256.

    python -m datasets.download pusht                         # from the official address
    python -m datasets.download pusht --source ../shared/data/pusht.zip   # or a local copy (or another URL)
    python -m datasets.download pusht --cache /data/cache

The cache is $DIFFUSION_STACK_CACHE, else ~/.cache/diffusion-stack. Files are written to a temporary name
and renamed only once their sha256 matches, so an interrupted download never leaves a file that looks
complete. Code that needs Push-T calls `resolve_pusht(path_or_none)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common import ArgumentParser, DataError, run_cli


@dataclass(frozen=True)
class Published:
    url: str
    sha256: str
    filename: str


PUBLISHED = {
    "pusht": Published(
        url="https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip",
        sha256="8d1c5ac883b393d059bd2effc4834d8fee2259df40eab3abd670b53881915cce",
        filename="pusht.zip",
    ),
}


class DownloadError(DataError, RuntimeError):
    """A download or copy that failed, or whose checksum does not match; the message says which file."""


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFUSION_STACK_CACHE") or Path.home() / ".cache" / "diffusion-stack")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_url(source: str) -> bool:
    return "://" in source


def _download(url: str, dest_tmp: Path, name: str) -> str:
    """Stream `url` into `dest_tmp` with a progress bar; returns the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest_tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        dest_tmp.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {e}. Without network access, fetch the file elsewhere "
                            f"and run: python -m datasets.download {name} --source PATH") from e
    return h.hexdigest()


def fetch(name: str, cache: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Put published dataset `name` into the cache (if not already there) and return its path.

    source: a local file or a URL to take it from instead of the official address; a local file is
    copied. Either way the sha256 must be the published one.
    """
    if name not in PUBLISHED:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(PUBLISHED)}")
    spec = PUBLISHED[name]
    cache = Path(cache) if cache is not None else cache_dir()
    dest = cache / spec.filename
    if dest.is_file() and sha256_of(dest) == spec.sha256:
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{spec.filename}.{os.getpid()}.tmp"
    source = spec.url if source is None else str(source)
    try:
        if _is_url(source):
            got = _download(source, tmp, name)
            origin = source
        else:
            origin = Path(source).expanduser()
            got = verify(origin, name)  # check before copying, so a wrong file is named as it is
            shutil.copyfile(origin, tmp)
        if got != spec.sha256:
            raise DownloadError(f"{origin}: sha256 {got} does not match the published {name} "
                                f"({spec.sha256}); the file is corrupt, truncated or another dataset")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def verify(path: str | Path, name: str = "pusht") -> str:
    """Check a local file against the published sha256 of `name`; returns the digest or raises DownloadError."""
    path, spec = Path(path), PUBLISHED[name]
    if not path.is_file():
        raise DownloadError(f"{path}: no such file (expected the published {spec.filename})")
    got = sha256_of(path)
    if got != spec.sha256:
        raise DownloadError(f"{path}: sha256 {got} does not match the published {name} ({spec.sha256}); "
                            "the file is corrupt, truncated or another dataset")
    return got


def resolve_pusht(path: str | Path | None = None) -> Path:
    """The Push-T replay buffer to use: `path` as given (any Push-T buffer, .zip or zarr directory, not checked
    against the published sha), else $PUSHT_ZIP, else the cached download (downloading it if absent)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such Push-T replay buffer; download it with "
                                    "`python -m datasets.download pusht` or pass an existing path")
        return path
    if os.environ.get("PUSHT_ZIP"):
        return resolve_pusht(os.environ["PUSHT_ZIP"])
    return fetch("pusht")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(PUBLISHED))
    parser.add_argument("--cache", default=None, help="cache directory (default $DIFFUSION_STACK_CACHE or "
                                                      "~/.cache/diffusion-stack)")
    parser.add_argument("--source", default=None, help="a local file or URL instead of the official address")
    args = parser.parse_args(argv)
    # Ctrl-C mid-download: the partial file is removed (fetch writes a temporary and renames it)
    print(fetch(args.name, cache=args.cache, source=args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
