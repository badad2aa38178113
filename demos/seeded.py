"""Seeded scripted demonstrations into a replay buffer, in parallel processes: the one recording loop of
demos.pusht and demos.blockpush.

`generate_seeded` runs `record(seed) -> (episode {key: (T, ...)}, success)` on seeds first_seed, first_seed+1, ...
in worker processes until `n_episodes` are saved, and writes them in seed order as they finish. An interrupted run
(Ctrl-C, SIGTERM, a kill) leaves a readable buffer of the finished episodes marked unfinished; the same call
afterwards continues it from the next seed, and gives the same buffer as an uninterrupted run. The worker processes
die with this one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from common import ArgumentParser, ConfigError, on_interrupt
from common.processes import worker_pool
from datasets import ReplayBuffer
from datasets.replay_buffer import IN_PROGRESS, ReplayBufferError


def generate_seeded(output: str | Path, n_episodes: int, record: Callable, command: str, first_seed: int = 0,
                    workers: int | None = None, overwrite: bool = False, keep_failures: bool = False) -> dict:
    """Record `n_episodes` demonstrations with `record` (a module-level function: it goes to worker processes);
    failed episodes are skipped unless `keep_failures`. `command` names the producer in the buffer's attributes
    (a different producer's unfinished buffer is not continued)."""
    if n_episodes < 1:
        raise ConfigError(f"--episodes {n_episodes}: expected at least 1 episode to record")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1 process")
    workers = workers or max(1, min(os.cpu_count() or 1, n_episodes))  # one episode per core at a time
    plan = {"command": command, "episodes": n_episodes, "first_seed": first_seed, "keep_failures": keep_failures}
    with ReplayBuffer.create_or_continue(output, plan, overwrite=overwrite) as buffer:
        progress = buffer.attrs[IN_PROGRESS]
        seeds_saved, failed = list(progress.get("seeds", [])), list(progress.get("failed_seeds", []))
        pending = progress.get("pending")
        if pending is not None and buffer.n_episodes == len(seeds_saved) + 1:
            seeds_saved.append(pending)  # stopped after the episode was written, before its seed was noted
        if buffer.n_episodes != len(seeds_saved):
            raise ReplayBufferError(f"{output}: {buffer.n_episodes} episodes but {len(seeds_saved)} seeds noted; "
                                    "the buffer was changed by another program: --overwrite to record it again")
        saved = len(seeds_saved)
        seed = max([first_seed - 1, *seeds_saved, *failed]) + 1
        if saved:
            print(f"{output}: continuing an unfinished run at episode {saved + 1} of {n_episodes} (seed {seed})")

        def note(again: str) -> str:
            return (f"{buffer.n_episodes} of {n_episodes} episodes are saved in {buffer.source} (unfinished); "
                    f"`{again}` continues from the next one")

        with on_interrupt(note), worker_pool(workers) as pool, tqdm(
            total=n_episodes, initial=saved, desc="demonstrations", unit="episode"
        ) as bar:
            while saved < n_episodes:
                seeds = list(range(seed, seed + (n_episodes - saved)))
                seed += len(seeds)
                for s, (episode, success) in zip(seeds, pool.imap(record, seeds)):
                    if (success or keep_failures) and saved < n_episodes:
                        buffer.update_attrs(**{IN_PROGRESS: {**buffer.attrs[IN_PROGRESS], "pending": s}})
                        buffer.add_episode(episode)
                        seeds_saved.append(s)
                        saved += 1
                        bar.update(1)
                    if not success:
                        failed.append(s)
                    buffer.update_attrs(**{IN_PROGRESS: {**buffer.attrs[IN_PROGRESS], "seeds": seeds_saved,
                                                         "failed_seeds": failed, "pending": None}})
                    if saved >= n_episodes:
                        break
                if len(failed) > n_episodes:  # the demonstrator is broken; do not loop forever
                    raise RuntimeError(f"{output}: {len(failed)} scripted episodes failed (seeds {failed[:10]}...)")
        buffer.finish_writing()
    return {"output": str(output), "episodes": saved, "failed_seeds": failed, "last_seed": seeds_saved[-1]}


def seeded_cli(argv: list[str], description: str, default_episodes: int, generate: Callable,
               keep_failures_help: str = "keep episodes the demonstrator did not finish") -> None:
    """The command line of a seeded producer (demos.pusht, demos.blockpush): parse, `generate(...)`, report."""
    g = ArgumentParser(description=description)
    g.add_argument("--output", required=True, help="replay buffer to create (.zarr directory or .zip)")
    g.add_argument("--episodes", type=int, default=default_episodes)
    g.add_argument("--first-seed", type=int, default=0, help="seeds first..: keep them apart from 100000.. (eval)")
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--keep-failures", action="store_true", help=keep_failures_help)
    args = g.parse_args(argv)
    result = generate(args.output, args.episodes, args.first_seed, args.workers, args.overwrite, args.keep_failures)
    print(f"saved {result['episodes']} episodes to {result['output']}; "
          f"failed seeds skipped: {result['failed_seeds'] or 'none'}")
