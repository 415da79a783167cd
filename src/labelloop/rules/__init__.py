"""Weak supervision: labeling functions (rules) as noisy annotators of their own source.

A rule (``contains`` keywords, a ``where`` expression over item metadata, or a ``python``
function) votes for a class or abstains on every item (:mod:`.kinds`); a label model combines
the votes without ground truth (:mod:`.label_model`: Dawid–Skene or majority vote); its output
enters propagation as soft seeds that human labels overrule (``rule_trust``); :mod:`.report`
measures each rule. Storage (rules with provenance, votes apart from annotations) is the
store's; the user actions are ``Project.add_rule`` and friends.
"""

from __future__ import annotations

from .expression import Expression
from .kinds import KINDS, RuleItem, compile_rule, evaluate, keyword_pattern, python_functions, validate_rule_name
from .label_model import METHODS, LabelModel, fit_label_model, seed_with_rules
from .report import rule_stats

__all__ = [
    "KINDS",
    "METHODS",
    "Expression",
    "LabelModel",
    "RuleItem",
    "compile_rule",
    "evaluate",
    "fit_label_model",
    "keyword_pattern",
    "python_functions",
    "rule_stats",
    "seed_with_rules",
    "validate_rule_name",
]
