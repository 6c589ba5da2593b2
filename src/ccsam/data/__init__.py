"""Data: readers, long-tailed profiles and splits, samplers, batched augmentation, in-memory batches."""

from ccsam.data.arrays import ImageArrays
from ccsam.data.build import LongTailData, build_data
from ccsam.data.memory_loader import AugmentSpec, InMemoryLoader
from ccsam.data.profiles import long_tail_counts
from ccsam.data.readers import DatasetNotFoundError, read_dataset
from ccsam.data.samplers import (
    ClassAwareSampler,
    ClassBalancedSampler,
    InstanceSampler,
    ProgressiveSampler,
    SquareRootSampler,
    build_sampler,
)
from ccsam.data.splits import SplitManifest, build_split

__all__ = [
    "AugmentSpec",
    "ClassAwareSampler",
    "ClassBalancedSampler",
    "DatasetNotFoundError",
    "ImageArrays",
    "InMemoryLoader",
    "InstanceSampler",
    "LongTailData",
    "ProgressiveSampler",
    "SplitManifest",
    "SquareRootSampler",
    "build_data",
    "build_sampler",
    "build_split",
    "long_tail_counts",
    "read_dataset",
]
