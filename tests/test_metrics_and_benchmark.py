import time

import numpy as np
import pytest

from utils.benchmark import PeakRSS, interleaved_latency
from utils.metrics import agreement, classification_metrics, relative_logit_mse, topk_accuracy


def test_topk_and_agreement():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert agreement(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)


def test_relative_logit_mse_is_the_error_power_over_the_fp32_power():
    fp32 = np.array([[3.0, -1.0], [1.0, 1.0]])  # mean square 3
    assert relative_logit_mse(fp32, fp32) == 0.0
    assert relative_logit_mse(fp32, fp32 + 0.5) == pytest.approx(0.25 / 3)
    assert relative_logit_mse(fp32, -fp32) == pytest.approx(4.0)
    assert relative_logit_mse(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


def test_precision_recall_f1_and_confusion_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    logits = rng.normal(size=(300, 10))
    logits[np.arange(300), labels] += rng.normal(1.0, 1.0, 300)
    ours = classification_metrics(logits, labels, 10)
    preds = logits.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0)
    assert ours["precision_macro"] == pytest.approx(p)
    assert ours["recall_macro"] == pytest.approx(r)
    assert ours["f1_macro"] == pytest.approx(f)
    assert np.array_equal(ours["confusion_matrix"], confusion_matrix(labels, preds, labels=range(10)))


def test_interleaved_latency_orders_fast_and_slow():
    stats = interleaved_latency({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.01)},
                                batch_size=4, warmup=1, rounds=7)
    fast, slow = stats["fast"].summary(), stats["slow"].summary()
    assert fast["rounds"] == slow["rounds"] == 7
    assert slow["p50_ms"] > 5 * fast["p50_ms"] * 0.5 and slow["p50_ms"] >= 9.0
    assert fast["throughput_ips"] == pytest.approx(4 / (fast["p50_ms"] / 1000))
    assert fast["p50_ms"] <= fast["p90_ms"] <= fast["p99_ms"]


def test_peak_rss_sees_an_allocation():
    # Fresh anonymous pages: a numpy array could reuse memory that earlier tests freed but the
    # allocator kept resident (seen once in CI: RSS grew by 0.8 MiB for a 64 MiB array).
    import mmap

    size = 64 * 2**20
    with PeakRSS() as peak:
        block = mmap.mmap(-1, size)
        block.write(b"\x01" * size)  # touch every page
        time.sleep(0.02)
    block.close()
    assert peak.increase_bytes >= 48 * 2**20
