"""Training: the pure step, the loop, optimizers and checkpoints."""

from ndwork.training.trainer import (
    TrainingDiverged,
    TrainState,
    loss_and_grad,
    predict_windows,
    train,
)

__all__ = ["TrainState", "TrainingDiverged", "loss_and_grad", "predict_windows", "train"]
