"""Fetch published demonstration data into a local cache, checked by sha256 or by its contents.

    python -m datasets.download pusht                         # from the official address
    python -m datasets.download pusht --source ../shared/data/pusht.zip   # or a local copy (or another URL)
    python -m datasets.download robomimic/lift/ph/low_dim     # robomimic v1.4.1: <task>/<ph|mh>/<low_dim|raw|image>
    python -m datasets.download robomimic/square/ph/image     # made from the raw file by robomimic's own script
    python -m datasets.download robomimic_lowdim              # the reference's converted robomimic files (a zip)
    python -m datasets.download --list                        # every name, where it comes from, what it trains

The cache is $DIFFUSION_STACK_CACHE, else ~/.cache/diffusion-stack. Files are written to a temporary name
and renamed only once they are checked, so an interrupted download never leaves a file that looks complete.
Push-T's sha256 is published; robomimic and the reference publish no checksums or sizes for their robomimic files,
so those are checked by what they hold (an hdf5 of the right robosuite env with the published number of
demonstrations; a zip whose every member passes its CRC) and the sha256 of what arrived is printed and kept beside
the file (`<file>.sha256`), to pin with `--sha256` on another machine. robomimic's v1.4.1 image files are not
published (robomimic 0.3.0 lists no link): `.../image` downloads the raw file and runs robomimic's
dataset_states_to_obs.py with the cameras and size robomimic's extract_obs_from_raw_datasets.sh uses.
Which file trains which task: docs/robomimic.md. Code that needs Push-T calls `resolve_pusht(path_or_none)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common import ArgumentParser, DataError, run_cli


@dataclass(frozen=True)
class Published:
    url: str | None  # None: not published; made from `derive_from` instead
    sha256: str | None  # None: not published; the contents are checked instead
    filename: str  # path in the cache
    kind: str = "zip"  # "zip" (kept as is), "zip_tree" (the reference's robomimic zips: also extracted), "hdf5"
    env_name: str | None = None  # robomimic hdf5: the robosuite env in its env_args
    demos: int | None = None  # robomimic hdf5: the published number of demonstrations
    hdf5_type: str | None = None  # robomimic hdf5: raw, low_dim or image
    derive_from: str | None = None  # image: the raw file's name; cameras and size below
    cameras: tuple[str, ...] = ()
    image_size: int = 84
    trains: str = ""  # the task(s) it trains (docs/robomimic.md says how)


PUBLISHED = {
    "pusht": Published(
        url="https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip",
        sha256="8d1c5ac883b393d059bd2effc4834d8fee2259df40eab3abd670b53881915cce",
        filename="pusht.zip", trains="pusht, pusht_keypoints, pusht_image",
    ),
    # The reference's converted robomimic data: robomimic/datasets/<task>/<ph|mh>/{low_dim,low_dim_abs}.hdf5 (and
    # image.hdf5, image_abs.hdf5 in the image zip); *_abs files hold absolute actions (--input-actions absolute).
    "robomimic_lowdim": Published(
        url="https://diffusion-policy.cs.columbia.edu/data/training/robomimic_lowdim.zip", sha256=None,
        filename="robomimic_lowdim.zip", kind="zip_tree", trains="<task>_lowdim"),
    "robomimic_image": Published(
        url="https://diffusion-policy.cs.columbia.edu/data/training/robomimic_image.zip", sha256=None,
        filename="robomimic_image.zip", kind="zip_tree", trains="<task>_image"),
}

# robomimic v1.4.1 (robomimic 0.3.0's registry): task -> (robosuite env, dataset types, image cameras, image size).
ROBOMIMIC_V141 = {
    "lift": ("Lift", ("ph", "mh"), ("agentview", "robot0_eye_in_hand"), 84),
    "can": ("PickPlaceCan", ("ph", "mh"), ("agentview", "robot0_eye_in_hand"), 84),
    "square": ("NutAssemblySquare", ("ph", "mh"), ("agentview", "robot0_eye_in_hand"), 84),
    "transport": ("TwoArmTransport", ("ph", "mh"),
                  ("shouldercamera0", "shouldercamera1", "robot0_eye_in_hand", "robot1_eye_in_hand"), 84),
    "tool_hang": ("ToolHang", ("ph",), ("sideview", "robot0_eye_in_hand"), 240),
}
ROBOMIMIC_DEMOS = {"ph": 200, "mh": 300}  # proficient-human: 200 per task; multi-human: 6 operators x 50
ROBOMIMIC_URL = "http://downloads.cs.stanford.edu/downloads/rt_benchmark/{task}/{type}/{file}"
for _task, (_env, _types, _cams, _size) in ROBOMIMIC_V141.items():
    for _type in _types:
        _trains = f"{_task}_lowdim" + (" (eval.max_steps=500 for mh)" if _type == "mh" else "")
        _common = {"kind": "hdf5", "env_name": _env, "demos": ROBOMIMIC_DEMOS[_type], "sha256": None}
        for _hdf5, _file in (("raw", "demo_v141.hdf5"), ("low_dim", "low_dim_v141.hdf5")):
            PUBLISHED[f"robomimic/{_task}/{_type}/{_hdf5}"] = Published(
                url=ROBOMIMIC_URL.format(task=_task, type=_type, file=_file),
                filename=f"robomimic/{_task}/{_type}/{_file}", hdf5_type=_hdf5, **_common,
                trains=_trains if _hdf5 == "low_dim" else "(states only: the source of image)")
        PUBLISHED[f"robomimic/{_task}/{_type}/image"] = Published(
            url=None, filename=f"robomimic/{_task}/{_type}/image_v141.hdf5", hdf5_type="image",
            derive_from=f"robomimic/{_task}/{_type}/raw", cameras=_cams, image_size=_size,
            trains=f"{_task}_image" + (" (eval.max_steps=500 for mh)" if _type == "mh" else ""), **_common)


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


def _spec(name: str) -> Published:
    if name not in PUBLISHED:
        import difflib

        near = difflib.get_close_matches(name, PUBLISHED, n=3, cutoff=0.5)
        raise DownloadError(f"unknown dataset {name!r}; " + (f"did you mean {near}? " if near else "") +
                       "`python -m datasets.download --list` lists them all")
    return PUBLISHED[name]


def check_contents(path: Path, name: str) -> None:
    """What an unchecksummed file must hold (module docstring); raises DownloadError naming the file."""
    spec = PUBLISHED[name]
    if spec.kind in ("zip", "zip_tree"):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()  # reads every member and compares its CRC-32
                members = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DownloadError(f"{path}: not a readable zip ({e}); expected the published {spec.filename}") from e
        if bad is not None:
            raise DownloadError(f"{path}: member {bad} fails its CRC check; the download is corrupt")
        if spec.kind == "zip_tree" and not any(m.endswith(".hdf5") for m in members):
            raise DownloadError(f"{path}: no .hdf5 inside; the published {spec.filename} holds "
                                "robomimic/datasets/<task>/<ph|mh>/*.hdf5")
        return
    import h5py  # read here with h5py alone: datasets/ does not import demos/ (robomimic_hdf5 reads them fully)

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "env_args" not in f["data"].attrs:
                raise DownloadError(f"{path}: no data.attrs['env_args']: not a robomimic dataset; expected robomimic's "
                                    f"{spec.filename}")
            env_name = json.loads(f["data"].attrs["env_args"]).get("env_name")
            names = sorted((k for k in f["data"].keys() if re.fullmatch(r"demo_\d+", k)), key=lambda k: int(k[5:]))
            if not names:
                raise DownloadError(f"{path}: no demonstrations (data/demo_<i>); expected robomimic's {spec.filename}")
            first = f["data"][names[0]]
            obs = list(first["obs"].keys()) if "obs" in first else []
    except DownloadError:
        raise
    except (OSError, ValueError) as e:  # not HDF5, or env_args not JSON
        raise DownloadError(f"{path}: not a readable robomimic hdf5 ({e}); expected robomimic's {spec.filename}") from e
    if env_name != spec.env_name:
        raise DownloadError(f"{path}: a dataset of robosuite env {env_name!r}; {name} is {spec.env_name!r}")
    if spec.demos is not None and len(names) != spec.demos:
        raise DownloadError(f"{path}: {len(names)} demonstrations; the published {name} has {spec.demos} "
                            "(truncated, filtered, or another file)")
    wanted = {"raw": [], "low_dim": ["object"], "image": [f"{c}_image" for c in spec.cameras]}[spec.hdf5_type]
    missing = [k for k in wanted if k not in obs]
    if missing or (spec.hdf5_type == "raw" and obs):
        what = "no observations (a raw states-and-actions file)" if spec.hdf5_type == "raw" else f"obs {wanted}"
        raise DownloadError(f"{path}: data/{names[0]} has obs {sorted(obs)}; {name} holds {what}")


def _check(path: Path, name: str, expected_sha256: str | None, digest: str, origin) -> None:
    spec = PUBLISHED[name]
    want = expected_sha256 or spec.sha256
    if want is not None and digest != want:
        whose = "given" if expected_sha256 else "published"
        raise DownloadError(f"{origin}: sha256 {digest} does not match the {whose} {name} ({want}); the file is "
                            "corrupt, truncated or another dataset")
    if want is None:
        try:
            check_contents(path, name)
        except DownloadError as e:  # say the file the user named, not our temporary copy of it
            raise DownloadError(str(e).replace(str(path), str(origin))) from e


def _record(dest: Path, digest: str) -> None:
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")


def _cached(dest: Path, name: str, expected_sha256: str | None) -> bool:
    spec = PUBLISHED[name]
    if not dest.is_file():
        return False
    if spec.sha256 is not None or expected_sha256 is not None:
        return sha256_of(dest) == (expected_sha256 or spec.sha256)
    record = dest.with_name(dest.name + ".sha256")  # written once the contents passed their check
    return record.is_file() and (spec.kind != "zip_tree" or _extracted(dest).is_dir())


def _extracted(dest: Path) -> Path:
    return dest.with_suffix("")  # robomimic_lowdim.zip -> robomimic_lowdim/


def fetch(name: str, cache: str | Path | None = None, source: str | Path | None = None,
          sha256: str | None = None, progress: bool = True) -> Path:
    """Put published dataset `name` into the cache (if not already there) and return its path.

    source: a local file or a URL to take it from instead of the official address; a local file is copied.
    The sha256 must be the published one (or `sha256`, if given); files without a published one are checked by
    their contents. The reference's robomimic zips are also extracted: the path returned is then the directory
    (robomimic/datasets/... inside). An image file is made from the raw one (a `source` may be either).
    """
    spec = _spec(name)
    cache = Path(cache) if cache is not None else cache_dir()
    dest = cache / spec.filename
    compared = dest  # a derived image file is compared through the raw file it was made from
    if spec.url is None and source is not None and not _is_url(str(source)) and not _is_image_file(Path(source)):
        compared = cache / PUBLISHED[spec.derive_from].filename
    if _cached(dest, name, sha256) and not _other_local_copy(compared, source):
        return _extracted(dest) if spec.kind == "zip_tree" else dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if spec.url is None and (source is None or _is_url(str(source)) or not _is_image_file(Path(source))):
        return _derive_image(name, dest, cache, source, progress, sha256)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    source = spec.url if source is None else str(source)
    try:
        if _is_url(source):
            digest = _download(source, tmp, name)
            origin = source
        else:
            origin = Path(source).expanduser()
            if not origin.is_file():
                raise DownloadError(f"{origin}: no such file (expected the published {spec.filename})")
            digest = sha256_of(origin)
            if sha256 or spec.sha256:  # a wrong file is refused before it is copied
                _check(origin, name, sha256, digest, origin)
            shutil.copyfile(origin, tmp)
        _check(tmp, name, sha256, digest, origin)
        if spec.kind == "zip_tree":
            _extract(tmp, _extracted(dest))
        os.replace(tmp, dest)
        if spec.sha256 is None:
            _record(dest, digest)
            print(f"{name}: sha256 {digest} (none is published; kept in {dest.name}.sha256)", file=sys.stderr)
    finally:
        tmp.unlink(missing_ok=True)
    return _extracted(dest) if spec.kind == "zip_tree" else dest


def _other_local_copy(dest: Path, source) -> bool:
    """A local --source whose bytes differ from the cached file's (unchecksummed files only): take it, not the cache."""
    record = dest.with_name(dest.name + ".sha256")
    if source is None or _is_url(str(source)) or not record.is_file() or not Path(source).expanduser().is_file():
        return False
    return sha256_of(Path(source).expanduser()) != record.read_text().split()[0]


