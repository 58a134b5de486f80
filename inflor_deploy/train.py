"""Training with surrogate gradients (the InfLoR recipe at small scale).

The loss is cross-entropy on the class score, the mean over T of the
output accumulator; gradients flow through the spike function's surrogate
and, for SRIF+MPR, through phi (MPR's whole effect is on training).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from inflor_deploy.data import Dataset
from inflor_deploy.nn.models import ModelConfig, build_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer settings.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Samples per step.
        lr: Adam's initial learning rate (cosine-annealed to 0).
        weight_decay: Adam's L2 penalty.
        seed: Seeds torch and the batch order; same seed, same model.
        threads: torch intra-op threads (CI machines have 2 cores).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the model (eval mode) and its measured figures."""

    model: torch.nn.Module
    test_accuracy: float
    train_accuracy: float
    seconds: float


def time_first(batch: torch.Tensor) -> torch.Tensor:
    """Event sequences ``[B, T, C, H, W]`` as the models take them, ``[T, B, C, H, W]``; images unchanged."""
    return batch.transpose(0, 1).contiguous() if batch.dim() == 5 else batch


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Dataset, batch_size: int | None = None) -> tuple[float, np.ndarray]:
    """Accuracy of `model` on `data` and its predicted labels (batches of 256, fewer when memory is short)."""
    if batch_size is None:
        from inflor_deploy.memory import batch_size_for, layer_graph

        graph = layer_graph(model)
        if data.is_sequence:  # event data: each sample's T frames are held too (memory.SEQUENCE_INPUT_BYTES)
            sequence = dataclasses.replace(graph.input, encoding="sequence")
            graph = graph.replace_nodes(sequence if node is graph.input else node for node in graph)
        batch_size = batch_size_for(graph, "forward", "evaluating one sample", wanted=256, lower="-T")
    model.eval()
    predictions = []
    for start in range(0, len(data), batch_size):
        images = torch.from_numpy(data.images[start : start + batch_size])
        predictions.append(model(time_first(images)).argmax(dim=1).numpy())
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    accuracy = float((predicted == data.labels).mean()) if len(data) else float("nan")
    return accuracy, predicted


def train(
    model_config: ModelConfig,
    train_data: Dataset,
    test_data: Dataset,
    config: TrainConfig = TrainConfig(),
    progress: bool = True,
) -> TrainResult:
    """Train a fresh model of `model_config` on `train_data`; report test accuracy.

    ``test_data`` must be samples the model never trains on (``load_train_test``
    gives such a split for every ``--data`` spec). Event sequences
    ``[N, T, C, H, W]`` train the model on their T frames.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train_data) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    images = torch.from_numpy(train_data.images)
    labels = torch.from_numpy(train_data.labels)
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"train {model_config.arch}", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(train_data), generator=generator)
        total_loss, correct = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            index = order[first : first + config.batch_size]
            scores = model(time_first(images[index]))
            loss = torch.nn.functional.cross_entropy(scores, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(index)
            correct += int((scores.argmax(1) == labels[index]).sum())
        bar.set_postfix(loss=f"{total_loss / len(order):.3f}", train_acc=f"{correct / len(order):.3f}")
    seconds = time.perf_counter() - start
    test_accuracy, _ = evaluate(model, test_data)
    train_accuracy, _ = evaluate(model, train_data)
    return TrainResult(model=model, test_accuracy=test_accuracy, train_accuracy=train_accuracy, seconds=seconds)
