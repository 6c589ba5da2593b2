"""``python tests/reliability/_driver.py ARGS``: ``ccsam ARGS``, with checkpoint writes slowed down when
``CCSAM_TEST_SLOW_CHECKPOINT=SECONDS@N`` is set (pause the N-th ``last.pt`` write of this process), so a
test can kill the process inside one.

The pause sits between writing the temporary file and ``os.replace``: a kill then leaves a complete
temporary ``.last.pt.*`` file beside the previous ``last.pt``, the state a real kill during the write
leaves. The library has no test hooks; only this driver process is patched.
"""

from __future__ import annotations

import os
import sys
import time


def _slow_replace(seconds: float, nth: int):
    real = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        if os.fsdecode(dst).endswith("last.pt"):
            seen[0] += 1
            if seen[0] == nth:
                time.sleep(seconds)
        return real(src, dst, *args, **kwargs)

    return replace


if __name__ == "__main__":
    pause = os.environ.get("CCSAM_TEST_SLOW_CHECKPOINT")
    if pause:
        seconds, _, nth = pause.partition("@")
        os.replace = _slow_replace(float(seconds), int(nth or 1))
    from ccsam.cli.main import main

    raise SystemExit(main(sys.argv[1:]))
