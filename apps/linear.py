"""Linear classifiers on latent codes: the one classifier behind InterfaceGAN boundaries
(``directions.fit_boundary``) and the quality-code probe (``evaluation.probe``, paper Sec. 4.6).

A multinomial logistic regression with L2 weight decay on z-scored features, fitted full-batch
with L-BFGS in float64 (deterministic; no scikit-learn needed). InterfaceGAN (Shen et al., CVPR
2020, Sec. 2.2) fits a linear SVM; any linear separator gives a hyperplane normal, and logistic
regression gives the same direction on separable data up to the margin's definition.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from dnnlib.util import UserError

DEFAULT_L2 = 1e-3            # weight decay on the standardized weights
DEFAULT_MAX_ITER = 200       # L-BFGS iterations
DEFAULT_TEST_FRACTION = 0.25


@dataclasses.dataclass
class LinearClassifier:
    """``logits = ((x - mean) / scale) @ weight.T + bias``; classes are ``classes[k]``."""
    mean: np.ndarray       # [D]
    scale: np.ndarray      # [D]
    weight: np.ndarray     # [K, D]
    bias: np.ndarray       # [K]
    classes: np.ndarray    # [K] original label values

    def logits(self, x: np.ndarray) -> np.ndarray:
        # x: [N, D] -> [N, K]
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.logits(x).argmax(axis=1)]

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == np.asarray(y)).mean()) if len(y) else float("nan")

    def binary_normal(self) -> np.ndarray:
        """Unit normal in the input space of the boundary between a two-class problem's classes,
        pointing from ``classes[0]`` to ``classes[1]``. [D]"""
        if len(self.classes) != 2:
            raise ValueError("binary_normal needs exactly two classes")
        n = (self.weight[1] - self.weight[0]) / self.scale   # undo the standardization
        return n / max(np.linalg.norm(n), 1e-12)


def fit_linear(x: np.ndarray, y: Sequence, l2: float = DEFAULT_L2, max_iter: int = DEFAULT_MAX_ITER) -> LinearClassifier:
    """Fit a multinomial logistic regression. x: [N, D]; y: [N] labels (any hashable values)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise UserError(f"need features [N, D] and N labels, got {x.shape} and {y.shape}")
    classes, idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise UserError(f"need at least two classes to fit a classifier, got {len(classes)}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    xt = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(idx.astype(np.int64))
    weight = torch.zeros([len(classes), x.shape[1]], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros([len(classes)], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ weight.T + bias, yt) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return LinearClassifier(mean, scale, weight.detach().numpy(), bias.detach().numpy(), classes)


def train_test_split(n: int, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
                     labels: Optional[Sequence] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split into (train indices, test indices); stratified by ``labels`` when given, so
    every class is in both parts whenever it has at least two members."""
    if not 0 < test_fraction < 1:
        raise UserError(f"test fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.RandomState(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(np.asarray(labels) == c)
                                                    for c in np.unique(labels)]
    train, test = [], []
    for g in groups:
        g = g[rng.permutation(len(g))]
        k = int(round(len(g) * test_fraction))
        k = min(max(k, 1 if len(g) >= 2 else 0), len(g) - 1)
        test.append(g[:k])
        train.append(g[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def fit_and_evaluate(x: np.ndarray, y: Sequence, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
                     l2: float = DEFAULT_L2) -> Tuple[LinearClassifier, Dict[str, float]]:
    """Split, fit on the train part, report accuracies (and chance = majority-class rate)."""
    y = np.asarray(y)
    tr, te = train_test_split(len(y), test_fraction, seed, labels=y)
    if len(te) == 0 or len(tr) == 0:
        raise UserError(f"too few samples ({len(y)}) for a train/test split")
    clf = fit_linear(x[tr], y[tr], l2=l2)
    _, counts = np.unique(y[te], return_counts=True)
    stats = {"train_accuracy": clf.accuracy(x[tr], y[tr]), "test_accuracy": clf.accuracy(x[te], y[te]),
             "chance": float(counts.max() / counts.sum()), "n_train": int(len(tr)), "n_test": int(len(te)),
             "num_classes": int(len(clf.classes))}
    return clf, stats
