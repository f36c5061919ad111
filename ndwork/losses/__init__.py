"""Training and validation losses, named and parametrized as in NeuralForecast 3.3.

A loss sees the model's raw output (B, h, outputsize_multiplier) in three places:
training (`loss(y_hat, batch)`, a scalar tensor), forecasting (`loss.forecast`, the
output columns `output_names` in the data's scale) and validation (`loss.value`, on
forecasts in the data's scale).
"""

from ndwork.losses.distributions import GMM, NBMM, PMM, DistributionLoss
from ndwork.losses.implicit import HuberIQLoss, IQLoss
from ndwork.losses.point import (
    MAE,
    MAPE,
    MASE,
    MSE,
    RMSE,
    SMAPE,
    Accuracy,
    FreDF,
    HuberLoss,
    HuberMQLoss,
    HuberQLoss,
    Loss,
    MQLoss,
    QuantileLoss,
    TukeyLoss,
    relMSE,
    sCRPS,
)

LOSSES = {cls.__name__: cls for cls in (MAE, MSE, RMSE, MAPE, SMAPE, MASE, relMSE, HuberLoss,
                                        TukeyLoss, QuantileLoss, HuberQLoss, MQLoss, HuberMQLoss,
                                        sCRPS, Accuracy, FreDF, IQLoss, HuberIQLoss, DistributionLoss, PMM,
                                        GMM, NBMM)}


def loss_from_config(config: dict) -> Loss:
    config = dict(config)
    name = config.pop("name")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {list(LOSSES)}")
    return LOSSES[name](**config)


__all__ = [*LOSSES, "Loss", "LOSSES", "loss_from_config"]
