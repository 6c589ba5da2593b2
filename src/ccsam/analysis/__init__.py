"""Motivation analyses of ccsam-spec §5: random weight perturbation, loss landscapes, Hessian sharpness.

Pure library functions that take a trained model and a data split (in-memory
:class:`ccsam.data.arrays.ImageArrays`, or :class:`ccsam.data.image_files.ImageFiles` decoded batch by
batch with the test transform) and return JSON-ready dicts / lists; they write no files and leave the
model's weights and train/eval flags as they found them.

- :mod:`ccsam.analysis.directions`: filter-normalised random directions (Li et al., NeurIPS 2018) and
  the bit-exactly restored in-place perturbation :func:`perturbed`.
- :mod:`ccsam.analysis.probe`: loss change under random weight noise (spec §5.1; Keskar et al. 2017,
  Jiang et al. 2020), overall and per shot group.
- :mod:`ccsam.analysis.landscape`: 1-D / 2-D loss landscapes (spec §5.2).
- :mod:`ccsam.analysis.hessian`: Hessian-vector products, top eigenvalue, per-class sharpness.
"""

from ccsam.analysis.directions import perturbed, random_direction
from ccsam.analysis.hessian import (
    hessian_vector_product,
    largest_hessian_eigenvalue,
    per_class_sharpness,
    top_hessian_eigenvalue,
)
from ccsam.analysis.landscape import loss_curve_1d, loss_surface_2d
from ccsam.analysis.probe import (
    ProbeResult,
    loss_per_class,
    probe_generator,
    weight_noise,
    weight_perturbation_probe,
)

__all__ = [
    "ProbeResult",
    "hessian_vector_product",
    "largest_hessian_eigenvalue",
    "loss_curve_1d",
    "loss_per_class",
    "loss_surface_2d",
    "per_class_sharpness",
    "perturbed",
    "probe_generator",
    "random_direction",
    "top_hessian_eigenvalue",
    "weight_noise",
    "weight_perturbation_probe",
]
