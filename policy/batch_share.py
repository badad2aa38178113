"""Per-sample random draws of a training batch that do not depend on how many processes share the batch.

Under data-parallel training (train.py started by torchrun) each of W processes computes the loss on its B/W rows
of a global batch of B windows, and DistributedDataParallel averages the gradients. For such a run to equal a
one-process run with batch B, every random value that belongs to a sample (the diffusion noise and timestep, an
image's crop window, IBC's noisy positive and its negatives) must be the value that sample gets in the one-process
run. So every process holds the same random state (same seed, same draws), draws the values of the *whole* global
batch and keeps its own rows: rank r of W keeps rows r*n .. (r+1)*n - 1, the rows of the global batch it trains on
(datasets.StepBatches gives it those windows). The extra work is W times a few small tensors (the action windows,
two integers per image), not the network's activations, and with one process nothing changes: `per_sample(draw, n)`
is `draw(n)`, the very call made before this module existed.

Not covered: dropout (policy.p_drop_attn of the transformer, IBC's MLP dropout) draws its masks inside the network
over the local rows, so with W > 1 those runs do not equal the one-process run (statistically they are the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor

_share = (0, 1)  # (rank, world size) of the training step under way in this process; (0, 1) outside one


@contextmanager
def batch_share(rank: int, world_size: int) -> Iterator[None]:
    """While inside, `per_sample` draws for `world_size` processes' rows and keeps those of `rank` (train.py wraps
    each training step's loss in it; validation and evaluation run outside, on whole batches)."""
    global _share
    previous, _share = _share, (rank, world_size)
    try:
        yield
    finally:
        _share = previous


def per_sample(draw: Callable[[int], Tensor], n: int) -> Tensor:
    """`draw(m)` returns m rows of random values (the first dimension); returns this process's n rows of the global
    batch's draw: draw(n * world_size)[rank * n:(rank + 1) * n], and draw(n) itself with one process."""
    rank, world = _share
    if world == 1:
        return draw(n)
    return draw(n * world)[rank * n:(rank + 1) * n]