def _extract(zip_path: Path, target: Path) -> None:
    work = target.with_name(f".{target.name}.{os.getpid()}.extracting")
    shutil.rmtree(work, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(work)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_image_file(path: Path) -> bool:
    """An hdf5 whose first demo has <camera>_image observations (else: a raw file, or not robomimic's)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            first = sorted(k for k in f["data"].keys() if k.startswith("demo_"))[0]
            return any(k.endswith("_image") for k in f[f"data/{first}/obs"].keys())
    except Exception:
        return False


def _derive_image(name: str, dest: Path, cache: Path, source, progress: bool, sha256: str | None) -> Path:
    """robomimic's image file from its raw one: robomimic's dataset_states_to_obs.py, as robomimic made them.
    `source` and `sha256` are the raw file's (the image file is made here, not downloaded)."""
    from common.processes import run_module

    spec = PUBLISHED[name]
    raw = fetch(spec.derive_from, cache=cache, source=source, sha256=sha256, progress=progress)
    work = dest.parent / f".{dest.stem}.{os.getpid()}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        os.symlink(raw.resolve(), work / "demo.hdf5")  # the script writes its output beside its input
        # robomimic's script, run by envs.robomimic.run_script (its compatibility fixes) in a child process
        run_module("envs.robomimic.run_script", [
            "robomimic.scripts.dataset_states_to_obs", "--dataset", str(work / "demo.hdf5"), "--output_name", dest.name,
            "--done_mode", "2", "--camera_names", *spec.cameras, "--camera_height", str(spec.image_size),
            "--camera_width", str(spec.image_size), "--compress"], "robomimic's dataset_states_to_obs",
            progress_desc=f"{name}: robomimic dataset_states_to_obs" if progress else None, total=spec.demos)
        check_contents(work / dest.name, name)
        os.replace(work / dest.name, dest)
        _record(dest, sha256_of(dest))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def verify(path: str | Path, name: str = "pusht") -> str:
    """Check a local file as `fetch` would (sha256 if published, else contents); returns its sha256."""
    path, spec = Path(path), _spec(name)
    if not path.is_file():
        raise DownloadError(f"{path}: no such file (expected the published {spec.filename})")
    digest = sha256_of(path)
    _check(path, name, None, digest, path)
    return digest


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


def listing() -> str:
    """Every known name: what it is, where it comes from, what it trains."""
    rows = [f"{'name':27} {'checked by':10} {'trains':36} source"]
    for name, spec in PUBLISHED.items():
        check = "sha256" if spec.sha256 else "contents"
        source = spec.url or f"made from {spec.derive_from} ({' '.join(spec.cameras)}, {spec.image_size} px)"
        rows.append(f"{name:27} {check:10} {spec.trains:36} {source}")
    return "\n".join(rows)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="a published dataset (--list shows them)")
    parser.add_argument("--list", action="store_true", help="list the known datasets and exit")
    parser.add_argument("--cache", default=None, help="cache directory (default $DIFFUSION_STACK_CACHE or "
                                                      "~/.cache/diffusion-stack)")
    parser.add_argument("--source", default=None, help="a local file or URL instead of the official address")
    parser.add_argument("--sha256", default=None, help="the digest the file must have (pins files whose "
                                                       "publishers give none; for .../image, the raw file's)")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        print(listing())
        return 0 if args.list else 2
    # Ctrl-C mid-download: the partial file is removed (fetch writes a temporary and renames it)
    path = fetch(args.name, cache=args.cache, source=args.source, sha256=args.sha256)
    print(path)
    spec = PUBLISHED[args.name]
    if spec.kind == "hdf5" and spec.hdf5_type != "raw":
        task = args.name.split("/")[1] + ("_image" if spec.hdf5_type == "image" else "_lowdim")
        print(f"next: python -m demos.robomimic_hdf5 convert {path} outputs/data/{task}.zarr --abs-action && "
              f"python train.py task={task} dataset_path=outputs/data/{task}.zarr", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
