"""Forecasting models, one file each, named and parametrized as in NeuralForecast."""

from ndwork.models.autoformer import Autoformer
from ndwork.models.base import BaseModel
from ndwork.models.bitcn import BiTCN
from ndwork.models.deepar import DeepAR
from ndwork.models.deepnpts import DeepNPTS
from ndwork.models.dilated_rnn import DilatedRNN
from ndwork.models.dlinear import DLinear
from ndwork.models.fedformer import FEDformer
from ndwork.models.gru import GRU
from ndwork.models.hint import HINT
from ndwork.models.informer import Informer
from ndwork.models.itransformer import iTransformer
from ndwork.models.kan import KAN
from ndwork.models.lstm import LSTM
from ndwork.models.mlp import MLP
from ndwork.models.mlpmultivariate import MLPMultivariate
from ndwork.models.nbeats import NBEATS
from ndwork.models.nbeatsx import NBEATSx
from ndwork.models.nhits import NHITS
from ndwork.models.nlinear import NLinear
from ndwork.models.patchtst import PatchTST
from ndwork.models.rmok import RMoK
from ndwork.models.rnn import RNN
from ndwork.models.softs import SOFTS
from ndwork.models.softssharp import SOFTSSharp
from ndwork.models.stemgnn import StemGNN
from ndwork.models.tcn import TCN
from ndwork.models.tft import TFT
from ndwork.models.tide import TiDE
from ndwork.models.timemixer import TimeMixer
from ndwork.models.timesnet import TimesNet
from ndwork.models.timexer import TimeXer
from ndwork.models.tsmixer import TSMixer
from ndwork.models.tsmixerx import TSMixerx
from ndwork.models.vanillatransformer import VanillaTransformer
from ndwork.models.xlinear import XLinear
from ndwork.models.xlstm import xLSTM

MODELS = {cls.__name__: cls for cls in (MLP, NLinear, DLinear, NBEATS, NBEATSx, NHITS, TiDE,
                                         VanillaTransformer, PatchTST, Informer,
                                         iTransformer, RNN, LSTM, GRU, TCN, BiTCN, DilatedRNN,
                                         xLSTM, DeepAR, DeepNPTS, TSMixer, TSMixerx,
                                         MLPMultivariate, SOFTS, SOFTSSharp, XLinear, RMoK, KAN,
                                         StemGNN, TimeMixer, Autoformer, FEDformer, TimeXer,
                                         TimesNet, TFT)}
# wrappers of another model (their own constructor): rebuilt from checkpoints by name too
WRAPPERS = {"HINT": HINT}


def model_class(name: str) -> type:
    """The model or wrapper class of a checkpoint's or a task's class name."""
    return MODELS[name] if name in MODELS else WRAPPERS[name]


__all__ = ["Autoformer", "BaseModel", "BiTCN", "DLinear", "DeepAR", "DeepNPTS", "DilatedRNN",
           "FEDformer", "GRU", "HINT", "Informer", "KAN", "LSTM", "MLP", "MLPMultivariate",
           "MODELS", "NBEATS", "NBEATSx", "NHITS", "NLinear", "PatchTST", "RMoK", "RNN", "SOFTS",
           "SOFTSSharp", "StemGNN", "TCN", "TFT", "TSMixer", "TSMixerx", "TiDE", "TimeMixer",
           "TimeXer", "TimesNet", "VanillaTransformer", "WRAPPERS", "XLinear", "iTransformer",
           "model_class", "xLSTM"]
