"""Training-loader throughput on the real Push-T data, next to the reference implementation's figures.

    .venv/bin/python bench/bench_loader.py [--data ../shared/data/pusht.zip] [--seconds 3] [--repeats 3]
    .venv/bin/python bench/bench_loader.py --storage [--episodes 40]     # chunking/compression table

Loader: windows/s drawn through `make_loader` (train.py's settings: StepBatches shuffle, 0 workers) from the
training split, Push-T state (obs "state", batch 256) and image (obs "img" + "state", batch 64), Tp=16,
To=2, Ta=8; the median of `--repeats` timed runs of `--seconds` each. The reference figures are
docs/design.md section 7 (Diffusion Policy's loader on a 2-core machine like this one, its own configs).

--storage: writes the first `--episodes` episodes (images as uint8) with several Blosc settings and chunk
sizes and reports stored size, write time, full-decode time and per-episode read time; the numbers behind
the defaults in datasets/replay_buffer.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from datasets import ReplayBuffer, StepBatches, WindowDataset, make_loader, resolve_pusht, split_episodes  # noqa: E402

REFERENCE = {  # docs/design.md section 7: (windows/s with its config, its config, windows/s with 0 workers)
    "state": (37_500, "1 worker", 62_000),
    "image": (680, "8 workers", 736),
}


def windows_per_second(dataset, batch_size: int, seconds: float, seed: int) -> float:
    # Exactly train.py's loader: make_loader over StepBatches (the step-indexed, resumable shuffle).
    sampler = StepBatches(len(dataset), batch_size, seed, start_step=0, total_steps=10**9)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed, batch_sampler=sampler)
    n, start = 0, time.perf_counter()
    for batch in loader:
        n += len(batch["action"])
        if time.perf_counter() - start >= seconds:
            return n / (time.perf_counter() - start)
    raise RuntimeError("loader ended early")


def bench_loader(path: Path, seconds: float, repeats: int) -> None:
    t = time.perf_counter()
    rb = ReplayBuffer.open(path, in_memory=True)
    print(f"loaded {rb.n_episodes} episodes, {rb.n_steps} steps into memory in {time.perf_counter() - t:.1f} s "
          f"(img as {rb.array('img').dtype})")
    train, _ = split_episodes(rb.n_episodes)
    cases = {
        "state": (WindowDataset(rb, ["state"], episodes=train), 256),
        "image": (WindowDataset(rb, ["img", "state"], episodes=train), 64),
    }
    print(f"\n{'Push-T':8s}{'batch':>6s}{'ours (0 workers)':>18s}{'reference':>22s}{'ratio':>8s}"
          f"{'ref 0 workers':>15s}{'ratio':>8s}")
    for name, (ds, batch) in cases.items():
        rates = [windows_per_second(ds, batch, seconds, seed) for seed in range(repeats)]
        ours = statistics.median(rates)
        ref, config, ref0 = REFERENCE[name]
        print(f"{name:8s}{batch:6d}{ours:16,.0f}/s{ref:>12,}/s ({config}){ours / ref:7.1f}x"
              f"{ref0:>13,}/s{ours / ref0:7.1f}x")


def _stored_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def bench_storage(path: Path, n_episodes: int) -> None:
    src = ReplayBuffer.open(path)
    n_episodes = min(n_episodes, src.n_episodes)
    episodes = [src.get_episode(i) for i in range(n_episodes)]
    for ep in episodes:
        ep["img"] = ep["img"].astype(np.uint8)  # whole numbers 0..255: exact
    steps = sum(len(ep["action"]) for ep in episodes)
    img_step = episodes[0]["img"][0].nbytes
    lowdim = ["action", "keypoint", "n_contacts", "state"]
    dp_chunk = src.array("state").chunks[0]
    # (label, keys, image dtype, chunk_bytes or a number of steps for the published layout, cname, clevel, shuffle)
    configs = [
        ("published layout: f32, 161 steps", ["img"], np.float32, dp_chunk, "zstd", 5, "bitshuffle"),
        ("u8, 161 steps (4.3 MB)", ["img"], np.uint8, dp_chunk, "zstd", 5, "bitshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "zstd", 5, "bitshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "zstd", 3, "bitshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "lz4", 5, "bitshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "zstd", 1, "noshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "zstd", 3, "noshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "zstd", 5, "noshuffle"),
        ("u8, 1 MB", ["img"], np.uint8, 1 << 20, "lz4", 5, "noshuffle"),
        ("u8, 256 KB", ["img"], np.uint8, 1 << 18, "zstd", 3, "noshuffle"),
        ("u8, 2 MB", ["img"], np.uint8, 1 << 21, "zstd", 3, "noshuffle"),
        ("u8, 4 MB", ["img"], np.uint8, 1 << 22, "zstd", 3, "noshuffle"),
        ("low-dim, 161 steps", lowdim, None, dp_chunk, "zstd", 5, "bitshuffle"),
        ("low-dim, 1 MB", lowdim, None, 1 << 20, "zstd", 3, "bitshuffle"),
        ("low-dim, 1 MB", lowdim, None, 1 << 20, "zstd", 3, "shuffle"),
        ("low-dim, 1 MB", lowdim, None, 1 << 20, "zstd", 5, "shuffle"),
        ("low-dim, 1 MB", lowdim, None, 1 << 20, "lz4", 5, "shuffle"),
    ]
    raw_img = steps * img_step
    raw_low = sum(episodes[0][k][0].nbytes for k in lowdim) * steps
    print(f"first {n_episodes} episodes, {steps} steps; raw: img {raw_img / 2**20:.0f} MB as uint8, "
          f"low-dim {raw_low / 2**10:.0f} KB")
    print(f"| {'layout':34s} | {'codec':18s} | {'stored':>9s} | {'ratio':>6s} | {'write s':>7s} | {'decode all':>10s} |"
          f" {'1 episode':>9s} |")
    print(f"|{'-' * 36}|{'-' * 20}|{'-' * 11}|{'-' * 8}|{'-' * 9}|{'-' * 12}|{'-' * 11}|")
    rng = np.random.default_rng(0)
    probe = rng.choice(n_episodes, size=min(20, n_episodes), replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, keys, img_dtype, chunk, cname, clevel, shuffle) in enumerate(configs):
            out = Path(tmp) / f"{i}.zarr"
            # chunk < 4096: a number of steps; per key, chunk_bytes is steps * that key's bytes per step
            t = time.perf_counter()
            if chunk < 4096:
                for k in keys:
                    kb = (episodes[0][k][0].astype(img_dtype) if k == "img" else episodes[0][k][0]).nbytes
                    with ReplayBuffer.create(out / k, chunk_bytes=chunk * kb, cname=cname, clevel=clevel,
                                             shuffle=shuffle) as rb:
                        for ep in episodes:
                            rb.add_episode({k: ep[k].astype(img_dtype) if k == "img" else ep[k]})
            else:
                with ReplayBuffer.create(out, chunk_bytes=chunk, cname=cname, clevel=clevel, shuffle=shuffle) as rb:
                    for ep in episodes:
                        rb.add_episode({k: ep[k] if k != "img" else ep[k].astype(img_dtype) for k in keys})
            write = time.perf_counter() - t
            stores = [out / k for k in keys] if chunk < 4096 else [out]
            stored = sum(_stored_bytes(s) for s in stores)
            opened = [ReplayBuffer.open(s) for s in stores]
            decode, episode = float("inf"), float("inf")
            for _ in range(3):  # best of 3: the machine is shared
                t = time.perf_counter()
                for rb in opened:
                    rb.to_memory()
                decode = min(decode, time.perf_counter() - t)
                t = time.perf_counter()
                for e in probe:
                    for rb in opened:
                        rb.get_episode(int(e))
                episode = min(episode, (time.perf_counter() - t) / len(probe))
            raw = raw_img * np.dtype(img_dtype).itemsize if keys == ["img"] else raw_low
            codec = f"{cname} {clevel} {shuffle}"
            print(f"| {label:34s} | {codec:18s} | {stored / 2**20:7.2f}MB | {raw / stored:5.1f}x | {write:7.2f} |"
                  f" {decode:8.2f} s | {episode * 1e3:6.1f} ms |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="Push-T replay buffer (default: resolve_pusht())")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", action="store_true", help="measure chunking/compression choices instead")
    parser.add_argument("--episodes", type=int, default=40, help="--storage: how many episodes to write")
    args = parser.parse_args(argv)
    path = resolve_pusht(args.data)
    if args.storage:
        bench_storage(path, args.episodes)
    else:
        bench_loader(path, args.seconds, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
