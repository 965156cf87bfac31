"""Evaluation metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from asif_vdb.maths.metrics import (
    confusion_matrix,
    per_class_accuracy,
    ranked,
    recall_at_k,
    topk_accuracy,
)


def test_topk_accuracy_by_hand() -> None:
    scores = np.array([
        [0.9, 0.1, 0.0],   # true 0: rank 1
        [0.5, 0.2, 0.3],   # true 1: rank 3
        [0.2, 0.3, 0.5],   # true 0: rank 3
        [0.1, 0.7, 0.2],   # true 2: rank 2
    ])
    labels = [0, 1, 0, 2]
    assert topk_accuracy(scores, labels, ks=(1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 1.0}
    # k beyond the number of classes counts every row
    assert topk_accuracy(scores, labels, ks=(5,)) == {5: 1.0}


def test_ties_go_to_the_lowest_index() -> None:
    scores = np.array([[0.5, 0.5, 0.1], [0.0, 0.0, 0.0]])
    assert ranked(scores).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert ranked(scores, 1).tolist() == [[0], [0]]
    assert topk_accuracy(scores, [1, 0], ks=(1,)) == {1: 0.5}


def test_confusion_and_per_class() -> None:
    c = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4)
    assert c.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(c)
    assert acc[:3].tolist() == [0.5, 1.0, pytest.approx(2 / 3)]
    assert np.isnan(acc[3])
    with pytest.raises(ValueError, match="outside 0..3"):
        confusion_matrix([4], [0], 4)
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        confusion_matrix([0, 1], [0], 4)


def test_recall_at_k_single_and_multiple_relevant() -> None:
    retrieved = [[7, 3, 5], [1, 2, 3], [9], []]
    # text -> image: one relevant image per query
    assert recall_at_k(retrieved, [3, 1, 4, 0], ks=(1, 2, 10)) == {1: 0.25, 2: 0.5, 10: 0.5}
    # image -> text: any of the image's captions counts
    relevant = [{5, 6}, {3, 30}, {9, 10}, {1}]
    assert recall_at_k(retrieved, relevant, ks=(1, 3)) == {1: 0.25, 3: 0.75}
    assert recall_at_k(np.array([[2, 0], [0, 2]]), [0, 0], ks=(1, 2)) == {1: 0.5, 2: 1.0}
    with pytest.raises(ValueError, match="2 retrieved lists but 1"):
        recall_at_k([[1], [2]], [1])


def test_topk_accuracy_input_errors() -> None:
    with pytest.raises(ValueError, match="3 score rows but 2 labels"):
        topk_accuracy(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="no rows to evaluate"):
        topk_accuracy(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="2-D"):
        ranked(np.zeros(3))
