"""One helper that runs a test body on N processes over gloo on CPU.

    def _body(rank, world_size, tmp): ...        # module-level, so it can be pickled
    def test_something(tmp_path):
        run_on_processes(_body, 2, str(tmp_path))

Each process gets RANK/WORLD_SIZE/LOCAL_RANK set and a gloo process group initialised; an
exception in any process fails the test with that process's traceback.
"""

from __future__ import annotations

import os
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp

from tst_titan.experiments.runner import free_port


def _worker(rank, world_size, port, body, args, errors):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        body(rank, world_size, *args)
        dist.barrier()  # let every rank finish its collectives before teardown
    except BaseException:
        errors.put((rank, traceback.format_exc()))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_processes(body, world_size: int, *args) -> None:
    """Run ``body(rank, world_size, *args)`` on ``world_size`` gloo processes; re-raise failures."""
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world_size, port, body, args, errors))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    for p in procs:
        if p.is_alive():
            p.kill()
            failures.append((-1, f"process {p.pid} timed out"))
        elif p.exitcode != 0 and not failures:
            failures.append((-1, f"process exited with {p.exitcode}"))
    if failures:
        raise AssertionError(
            "\n".join(f"--- rank {rank} ---\n{tb}" for rank, tb in sorted(failures))
        )
