"""Audit: suspected label errors (graph + confident learning) and annotator quality."""

from __future__ import annotations

from labelloop.audit.annotators import (
    Annotations,
    AnnotatorStats,
    Consensus,
    DawidSkeneResult,
    annotator_confusion,
    annotator_report,
    as_annotations,
    cohen_kappa,
    consensus_sample,
    dawid_skene,
    fleiss_kappa,
    fleiss_kappa_from_annotations,
    honeypot_schedule,
    majority_vote,
    pairwise_cohen_kappa,
)
from labelloop.audit.label_errors import (
    AuditResult,
    ConfidentJoint,
    LabelAudit,
    LabelIssue,
    audit_labels,
    confident_joint,
    confident_learning_issues,
    decoy_scores_of,
    graph_label_distribution,
    noise_aware_posterior,
    out_of_fold_probabilities,
    smooth_labels,
    two_groups_p_wrong,
)

__all__ = [
    # label errors
    "AuditResult",
    "ConfidentJoint",
    "LabelAudit",
    "LabelIssue",
    "audit_labels",
    "confident_joint",
    "confident_learning_issues",
    "decoy_scores_of",
    "graph_label_distribution",
    "noise_aware_posterior",
    "out_of_fold_probabilities",
    "smooth_labels",
    "two_groups_p_wrong",
    # annotators
    "Annotations",
    "AnnotatorStats",
    "Consensus",
    "DawidSkeneResult",
    "annotator_confusion",
    "annotator_report",
    "as_annotations",
    "cohen_kappa",
    "consensus_sample",
    "dawid_skene",
    "fleiss_kappa",
    "fleiss_kappa_from_annotations",
    "honeypot_schedule",
    "majority_vote",
    "pairwise_cohen_kappa",
]
