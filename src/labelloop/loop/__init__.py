"""The loop's decisions, in one place: ``Project``, ``simulate``, the web queue and ``diagnose``
all call these, so the simulation measures what ships.

- :mod:`.heldout`   the one k-fold helper (held-out predictions of labeled items);
- :mod:`.calibrate` calibrated confidence (power / temperature scaling) and its ECE;
- :mod:`.predict`   propagation + classifier head + calibration -> the predictions;
- :mod:`.choose`    what to label next, with the random share, and ``verify`` checks;
- :mod:`.certify`   which machine labels random checks certify, and how many more are needed.

Imports point one way: interfaces -> Project -> loop -> stages (propagate, select, autolabel).
"""

from .calibrate import Calibrator, apply_power, expected_calibration_error, fit_calibrator
from .certify import (
    Certificate,
    candidate_threshold,
    certify,
    coverage_of,
    more_needed,
    pending_region,
    verify_coverage,
    verify_sample,
)
from .choose import Choice, choose, default_explore
from .heldout import fold_ids, heldout_proba
from .predict import Prediction, class_prior, mix_head, predict, random_prior

__all__ = [
    "Calibrator", "apply_power", "expected_calibration_error", "fit_calibrator",
    "Certificate", "candidate_threshold", "certify", "coverage_of", "more_needed", "pending_region", "verify_coverage",
    "verify_sample",
    "Choice", "choose", "default_explore",
    "fold_ids", "heldout_proba",
    "Prediction", "class_prior", "mix_head", "predict", "random_prior",
]
