"""FEDformer: the decomposition transformer with its attention in the frequency domain:
a subset of the queries' Fourier modes, mixed across channels by learned complex weights
(self-attention), or attending to the keys' modes through a complex tanh
(cross-attention)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn.autoformer import DecompositionTransformer
from ndwork.nn.transformer import MultiHeadAttention, decoder_label_len

HEADS = 8  # NeuralForecast's Fourier weights are (8, C / 8, C / 8, modes)


def frequency_modes(seq_len: int, modes: int, mode_select: str,
                    rng: np.random.RandomState) -> np.ndarray:
    """NeuralForecast's get_frequency_modes: min(modes, seq_len // 2) of the first
    seq_len // 2 frequencies, drawn by shuffling with `rng` ("random") or the lowest
    ("low"), sorted."""
    count = min(modes, seq_len // 2)
    if mode_select == "random":
        index = list(range(seq_len // 2))
        rng.shuffle(index)
        return np.sort(index[:count])
    return np.arange(count)


def fourier_weights(spec, name: str, channels: int, n_modes: int) -> str:
    """torch.rand(8, C/8, C/8, modes, cfloat) / C^2: real and imaginary parts U(0, 1/C^2)."""
    shape = (HEADS, channels // HEADS, channels // HEADS, n_modes)
    scale = 1 / (channels * channels)
    return spec.add_complex(f"{name}.weights1", shape, "draw",
                            lambda rng: rng.uniform(0, scale, (*shape, 2)))


class FourierBlock:
    """The queries' modes `index`, each mixed across a head's channels by its complex
    weights, written to the lowest frequencies (NeuralForecast writes mode i's output
    to frequency i's position in the list, not to frequency i), back to time."""

    def __init__(self, spec, name, channels, index):
        self.index = index
        self.weight = fourier_weights(spec, name, channels, len(index))

    def __call__(self, p, q, k):
        modes = ops.take(ops.rfft(q, axis=1), self.index, axis=1)  # (B, M, H, E, 2)
        mixed = ops.complex_einsum("bmhe,heom->bmho", modes, p[self.weight])
        return ops.irfft(mixed, q.shape[1], axis=1)


class FourierCrossAttention:
    """Queries' modes attend to the keys' modes: tanh(q k^T) k, in complex arithmetic,
    mixed by the complex weights and written back to the queries' frequencies, scaled
    by 1 / C^2."""

    def __init__(self, spec, name, channels, index_q, index_kv):
        self.index_q, self.index_kv, self.channels = index_q, index_kv, channels
        self.weight = fourier_weights(spec, name, channels, len(index_q))

    def __call__(self, p, q, k):
        length = q.shape[1]
        xq = ops.take(ops.rfft(q, axis=1), self.index_q, axis=1)  # (B, Mq, H, E, 2)
        xk = ops.take(ops.rfft(k, axis=1), self.index_kv, axis=1)  # (B, Mk, H, E, 2)
        scores = ops.complex_tanh(ops.complex_einsum("bxhe,byhe->bhxy", xq, xk))
        attended = ops.complex_einsum("bhxy,byhe->bxhe", scores, xk)
        mixed = ops.complex_einsum("bxhe,heox->bxho", attended, p[self.weight])
        spectrum = ops.place(mixed, self.index_q, length // 2 + 1, axis=1)
        scale = np.asarray(1 / self.channels**2, q.data.dtype)
        return ops.irfft(ops.mul(spectrum, ops.constant(scale)), length, axis=1)


class FourierAttention(MultiHeadAttention):
    """NeuralForecast's AutoCorrelationLayer around a Fourier block: the projections,
    the block on the 8 heads, and the block's (B, H, E, L) output read as (B, L, H * E)
    without transposing, as NeuralForecast's .view does (positions and channels mix).
    The blocks read no values (and the self-attention block no keys): those
    projections are parameters NeuralForecast has and never uses."""

    def __init__(self, spec, name, hidden_size, block):
        self.block = block  # registered first, as NeuralForecast registers it
        super().__init__(spec, name, hidden_size, HEADS)

    def __call__(self, p, x_q, x_kv, rng):
        b, n, c = x_q.shape
        q = ops.reshape(self.query(p, x_q), (b, n, HEADS, c // HEADS))
        k = None
        if isinstance(self.block, FourierCrossAttention):
            k = ops.reshape(self.key(p, x_kv), (b, x_kv.shape[1], HEADS, c // HEADS))
        out = self.block(p, q, k)  # (B, L, H, E)
        return self.out(p, ops.reshape(ops.transpose(out, (0, 2, 3, 1)), (b, n, c)))


class FEDformer(BaseModel):
    """FEDformer (Zhou et al., 2022) as NeuralForecast builds it (its Fourier version).

    modes: Fourier modes per block (at most half the sequence); mode_select: "random"
    (drawn from the model's random_seed exactly as NeuralForecast draws them after
    seeding numpy with it, so runs repeat and match) or "low"; n_head must be 8 and
    hidden_size a multiple of 8. The encoder layers share one Fourier block, and so do
    the decoder layers (one self, one cross), as in NeuralForecast. Other options as in
    Autoformer. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_CAT = True
    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, windows_batch_size=1024,
                    inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, decoder_input_size_multiplier: float = 0.5,
                 version: str = "Fourier", modes: int = 64, mode_select: str = "random",
                 hidden_size: int = 128, dropout: float = 0.05, n_head: int = 8,
                 conv_hidden_size: int = 32, activation: str = "gelu", encoder_layers: int = 2,
                 decoder_layers: int = 1, MovingAvg_window: int = 25, **kwargs):  # noqa: N803
        super().__init__(h, input_size, **kwargs)
        label_len = decoder_label_len(input_size, decoder_input_size_multiplier, activation)
        if version != "Fourier":
            raise ValueError(f"version={version!r}: NeuralForecast 3.3's FEDformer, and so "
                             f"ndwork's, has the 'Fourier' version only.")
        if n_head != HEADS or hidden_size % HEADS:
            raise ValueError(f"n_head={n_head}, hidden_size={hidden_size}: FEDformer's Fourier "
                             f"blocks need n_head=8 and a hidden_size divisible by 8.")
        if mode_select not in ("random", "low"):
            raise ValueError(f"mode_select={mode_select!r} must be 'random' or 'low'.")
        if isinstance(modes, bool) or not isinstance(modes, int) or modes < 1:
            raise ValueError(f"modes={modes!r} must be a positive integer (Fourier modes per "
                             f"block).")
        if input_size < 2:
            raise ValueError(f"input_size={input_size}: FEDformer needs at least 2 steps to "
                             f"have a Fourier mode.")
        self.decoder_input_size_multiplier, self.version = decoder_input_size_multiplier, version
        self.modes, self.mode_select, self.hidden_size = modes, mode_select, hidden_size
        self.dropout, self.n_head = dropout, n_head
        self.conv_hidden_size, self.activation = conv_hidden_size, activation
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        self.MovingAvg_window = MovingAvg_window
        # NeuralForecast seeds numpy's global state with random_seed, then draws in this order
        rng = np.random.RandomState(self.random_seed)
        decoder_len = input_size // 2 + h  # NeuralForecast's, whatever label_len is
        self.mode_index = {
            "encoder": frequency_modes(input_size, modes, mode_select, rng),
            "decoder": frequency_modes(decoder_len, modes, mode_select, rng),
            "cross_q": frequency_modes(decoder_len, modes, mode_select, rng),
            "cross_kv": frequency_modes(input_size, modes, mode_select, rng)}
        highest = label_len + h
        if max(self.mode_index["decoder"].max(), self.mode_index["cross_q"].max()) > highest // 2:
            raise ValueError(
                f"decoder_input_size_multiplier={decoder_input_size_multiplier}: the decoder's "
                f"{highest} steps have no Fourier mode {highest // 2 + 1} or above, which "
                f"FEDformer picks among the first (input_size // 2 + h) // 2; raise the "
                f"multiplier to 0.5 or more, or lower modes.")
        index, spec, blocks = self.mode_index, self.spec, {}

        def shared(make):  # the first layer registers the block, the others share it
            def attention(name):
                if make not in blocks:
                    blocks[make] = make(f"{name}.inner_correlation")
                return FourierAttention(spec, name, hidden_size, blocks[make])
            return attention

        self.network = DecompositionTransformer(
            spec, h=h, input_size=input_size, label_len=label_len,
            futr_exog_size=self.futr_exog_size, hidden_size=hidden_size,
            conv_hidden_size=conv_hidden_size, activation=activation, dropout=dropout,
            encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            window=MovingAvg_window, n_outputs=self.n_outputs,
            encoder_attention=shared(
                lambda n: FourierBlock(spec, n, hidden_size, index["encoder"])),
            decoder_self_attention=shared(
                lambda n: FourierBlock(spec, n, hidden_size, index["decoder"])),
            decoder_cross_attention=shared(lambda n: FourierCrossAttention(
                spec, n, hidden_size, index["cross_q"], index["cross_kv"])))

    def forward(self, p, batch, rng=None):
        return self.network(p, batch["insample_y"].data, batch["futr_exog"], rng)
