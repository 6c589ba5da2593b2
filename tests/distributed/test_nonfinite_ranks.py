"""runtime.on_nonfinite=stop under torchrun: the ranks stop together, at the first step any rank's loss
was non-finite (a rank stopping alone would leave the others blocked in their next collective)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from ccsam.distributed import init_process_group, shutdown
from ccsam.training.nonfinite import CHECK_EVERY, NonFiniteWatch

WORLD = 2
BAD_STEP = 5  # only rank 1's loss is NaN, only at this step


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_process_group("cpu")
    try:
        watch, stopped_at = NonFiniteWatch(), None
        for step in range(2 * CHECK_EVERY):
            loss = torch.tensor(float("nan") if (rank == 1 and step == BAD_STEP) else 1.0)
            if watch.record(loss):
                stopped_at = step
                break
        result = {"stopped_at": stopped_at, "first_step": watch.first_step, "first_value": watch.first_value}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown()


def test_every_rank_stops_at_the_same_check_and_names_the_same_first_step(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for result in results:  # rank 0's own losses were all finite
        assert result["stopped_at"] == CHECK_EVERY - 1
        assert result["first_step"] == BAD_STEP
        assert result["first_value"] != result["first_value"]  # NaN (json writes it as NaN)
