"""The classifiers' data and their training: the same weights, to the bit, on every machine.

A ZK subnet serves a small classifier trained at first use on a dataset that ships with
scikit-learn (``sklearn.datasets.load_*`` reads files inside the package: no download). Every
validator trains its own copy and must arrive at the very circuit the miners prove, so training
is deterministic by construction:

- the split into training and held-out rows is a permutation from ``RandomState(seed)`` (numpy
  keeps that stream frozen across versions); validators draw probes from the held-out rows;
- training is full-batch Adam in float64 from a ``RandomState`` initialisation, a fixed number
  of steps, no threads, no data order to shuffle;
- the feature standardisation is folded into the first layer, so the network reads the raw
  measurements a user sends (and the proof's public input is exactly that row);
- every weight is then rounded to a multiple of ``2**-PARAM_SCALE``, the fixed-point grid EZKL
  quantises parameters to. Float noise between BLAS builds (~1e-15) cannot move a weight across
  a grid step in practice, and the circuit's parameters are the ONNX weights exactly, with no
  second rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "PARAM_SCALE",
    "Dataset",
    "Weights",
    "accuracy",
    "forward",
    "load_dataset",
    "train",
]

#: EZKL's fixed-point scale for inputs and parameters (values are multiples of 2**-8).
PARAM_SCALE = 8


@dataclass(frozen=True)
class _Recipe:
    loader: str
    hidden: int
    seed: int
    holdout: int
    steps: int = 200
    learning_rate: float = 0.03


#: The datasets a ``classify:<name>`` spec can name, with how each is trained.
DATASETS: dict[str, _Recipe] = {
    "iris": _Recipe(loader="load_iris", hidden=8, seed=0, holdout=30),
}


@dataclass(frozen=True)
class Dataset:
    """A dataset's rows (float64), labels, names, and the fixed train / held-out split."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    feature_names: list[str]
    label_names: list[str]
    train_rows: np.ndarray
    holdout_rows: np.ndarray

    @property
    def width(self) -> int:
        return int(self.features.shape[1])

    @property
    def classes(self) -> int:
        return len(self.label_names)

    def holdout(self, index: int) -> list[float]:
        """Held-out row ``index`` (modulo their number) as a list of floats."""
        row = self.holdout_rows[index % len(self.holdout_rows)]
        return [float(v) for v in self.features[row]]


@dataclass(frozen=True)
class Weights:
    """A one-hidden-layer ReLU network on raw features: ``relu(x @ w1 + b1) @ w2 + b2``."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}


def load_dataset(name: str) -> Dataset:
    """Load a dataset named in `DATASETS` (offline). Raises KeyError for an unknown name."""
    recipe = DATASETS[name]
    from sklearn import datasets

    bunch: Any = getattr(datasets, recipe.loader)()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.RandomState(recipe.seed).permutation(len(labels))
    return Dataset(
        name=name,
        features=features,
        labels=labels,
        feature_names=[str(n) for n in bunch.feature_names],
        label_names=[str(n) for n in bunch.target_names],
        train_rows=np.sort(order[recipe.holdout :]),
        holdout_rows=order[: recipe.holdout],
    )


def forward(weights: Weights, x: np.ndarray) -> np.ndarray:
    """The network's scores (logits) for rows ``x``, in float64."""
    hidden = np.maximum(x @ weights.w1.astype(np.float64) + weights.b1, 0.0)
    return np.asarray(hidden @ weights.w2.astype(np.float64) + weights.b2)


def accuracy(weights: Weights, data: Dataset, rows: np.ndarray) -> float:
    """Fraction of ``rows`` whose argmax score is the true label."""
    predicted = forward(weights, data.features[rows]).argmax(axis=1)
    return float((predicted == data.labels[rows]).mean())


def _round(values: np.ndarray) -> np.ndarray:
    step = 2.0**PARAM_SCALE
    return (np.round(values * step) / step).astype(np.float32)


def train(name: str) -> tuple[Dataset, Weights]:
    """Train the classifier for dataset ``name`` (see the module docstring for why the result
    is bit-identical everywhere). Takes well under a second."""
    recipe = DATASETS[name]
    data = load_dataset(name)
    x = data.features[data.train_rows]
    y = data.labels[data.train_rows]
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    z = (x - mean) / std
    onehot = np.eye(data.classes)[y]

    rng = np.random.RandomState(recipe.seed)
    params = [
        rng.randn(data.width, recipe.hidden) * np.sqrt(2.0 / data.width),
        np.zeros(recipe.hidden),
        rng.randn(recipe.hidden, data.classes) * np.sqrt(1.0 / recipe.hidden),
        np.zeros(data.classes),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, recipe.steps + 1):
        w1, b1, w2, b2 = params
        pre = z @ w1 + b1
        hidden = np.maximum(pre, 0.0)
        logits = hidden @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        d_logits = (probs - onehot) / len(y)
        d_hidden = (d_logits @ w2.T) * (pre > 0)
        grads = [z.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_logits, d_logits.sum(axis=0)]
        for i, grad in enumerate(grads):
            moments[i] = beta1 * moments[i] + (1 - beta1) * grad
            squares[i] = beta2 * squares[i] + (1 - beta2) * grad * grad
            corrected_m = moments[i] / (1 - beta1**step)
            corrected_v = squares[i] / (1 - beta2**step)
            params[i] = params[i] - recipe.learning_rate * corrected_m / (
                np.sqrt(corrected_v) + eps
            )
    w1, b1, w2, b2 = params
    # fold the standardisation in: ((x - mean) / std) @ w1 + b1 == x @ (w1 / std) + b1'
    folded_w1 = w1 / std[:, None]
    folded_b1 = b1 - (mean / std) @ w1
    weights = Weights(_round(folded_w1), _round(folded_b1), _round(w2), _round(b2))
    return data, weights
