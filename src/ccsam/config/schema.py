"""Typed run configuration: one validated model per component, composed into :class:`RunConfig`.

Defaults live here and only here. Presets (``ccsam/presets/*.yaml``) and command-line overrides
(``stage1.lr=0.05``) are applied on top and the result is validated as a whole, so an unknown key or a
bad value is reported before any work starts.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ccsam.config.base import Section
from ccsam.config.choices import (
    CcsamRadius,
    CcsamStage2,
    Flattening,
    ImbsamOptimizer,
    LwsStage2,
    NoFlattening,
    OptimizerChoice,
    RadiusChoice,
    RetrainStage2,
    SgdOptimizer,
    Stage2Method,
)
from ccsam.config.loss import LossConfig
from ccsam.losses.registry import LOSSES
from ccsam.models.registry import MODELS

#: The data sets ``data.dataset`` can name, listed here once (the readers dispatch on these names).
DatasetName = Literal[
    "digits", "fashion_mnist", "cifar10", "cifar100", "synthetic",
    "imagenet_lt", "places_lt", "inat2018", "list_file", "image_folder",
]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
FILE_DATASETS = ("imagenet_lt", "places_lt", "inat2018", "list_file", "image_folder")  # JPEGs read from disk
LIST_DATASETS = ("imagenet_lt", "places_lt", "inat2018", "list_file")  # the splits are given by list files
OPEN_SET_DATASETS = ("imagenet_lt", "places_lt")  # those with an `_open` list of unknown-class images

#: Config keys that name a run or say where and how fast it runs, never what it computes: a run's label,
#: paths, device and worker / thread / compile settings (seeds of one method differ only in these and
#: ``seed``; ``ccsam.reporting.collect`` and ``ccsam.tuning.study`` compare configs without them).
MACHINE_KEYS: tuple[tuple[str, ...], ...] = (
    ("name",), ("description",), ("out_dir",), ("device",), ("data", "root"), ("data", "cache"),
    ("data", "download"), ("data", "num_workers"), ("runtime", "threads"), ("runtime", "compile"),
)

SamplerChoice = Literal["instance", "class_aware", "class_balanced", "sqrt", "progressive"]


def _epoch_samples_value(value: object) -> object:
    """``dataset``, ``max_class_times_classes`` or a positive int, else one clear error line."""
    if value in ("dataset", "max_class_times_classes") and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError("must be dataset, max_class_times_classes or a positive number of samples")


#: Samples per epoch of a resampling sampler (``ccsam.data.samplers.epoch_sample_count``).
EpochSamples = Annotated[Literal["dataset", "max_class_times_classes"] | int, BeforeValidator(_epoch_samples_value)]
EPOCH_SAMPLES_HELP = (
    "samples per epoch of a resampling sampler: dataset = N, the training-set size (CC-SAM's code); "
    "max_class_times_classes = max_c n_c * C (Kang et al.'s ClassAwareSampler, their cRT / LWS); or a "
    "count. instance sampling takes only dataset"
)
CLASS_VISIT_HELP = (
    "class_aware only: consecutive samples of a class per visit (Kang et al.'s num_samples_cls; 4 in "
    "their cRT configs)"
)


class SyntheticConfig(Section):
    """Shape of the generated data set used by tests (``data.dataset=synthetic``)."""

    num_classes: int = Field(10, ge=2)
    per_class_train: int = Field(100, ge=1)
    per_class_test: int = Field(20, ge=1)
    image_size: int = Field(8, ge=4)
    channels: int = Field(1, ge=1)


class DataConfig(Section):
    """Which data, which long-tailed profile of it, and how batches are made."""

    dataset: DatasetName = "digits"
    root: str | None = Field(None, description="folder holding the data set (CLI --data-root)")
    download: bool = Field(False, description="fetch CIFAR / Fashion-MNIST through torchvision if absent")
    cache: str | None = Field(None, description="read all splits from a `ccsam data export` file (CLI --data-cache)")
    profile: Literal["exp", "step"] = "exp"
    imbalance_ratio: float = Field(100.0, ge=1.0, description="IR = n_max / n_min")
    n_max: int | None = Field(None, ge=1, description="head-class size; default: the smallest full class size")
    subset_seed: int = Field(0, ge=0, description="seed of the long-tailed subset (independent of run.seed)")
    subset_protocol: Literal["per_class_rng", "ldam_drw"] = Field(
        "per_class_rng", description="per_class_rng: one seeded permutation per class; ldam_drw: LDAM-DRW's "
        "IMBALANCECIFAR draw (np.random.seed(subset_seed), per-class shuffle), the literature's CIFAR-LT"
    )
    val_per_class: int = Field(20, ge=0, description="balanced validation images per class, from unused images")
    digits_test_per_class: int = Field(50, ge=1, description="digits only: held-out test images per class")
    augment: Literal["none", "crop", "crop_flip", "crop_flip_cutout", "autoaugment_cutout"] = Field(
        "crop_flip", description="autoaugment_cutout = official 'strong' CIFAR augmentation (use with mixup off)"
    )
    crop_padding: int = Field(4, ge=0)
    cutout_size: int = Field(16, ge=0, description="side of the Cutout hole in pixels")
    autoaugment_fill: int = Field(128, ge=0, le=255, description="fill of AutoAugment's geometric ops")
    loader: Literal["memory", "dataloader"] = Field(
        "memory", description="memory = whole split on the device, batched augmentation; dataloader = workers"
    )
    num_workers: int = Field(2, ge=0, description="dataloader only: worker processes")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    synthetic: SyntheticConfig = SyntheticConfig()
    # Data sets of image files (FILE_DATASETS); they always stream through DataLoader workers.
    list_dir: str | None = Field(None, description="folder of the list files (default: data.root)")
    train_list: str | None = Field(None, description="list_file: the train list ('path label' lines)")
    val_list: str | None = Field(None, description="list_file: the selection list (optional)")
    test_list: str | None = Field(None, description="list_file: the test list")
    selection_per_class: int = Field(
        0, ge=0, description="inat2018 / list_file without val_list: images per class held out of the train "
        "list as the selection split (at most half of a class, drawn with subset_seed); 0 = none"
    )
    image_size: int = Field(224, ge=8, description="train crop; test: resize to size*256/224, centre crop")
    color_jitter: float | None = Field(
        None, ge=0.0, description="ColorJitter(b, c, s) strength; None: the data set's (0.4 ImageNet/Places)"
    )
    decode: Literal["cpu", "gpu"] = Field("cpu", description="JPEG decoding in the workers (cpu) or on CUDA")
    prefetch_factor: int = Field(4, ge=1, description="dataloader: batches each worker prepares ahead")

    @model_validator(mode="after")
    def _file_options(self) -> DataConfig:
        if self.dataset == "list_file" and (self.train_list is None or self.test_list is None):
            raise ValueError("data.dataset=list_file needs data.train_list and data.test_list (val optional)")
        if self.cache is not None and self.dataset in FILE_DATASETS:
            raise ValueError(f"data.cache holds in-memory splits; data.dataset={self.dataset} reads files")
        if self.decode == "gpu" and self.dataset not in FILE_DATASETS:
            raise ValueError(f"data.decode=gpu decodes image files; use it with {', '.join(FILE_DATASETS)}")
        if self.dataset in FILE_DATASETS and self.augment not in ("none", "crop_flip"):
            raise ValueError(f"data.augment={self.augment} is a CIFAR-style augmentation of in-memory images; image "
                             "files use the ImageNet transforms: data.augment=crop_flip (RandomResizedCrop, flip, "
                             "colour jitter) or none")
        return self

    @property
    def has_val_list(self) -> bool:
        """A list data set whose selection split is its own val list (ImageNet-LT, Places-LT, a list_file
        with ``val_list``); the other list data sets carve it from the train list
        (``selection_per_class``), the in-memory ones draw it from unused images (``val_per_class``)."""
        return self.dataset in OPEN_SET_DATASETS or (self.dataset == "list_file" and self.val_list is not None)


class ModelConfig(Section):
    """Backbone architecture and the classifier head on top of it."""

    arch: str = Field("resnet32", description="a key of ccsam.models.MODELS")
    width: int = Field(32, ge=1, description="models with uses_width (small_cnn): channels of the first block")
    bias: bool = True
    head: Literal["linear", "cosine"] = Field("linear", description="cosine: s * cos(f, w_c), no bias")
    head_scale: float = Field(1.0, gt=0.0, description="cosine head scale s (1 for LDAM / GCL, which scale)")
    head_init: Literal["default", "kaiming_normal"] = Field(
        "default", description="initial head weights: default = nn.Linear's, U(+-1/sqrt(d)); "
        "kaiming_normal = N(0, 2/d), LDAM-DRW's resnet32 linear head (bias keeps nn.Linear's)"
    )
    pretrained: str | None = Field(
        None, description="state-dict file of backbone weights (torchvision names; weights_only load), "
        "or with model.download=true a torchvision weights name such as IMAGENET1K_V1"
    )
    download: bool = Field(False, description="consent to fetch the torchvision weights model.pretrained names")
    pretrained_head: bool = Field(False, description="also load the weights' fc into the head (same shapes)")
    require_pretrained: bool = Field(
        False, description="refuse to train without model.pretrained (the Places-LT protocol starts from ImageNet "
        "weights); set false to train from scratch on purpose"
    )
    reinit: tuple[str, ...] = Field(
        (), description="backbone modules (dotted names, e.g. layer4.2) given a fresh initialisation after the "
        "pretrained weights load (PyTorch's default, as a newly built module has)"
    )
    train_from: str | None = Field(
        None, description="the backbone module (e.g. layer4.2) from which on the backbone trains: every parameter "
        "before it is frozen and its BatchNorm kept in eval mode (OLTR / MiSLAS / GCL Places-LT); None: all"
    )

    @field_validator("arch")
    @classmethod
    def _registered_arch(cls, arch: str) -> str:
        if arch not in MODELS:
            close = difflib.get_close_matches(arch, list(MODELS), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"unknown architecture; {hint}choose one of {', '.join(sorted(MODELS))}")
        return arch


class ScheduleFields(Section):
    """Optimiser and learning-rate schedule of one stage (SGD with momentum)."""

    epochs: int = Field(200, ge=0)
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(2e-4, ge=0.0)
    nesterov: bool = False
    schedule: Literal["official_step", "cosine", "constant"] = "official_step"
    warmup_epochs: int = Field(5, ge=0)
    warmup_start_factor: float = Field(1.0 / 3.0, ge=0.0, le=1.0)
    milestones: tuple[int, ...] = (160, 180)
    gamma: float = Field(0.1, gt=0.0)
    # Naive flattening (spec 5.3), per stage: the talk's SWA / SN / GP / MP with subscript 1, 2 or 1,2.
    flattening: Flattening = Field(
        NoFlattening(), description="none | gp: gradient-norm penalty (finite difference) | mp: model "
        "perturbation (F2M); replaces the optimiser's update"
    )
    spectral_norm: bool = Field(False, description="SN: stage 1 all conv/linear layers, stage 2 the head")
    swa: bool = Field(False, description="SWA: average weights once per epoch over the last part of the stage")
    swa_start: float = Field(0.75, ge=0.0, lt=1.0, description="SWA: fraction of the stage before averaging")

    @model_validator(mode="after")
    def _milestones_increase(self) -> ScheduleFields:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must increase, got {list(self.milestones)}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0 (Nesterov momentum without momentum is undefined); "
                             "set momentum or nesterov=false")
        return self


class Stage1Config(ScheduleFields):
    """Stage 1: joint training of backbone and head (ERM, or CC-SAM's class-conditional objective).

    ``method=ccsam`` minimises (1 - flat_ratio) * clean loss + flat_ratio * mean_i CE(perturbed logits_i, y_i)
    (spec section 1.3; under mixup ``y_i`` is the un-permuted label, or with ``flat_targets=mixup`` the
    mixup loss); ``method=erm`` is plain (mixup-aware) cross-entropy.
    """

    method: Literal["erm", "ccsam"] = "ccsam"
    loss: LossConfig = LossConfig()
    sampler: SamplerChoice = "instance"
    epoch_samples: EpochSamples = Field("dataset", description=EPOCH_SAMPLES_HELP)
    class_visit_samples: int = Field(1, ge=1, description=CLASS_VISIT_HELP)
    mixup_alpha: float = Field(0.0, ge=0.0, description="Beta(alpha, alpha) mixup; 0 turns mixup off")
    flat_ratio: float = Field(0.3, ge=0.0, le=1.0, description="beta: weight of the class-conditional loss")
    flat_targets: Literal["y_a", "mixup"] = Field(
        "y_a", description="targets of the class-conditional loss under mixup: y_a (the released code: the "
        "un-permuted label alone, spec 1.3) | mixup (lam * loss(., y_a) + (1 - lam) * loss(., y_b), as the clean "
        "loss)"
    )
    noise_scale: float = Field(1e-6, ge=0.0, description="s: multiplier of the closed-form radius")
    radius: RadiusChoice = Field(
        CcsamRadius(), description="ablation: ccsam (class radius + class direction) | dir_only (constant "
        "|eps| = rho along the class direction) | mag_only (class radius, random direction) | none"
    )
    perturb_scope: Literal["head", "last_k", "all"] = Field(
        "head", description="parameters perturbed per class: head (closed form), last_k blocks + head, all"
    )
    perturb_last_k: int = Field(1, ge=1, description="last_k: number of backbone blocks")
    class_pass_bn: Literal["class_rows", "batch"] = Field(
        "class_rows", description="last_k / all: BatchNorm statistics of the per-class passes: class_rows "
        "(each class's own rows) | batch (the clean pass's whole-batch statistics; each process's own under torchrun "
        "without runtime.sync_bn)"
    )
    optimizer: OptimizerChoice = Field(
        SgdOptimizer(), description="sgd | sam {rho} | asam {rho, eta} | imbsam {rho, tail_threshold, tail_weight}"
    )


class Stage2Config(ScheduleFields):
    """Stage 2: head-only re-training on class-balanced batches against adversarial features."""

    method: Stage2Method = Field(
        CcsamStage2(), description="ccsam {up_limit, div, feature_step}: adversarial features | retrain "
        "{loss, reinit_head, lws, head_lr_factor}: head (cRT, GCL; with lws: MiSLAS) | lws {loss}: per-class "
        "scales"
    )
    train_bn: bool = Field(False, description="also train BatchNorm affine parameters (MiSLAS's shift "
                                                 "learning is bn_mode=train alone: running statistics)")
    epochs: int = Field(0, ge=0, description="0 turns stage 2 off")
    lr: float = Field(0.01, gt=0.0)
    schedule: Literal["official_step", "cosine", "constant"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    milestones: tuple[int, ...] = ()
    sampler: SamplerChoice = "class_aware"
    epoch_samples: EpochSamples = Field("dataset", description=EPOCH_SAMPLES_HELP)
    class_visit_samples: int = Field(1, ge=1, description=CLASS_VISIT_HELP)
    bn_mode: Literal["train", "eval"] = Field("train", description="train = official (BN stats drift)")
    mixup_alpha: float = Field(
        0.0, ge=0.0, description="Beta(alpha, alpha) mixup of the stage-2 images (retrain / lws; GCL's CIFAR stage 2 "
        "uses 1.0); 0 turns it off"
    )
    batch_size: int | None = Field(
        None, ge=1, description="stage-2 global batch size; None: data.batch_size (e.g. cRT's 512 on ImageNet-LT "
        "after a stage 1 at 256)"
    )
    init_from: Literal["last", "best_val"] = Field("last", description="stage-1 weights stage 2 starts from")

    @model_validator(mode="after")
    def _head_retraining_options(self) -> Stage2Config:
        """Options only a head re-training stage 2 (retrain / lws) reads, refused with CC-SAM's."""
        if not isinstance(self.method, CcsamStage2):
            return self
        if self.mixup_alpha:
            raise ValueError("stage2.mixup_alpha mixes the images for stage2.method=retrain|lws; CC-SAM's stage 2 "
                             "scores each feature against its own label, so set stage2.mixup_alpha=0 with it")
        if self.train_bn:
            raise ValueError("stage2.train_bn=true needs stage2.method=retrain|lws: CC-SAM's stage 2 "
                             "computes the features without gradients, so BatchNorm would never train")
        return self

    @property
    def scales_head(self) -> bool:
        """Whether stage 2 wraps the head in per-class LWS scales: ``method=lws`` (scales alone) or
        ``retrain`` with ``lws=true`` (scales and head, MiSLAS)."""
        return isinstance(self.method, LwsStage2) or (isinstance(self.method, RetrainStage2) and self.method.lws)

    @property
    def loss(self) -> LossConfig | None:
        """The loss of ``retrain`` / ``lws`` (``stage2.method.loss``); ``None`` for ``ccsam``, whose
        adversarial objective computes its own."""
        return None if isinstance(self.method, CcsamStage2) else self.method.loss


class EvalConfig(Section):
    """Class groups by training-set size, and calibration bins."""

    many_threshold: int = Field(100, ge=0, description="many-shot: n_c > many_threshold")
    few_threshold: int = Field(20, ge=0, description="few-shot: n_c < few_threshold")
    ece_bins: int = Field(15, ge=1)
    confusion_max_classes: int = Field(
        400, ge=0, description="results.json holds the C x C test confusion matrix up to this many classes "
        "(Places-LT's 365 yes; ImageNet-LT's 1000 and iNat's 8142, 66M entries, only if raised)"
    )
    logit_scale: float = Field(
        1.0, gt=0.0, description="multiply logits at prediction (a cosine head trained with a loss that scales "
        "its logits, e.g. LDAM s = 30, predicts with cosines: set the loss's scale for meaningful ECE / NLL)"
    )
    posthoc_tau: float = Field(0.0, ge=0.0, description="post-hoc logit adjustment z - tau log pi at prediction")
    tau_norm: float | None = Field(None, ge=0.0, description="tau-normalise the head's class weights at prediction")
    # Open long-tailed recognition (OLTR protocol, spec 3.3): the `_open` images join the test set as label -1.
    open_set: bool = Field(False, description="also report OLTR open-set metrics on test + the `_open` list")
    open_threshold: float = Field(0.1, ge=0.0, le=1.0, description="predict -1 when max softmax < it")
    open_f_measure: Literal["oltr", "oltr_2019"] = Field(
        "oltr", description="oltr: rejected known samples are false positives (OLTR since 2020-01-29); "
        "oltr_2019: they are not counted"
    )

    @model_validator(mode="after")
    def _ordered(self) -> EvalConfig:
        if self.few_threshold > self.many_threshold:
            raise ValueError(
                f"few_threshold ({self.few_threshold}) must not exceed many_threshold ({self.many_threshold})"
            )
        return self


class RuntimeConfig(Section):
    """How the run uses the hardware; none of these change the method, only speed and numerics."""

    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA (fp32 master weights), fp32 on the CPU"
    )
    channels_last: bool | None = Field(None, description="None (auto) = on for CUDA, off on the CPU")
    cudnn_benchmark: bool = True
    compile: bool = Field(False, description="torch.compile the backbone (CLI --compile; donated buffers "
                                             "off, for the updates that retain the graph)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    sync_bn: bool = Field(
        False, description="under torchrun: BatchNorm statistics of the global batch (SyncBatchNorm)"
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="NaN / inf loss: stop the run (exit 3, last good checkpoint kept) or skip the step",
    )


