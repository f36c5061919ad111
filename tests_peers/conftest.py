"""Tests that run beside NeuralForecast, in the peers environment only (`make peers-test`):
torch never enters `make test`."""

import logging
import warnings

import pytest

pytest.importorskip("neuralforecast", reason="the peers environment: make peers-test")
warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

# Lightning options that keep NeuralForecast quiet and on the CPU
NF_QUIET = dict(enable_progress_bar=False, enable_model_summary=False, logger=False,
                accelerator="cpu", devices=1, enable_checkpointing=False)
