"""Accuracy metrics computed once from logits, identical for every (artifact, runtime) pair."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` largest logits (ties broken stably)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Fraction of samples on which two models predict the same class."""
    return float(np.mean(pred_a == pred_b))


def relative_logit_mse(fp32: np.ndarray, int8: np.ndarray) -> float:
    """Mean squared logit error over the FP32 logits' mean square: a fidelity measure that moves with every
    image, where top-1 (and agreement) move only when a class flips, so small differences between settings show
    with far fewer images."""
    return float(np.mean((fp32 - int8) ** 2) / max(float(np.mean(fp32 ** 2)), 1e-12))


def predictions_digest(preds: np.ndarray) -> str:
    """sha256 of the predicted classes in evaluation-id order (int64, little-endian): two runs predicted
    every image alike exactly when their digests are equal (one machine against a cluster, two machines)."""
    return hashlib.sha256(np.asarray(preds, dtype="<i8").tobytes()).hexdigest()


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def precision_recall_f1(matrix: np.ndarray) -> dict[str, float]:
    """Macro averages over the classes present in the labels or predictions (as scikit-learn does)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    present = (predicted + actual) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    }


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    preds = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, preds, max(num_classes, logits.shape[1]))
    return {
        "samples": int(len(labels)),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        **precision_recall_f1(matrix),
        "confusion_matrix": matrix,
    }
