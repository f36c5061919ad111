"""Every option NeuralForecast 3.3's models take, ndwork's same-named models take."""

import inspect

import pytest

from ndwork.models import MODELS
from ndwork.models.base import TRAINING_DEFAULTS


def test_every_neuralforecast_option_is_an_ndwork_option():
    import neuralforecast.models

    shared = sorted(set(MODELS) & set(neuralforecast.models.__all__))
    # every NeuralForecast model but TimeLLM (a downloaded language model) and HINT (a
    # wrapper, its own constructor)
    assert set(neuralforecast.models.__all__) - set(shared) == {"TimeLLM", "HINT"}
    missing = {}
    for name in shared:
        theirs = set(inspect.signature(getattr(neuralforecast.models, name).__init__).parameters)
        ours = set(MODELS[name]._architecture_names()) | set(TRAINING_DEFAULTS)
        gap = sorted(theirs - ours - {"self", "kwargs", "trainer_kwargs"})
        if gap:
            missing[name] = gap
    assert not missing, f"options NeuralForecast has and ndwork does not: {missing}"


@pytest.mark.parametrize("name", ["MLP", "NHITS", "LSTM", "KAN", "TSMixer", "TSMixerx",
                                  "MLPMultivariate", "SOFTS", "SOFTSSharp", "TimeMixer",
                                  "StemGNN", "RMoK", "XLinear", "Autoformer", "FEDformer",
                                  "TimesNet", "TimeXer", "TFT"])
def test_neuralforecast_defaults_are_ndwork_defaults(name):
    """The training options' defaults agree (those both define), and the architecture's."""
    import neuralforecast.models

    theirs = inspect.signature(getattr(neuralforecast.models, name).__init__).parameters
    model = MODELS[name](h=12, input_size=24, **({"n_series": 4} if MODELS[name].MULTIVARIATE
                                                 else {}))
    architecture = {k: (getattr(model, k), p.default) for k, p in theirs.items()
                    if k in MODELS[name]._architecture_names() and k not in ("h", "input_size")
                    and p.default is not inspect.Parameter.empty
                    and getattr(model, k) != p.default}
    assert not architecture, architecture
    differ = {k: (getattr(model, k), p.default) for k, p in theirs.items()
              if k in TRAINING_DEFAULTS and k not in ("loss", "valid_loss", "optimizer",
                                                       "lr_scheduler", "futr_exog_list",
                                                       "hist_exog_list", "stat_exog_list",
                                                       "cat_exog_list", "optimizer_kwargs",
                                                       "lr_scheduler_kwargs",
                                                       "dataloader_kwargs",
                                                       "categorical_cardinalities",
                                                       "training_data_availability_threshold")
              and getattr(model, k) != p.default}
    assert not differ, differ