class LoggingConfig(Section):
    """What a run records besides ``metrics.jsonl`` and the console line."""

    tensorboard: bool = Field(False, description="TensorBoard scalars in RUN_DIR/tensorboard (extra [tb])")


class RunConfig(Section):
    """Everything one training run needs; written resolved into the run folder as ``config.yaml``."""

    name: str = "run"
    description: str = ""
    seed: int = Field(0, ge=0, description="training seed: initialisation, sampling, augmentation, mixup")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto, cpu, cuda, cuda:N")
    out_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:
        cosine = self.model.head == "cosine"
        stage2_loss = self.stage2.loss if self.stage2.epochs else None
        for stage, loss in (("stage1", self.stage1.loss), ("stage2.method", stage2_loss)):
            if loss is not None and LOSSES[loss.name].needs_cosine_head and not cosine:
                raise ValueError(f"{stage}.loss.name={loss.name} needs model.head=cosine (with model.head_scale=1)")
        if cosine and self.stage1.method == "ccsam" and self.stage1.perturb_scope == "head":
            raise ValueError("stage1.method=ccsam with stage1.perturb_scope=head needs model.head=linear (its closed "
                             "form is for a linear head); stage1.perturb_scope=last_k|all perturb any head")
        method, scales = self.stage2.method, self.stage2.scales_head
        if self.stage2.epochs and cosine and (method.name == "ccsam" or scales):
            joint = " with lws=true" if isinstance(method, RetrainStage2) else ""
            raise ValueError(f"stage2.method={method.name}{joint} needs model.head=linear")
        if self.stage2.epochs and self.stage2.spectral_norm and scales:
            raise ValueError("stage2.spectral_norm normalises a linear head, but LWS scales it per class "
                             "(stage2.method=lws, or retrain with lws=true); drop one of them")
        if self.model.train_from is not None and self.stage1.swa:
            raise ValueError("stage1.swa re-estimates every BatchNorm layer's statistics, model.train_from keeps "
                             "the frozen prefix's fixed; drop one of them")
        s1 = self.stage1
        if s1.method == "erm" and (s1.perturb_scope != "head" or not isinstance(s1.radius, CcsamRadius)):
            raise ValueError("stage1.perturb_scope and stage1.radius shape CC-SAM's perturbation; with "
                             "stage1.method=erm they would do nothing: set stage1.method=ccsam or drop them")
        if self.eval.open_set and self.data.dataset not in OPEN_SET_DATASETS:
            raise ValueError(f"eval.open_set=true needs a data set with an `_open` list "
                             f"({', '.join(OPEN_SET_DATASETS)}), not data.dataset={self.data.dataset}")
        if cosine and self.model.pretrained_head:
            raise ValueError("model.pretrained_head=true loads a linear classifier; use model.head=linear")
        if self.model.pretrained_head and self.model.head_init != "default":
            raise ValueError("model.pretrained_head=true loads the head; model.head_init would re-draw it")
        if cosine and self.eval.tau_norm is not None:
            raise ValueError("eval.tau_norm needs model.head=linear")
        if isinstance(self.stage1.optimizer, ImbsamOptimizer) and self.stage1.method == "ccsam":
            raise ValueError("stage1.optimizer=imbsam works with stage1.method=erm")
        if self.stage1.perturb_scope != "head" and not isinstance(self.stage1.radius, CcsamRadius):
            raise ValueError("stage1.radius ablations are implemented for stage1.perturb_scope=head")
        if self.stage2.epochs and self.stage2.init_from == "best_val":
            self._check_best_val_start()
        if self.total_epochs == 0:
            raise ValueError("stage1.epochs + stage2.epochs is 0, so nothing would be trained; "
                             "set stage1.epochs >= 1")
        if not isinstance(s1.flattening, NoFlattening) and not isinstance(s1.optimizer, SgdOptimizer):
            raise ValueError("stage1.flattening (gp / mp) replaces the update; use it with stage1.optimizer=sgd")
        self._check_sampler_options()
        return self

    def _check_sampler_options(self) -> None:
        """``epoch_samples`` needs a resampling sampler, ``class_visit_samples`` the class-aware one, and
        a counted epoch at least one batch."""
        for number, prefix, stage in ((1, "stage1", self.stage1), (2, "stage2", self.stage2)):
            if stage.sampler == "instance" and stage.epoch_samples != "dataset":
                raise ValueError(
                    f"{prefix}.epoch_samples={stage.epoch_samples} needs a resampling {prefix}.sampler "
                    f"(class_aware, class_balanced, sqrt, progressive): instance sampling is one permutation "
                    f"of the N training samples; set {prefix}.epoch_samples=dataset or change the sampler"
                )
            if stage.class_visit_samples != 1 and stage.sampler != "class_aware":
                raise ValueError(
                    f"{prefix}.class_visit_samples={stage.class_visit_samples} is for {prefix}.sampler="
                    f"class_aware, not {stage.sampler}; set {prefix}.class_visit_samples=1 or use class_aware"
                )
            batch, batch_key = self.batch_size_of(number), self.batch_size_key(number)
            if isinstance(stage.epoch_samples, int) and stage.epoch_samples < batch:
                raise ValueError(
                    f"{prefix}.epoch_samples={stage.epoch_samples} is less than {batch_key}="
                    f"{batch}, so every epoch would have no step (the last incomplete batch "
                    f"is dropped); raise {prefix}.epoch_samples"
                )

    def _check_best_val_start(self) -> None:
        """``stage2.init_from=best_val`` needs stage-1 epochs scored on a selection split, and would drop
        stage-1 SWA's averaged weights (``best_val.pt`` holds the best single epoch)."""
        data, s1 = self.data, self.stage1
        fix = "or set stage2.init_from=last"
        if data.dataset in LIST_DATASETS and not data.has_val_list and data.selection_per_class == 0:
            raise ValueError(f"stage2.init_from=best_val needs a selection split: {data.dataset} has no val "
                             f"list, so set data.selection_per_class (held out of the train list) {fix}")
        if data.dataset not in LIST_DATASETS and data.val_per_class == 0:
            raise ValueError(f"stage2.init_from=best_val needs a validation split, but data.val_per_class=0; set "
                             f"data.val_per_class >= 1 {fix}")
        if s1.epochs == 0:
            raise ValueError(f"stage2.init_from=best_val selects a stage-1 epoch, but stage1.epochs=0 {fix}")
        if s1.swa:
            raise ValueError("stage2.init_from=best_val would start stage 2 from the best single stage-1 epoch, "
                             "not stage-1 SWA's averaged weights; set stage2.init_from=last or drop stage1.swa")

    def batch_size_of(self, stage: int) -> int:
        """The global batch size of stage ``stage`` (1 or 2): ``data.batch_size``, or ``stage2.batch_size``
        where set."""
        return self.stage2.batch_size if stage == 2 and self.stage2.batch_size is not None else self.data.batch_size

    def batch_size_key(self, stage: int) -> str:
        """The config key that sets :meth:`batch_size_of` ``(stage)``, for messages."""
        return "stage2.batch_size" if stage == 2 and self.stage2.batch_size is not None else "data.batch_size"

    @property
    def total_epochs(self) -> int:
        """Stage-1 plus stage-2 epochs: the global epoch counter runs over both."""
        return self.stage1.epochs + self.stage2.epochs
