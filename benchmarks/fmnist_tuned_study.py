"""Issue 12's study: does CC-SAM help on Fashion-MNIST-LT IR 100 once every method is tuned the same way?

Usage (one job at a time; re-run the same command to continue after an interruption):
    python benchmarks/fmnist_tuned_study.py --data-root ../shared/data --study-dir runs/fmnist-lt-tuned
    python benchmarks/fmnist_tuned_study.py --smoke --study-dir runs/fmnist-smoke   # minutes: proves it runs

Phases, each resumable, method by method in the order of `fmnist_tuned_study.yaml` (so that whatever has
finished is a complete row): (1) search: the same number of Optuna trials for every method on the 30 + 10
proxy schedule, validation split only; (2) final: the method's chosen values on the full 120 + 20
schedule, seeds 0-4, test split once per seed; then (3) ablations of the tuned CC-SAM (released
form): the radius ablation (none / dir_only / dir_only-matched / mag_only vs ccsam), the stage-1
isolation (CC-SAM or ERM stage 1, each followed by CC-SAM's stage 2 or cRT) and the class-conditional
loss scored with the mixup targets (flat-mixup). After every job the report
`benchmarks/results/fmnist-lt-tuned.md` is rewritten from whatever has finished (`--smoke`: inside the
study folder). A lock file in the study folder keeps a second copy from running at the same time.

The study's JSON records (spec, spaces, trials, choices, per-seed results: `ccsam.tuning.records`) are
copied after every job into `benchmarks/results/fmnist-lt-tuned-records/`, which is committed: the study
folder (Optuna storage, run folders) is lost with its machine, the records are not. On a new machine the
study folder is rebuilt from them first (`--phase restore` does only that), so finished trials and seeds
are not trained again; `--phase records` copies the records and rewrites the report while a study runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ccsam.config import resolve_config
from ccsam.data.build import DATA_ROOT_ENV
from ccsam.tuning import export_records, load_study_spec, restore_study, run_final, run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tuned_report import write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
SPEC = HERE / "fmnist_tuned_study.yaml"
REPORT = HERE / "results" / "fmnist-lt-tuned.md"
RECORDS = HERE / "results" / "fmnist-lt-tuned-records"
# Where and with what code the study ran (quoted at the top of the report).
PROVENANCE = (
    "> Code: the rows ce ... ldam-drw-sam, the ImbSAM search and its seeds 0-1 ran at commit 2c6fec4 (the flat "
    "config keys of that version, e.g. `stage1.rho`, `stage2.up_limit`; `ccsam tune` migrates them). On "
    "2026-12-03 the machine was replaced: the study folder was rebuilt from the committed records "
    "(`--phase restore`) and continued with today's code, which trains every remaining configuration (ImbSAM, "
    "the ablations) bit for bit as 2c6fec4 did (2-epoch runs, `benchmarks/tuned_study_parity.py`); "
    "ccsam-paper, rounding-level different (1e-6), ran entirely with today's code. Its search was started "
    "over three times before any test evaluation, each abandoned search recorded with its reason in "
    "`fmnist-lt-tuned-records/abandoned/`: a noise_scale range whose radius exceeded any useful size, class "
    "passes that normalised BatchNorm with each class's own rows (now `stage1.class_pass_bn=batch`), and "
    "perturb_last_k=1, which on small_cnn is its final BatchNorm layer alone (now 2: the last conv + BN). "
    "The machine was replaced again for the last ablations (restored the same way); the two variants added "
    "after earlier rows were read (dir_only-matched, flat-mixup) did not exist at 2c6fec4 and ran with the "
    "code of their commits (2e84d1d, 925802e). "
    "Machine: 2-core Intel Xeon (KVM guest), no GPU, one torch thread, channels_last; the cores were shared "
    "with development work."
)
CRT_STAGE2 = [
    "stage2.method={name: retrain, reinit_head: true}",  # a mapping replaces the tuned CC-SAM stage 2 member
    "stage2.sampler=class_balanced",
    "stage2.schedule=cosine",
    "stage2.bn_mode=eval",
    "stage2.epochs=20",
    "stage2.warmup_epochs=0",
]
ABLATIONS: dict[str, list[str]] = {
    "radius-none": ["stage1.radius=none"],
    "radius-dir_only": ["stage1.radius=dir_only"],
    "radius-mag_only": ["stage1.radius=mag_only"],
    "s1-erm+s2-ccsam": ["stage1.method=erm"],
    "s1-ccsam+s2-crt": CRT_STAGE2,
    "s1-erm+s2-crt": ["stage1.method=erm", *CRT_STAGE2],
    # Added after radius-dir_only was read: that row fixes |eps| = 1 (the slides' magnitude), about 320 times
    # the tuned radius, so it changes the size of the perturbation, not only its spread over classes. Here
    # |eps| is the mean CC-SAM radius of the tuned run (3.10e-3 over stage-1 steps, samples, W and b; seed 0,
    # training split only), declared before measuring: benchmarks/measure_ccsam_radius.py,
    # results/fmnist-lt-tuned-ccsam-radius.json.
    "radius-dir_only-matched": ["stage1.radius={name: dir_only, rho: 0.0031}"],
    # Added after s1-erm+s2-ccsam's first seeds were read: stage-1 ERM (mixup) beat the tuned CC-SAM stage 1,
    # and even radius-none, because the released code scores the perturbed logits against y_a alone (lam
    # and y_b ignored), so its stage 1 is not mixup ERM even without a perturbation. This row scores them
    # with the mixup loss instead (stage1.flat_targets=mixup), tuned values fixed.
    "flat-mixup": ["stage1.flat_targets=mixup"],
}
# Ablations of stage 2 only: their seeds train stage 2 on the finished stage 1 of these runs, where it is
# on disk (`run_final(stage1_from=...)`; bit-identical to training them whole, 120 epochs fewer per seed).
SHARED_STAGE1 = {"s1-ccsam+s2-crt": "final", "s1-erm+s2-crt": "s1-erm+s2-ccsam"}
# Smoke: the pipeline end to end in minutes (a 300-image head class; timings then understate a full epoch).
SMOKE = {
    "trials": 2,
    "seeds": [0, 1],
    "startup_trials": 1,
    "pruner_startup_trials": 1,
    "pruner_warmup_epochs": 1,
    "search_overrides": ["stage1.epochs=1", "stage1.milestones=[1]", "stage1.warmup_epochs=0"],
    "final_overrides": ["stage1.epochs=1", "stage1.milestones=[1]", "stage1.warmup_epochs=0"],
}


def _spec_tree(smoke: bool) -> dict[str, Any]:
    tree = yaml.safe_load(SPEC.read_text())
    if not smoke:
        return tree
    tree.update(SMOKE)
    tree["common_overrides"] = [*tree.get("common_overrides", []), "data.n_max=300"]
    for method in tree["methods"].values():  # one stage-2 epoch wherever a method has a stage 2
        kept = [o for o in method.get("search_overrides", []) if not o.startswith("stage2.epochs")]
        two_stage = resolve_config(method["preset"]).stage2.epochs > 0
        method["final_overrides"] = ["stage2.epochs=1"] if two_stage else []
        method["search_overrides"] = [*kept, *method["final_overrides"]]
        space = dict(method.get("space", {}))
        if "stage2.epochs" in space:
            space["stage2.epochs"] = {"type": "categorical", "choices": [1]}
        method["space"] = space
    return tree


class StudyLock:
    """``STUDY/.lock`` holding this process id: a second study process on the same folder is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            pid = int(self.path.read_text().strip() or 0)
            try:
                os.kill(pid, 0)
                sys.exit(f"study folder is in use by process {pid} ({self.path}); one job at a time")
            except (ProcessLookupError, PermissionError):
                self.path.unlink()  # left by a killed process
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study-dir", default="runs/fmnist-lt-tuned")
    parser.add_argument("--data-root", default=None, help=f"sets ${DATA_ROOT_ENV}")
    parser.add_argument(
        "--smoke", action="store_true", help="2 trials, 2 seeds, 1 (+1) epochs: a pipeline check"
    )
    parser.add_argument(
        "--phase", choices=("search", "final", "ablations", "report", "restore", "records", "all"), default="all",
        help="restore: rebuild the study folder from the records and stop; records: copy the study folder's "
        "records and rewrite the report (safe while a study runs); report: rewrite the report only",
    )
    parser.add_argument("--methods", nargs="*", default=None, help="a subset of the study's methods")
    parser.add_argument("--report", default=None, help=f"report file (default {REPORT.relative_to(HERE.parent)})")
    parser.add_argument(
        "--records", default=None,
        help=f"records folder (default {RECORDS.relative_to(HERE.parent)}; none with --smoke)",
    )
    args = parser.parse_args()
    if args.data_root:
        os.environ[DATA_ROOT_ENV] = str(Path(args.data_root).expanduser())
    study_dir = Path(args.study_dir)
    report = Path(args.report) if args.report else study_dir / "fmnist-lt-tuned-smoke.md" if args.smoke else REPORT
    records = Path(args.records) if args.records else None if args.smoke else RECORDS
    spec = load_study_spec(_spec_tree(args.smoke))
    methods = args.methods or list(spec.methods)
    ablated = "ccsam-released"  # the radius ablation exists for the head-only (released) form

    def report_now() -> None:
        if records is not None:
            export_records(study_dir, records)
        write_report(
            _spec_tree(args.smoke), _spec_tree(False), study_dir, report, ABLATIONS, smoke=args.smoke,
            preface="" if args.smoke else PROVENANCE,
        )

    if args.phase == "records":  # reads the study folder only: no lock
        report_now()
        print(f"records: {records}\nreport: {report}")
        return
    with StudyLock(study_dir):
        if records is not None and records.is_dir():
            restored = restore_study(spec, records, study_dir, variant_overrides=ABLATIONS)
            if any(restored.values()):
                print(f"restored from {records}: {restored['files']} record files, {restored['trials']} "
                      f"trials, {restored['seeds']} finished seeds")
        if args.phase == "restore":
            return
        # Method by method (its search, then its seeds), so that whatever has finished is a complete row.
        for method in methods:
            if args.phase in ("search", "all"):
                run_search(spec, study_dir, method)
                report_now()
            if args.phase in ("final", "all"):
                run_final(spec, study_dir, method)
                report_now()
        if args.phase in ("ablations", "all") and ablated in methods:
            for name, overrides in ABLATIONS.items():
                run_final(spec, study_dir, ablated, variant=name, extra_overrides=overrides,
                          stage1_from=SHARED_STAGE1.get(name))
                report_now()
        report_now()
    print(f"report: {report}")


if __name__ == "__main__":
    main()
