"""Does the code of today train the issue-12 study's remaining configurations exactly as the frozen commit
did? Trains each (ImbSAM's choice, the ablations of the tuned CC-SAM, ccsam-paper at s = 0.01) for
2 + 1 epochs and writes the per-epoch metrics (timings dropped) and the test results to a JSON file;
run it once per checkout and compare the two files.

    git worktree add --detach /tmp/frozen 2c6fec4
    PYTHONPATH=/tmp/frozen/src python benchmarks/tuned_study_parity.py --code /tmp/frozen --out frozen.json
    python benchmarks/tuned_study_parity.py --code . --out today.json
    python benchmarks/tuned_study_parity.py --compare frozen.json today.json

Result on 2026-12-03 (2c6fec4 vs fe7df8d): every configuration identical, ccsam-paper aside (validation
ECE / NLL differ by 1e-6 after epoch 0: rounding of the scoped CC-SAM loss, which sums the classes'
perturbed rows in one criterion call since the stage1.loss fix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "results" / "fmnist-lt-tuned-records"
SHORT = ["stage1.epochs=2", "stage1.milestones=[1]", "stage1.warmup_epochs=0", "stage2.epochs=1"]
TIMINGS = ("time_s", "img_per_s", "data_wait_s")


def run(code: Path, out: Path) -> None:
    sys.path.insert(0, str(code / "benchmarks"))
    import fmnist_tuned_study as study  # the checkout's own driver: its study file and ablations

    from ccsam.config import resolve_config
    from ccsam.training.run_dir import RunDir
    from ccsam.training.trainer import train
    from ccsam.tuning import load_study_spec

    try:
        from ccsam.tuning.study import migrated_params as migrate
    except ImportError:  # the frozen version reads its own keys
        def migrate(params: dict) -> dict:
            return params

    spec = load_study_spec(study._spec_tree(False))

    def chosen(method: str) -> dict:
        return migrate(json.loads((RECORDS / method / "choice.json").read_text())["params"])

    released = chosen("ccsam-released")
    jobs = {"imbsam": ("imbsam", chosen("imbsam"), [])}
    jobs.update({name: ("ccsam-released", released, list(extra)) for name, extra in study.ABLATIONS.items()})
    paper = {k: 0.01 if k.endswith("noise_scale") else v for k, v in released.items()}
    jobs["ccsam-paper"] = ("ccsam-paper", paper, [])
    results = {}
    for name, (method, params, extra) in jobs.items():
        overrides = [*spec.final_overrides_of(method, params, 2), *extra, *SHORT]
        cfg = resolve_config(spec.methods[method].preset, overrides).model_copy(update={"name": "parity"})
        run_dir = RunDir.create(Path(tempfile.mkdtemp()) / "run", cfg, ["parity"])
        test = train(cfg, run_dir, progress=False)["test"]
        epochs = [{k: v for k, v in r.items() if k not in TIMINGS} for r in run_dir.read_metrics()]
        results[name] = {"test": test, "epochs": epochs}
        print(f"{name}: test top-1 {test['top1']:.4f}", flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def compare(a_path: Path, b_path: Path) -> None:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    for name in a:
        if a[name] == b.get(name):
            print(f"{name}: identical")
            continue
        pairs = zip(a[name]["epochs"], b[name]["epochs"], strict=False)  # a shorter run differs at its end
        first = next((i for i, (x, y) in enumerate(pairs) if x != y), "-")
        print(f"{name}: differs from epoch {first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, help="the checkout whose driver and study file to use")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar="JSON")
    parser.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    os.environ.setdefault("CCSAM_DATA_ROOT", str(Path(args.data_root).expanduser()))
    run(args.code.resolve(), args.out)


if __name__ == "__main__":
    main()
