"""Dynamic loss scaling for float16 training.

float16's smallest normal value is 6e-5: a gradient rounded to it for a GEMM (the
output gradient of a dense layer) underflows to zero long before float32's would. The
loss is multiplied by `scale` before the backward, so the gradients are too, and the
float32 gradient of the parameters is divided by it again before the optimizer sees it.
A step whose gradient overflowed (inf or NaN) is skipped, counted, and the scale
halved; after `growth_interval` good steps in a row it doubles. The defaults are
torch.amp.GradScaler's.
"""

from __future__ import annotations

import dataclasses

# below this the scale only hides a gradient that is not finite at any scale
MIN_SCALE = 2.0**-24


@dataclasses.dataclass
class LossScaler:
    scale: float = 2.0**16
    growth_interval: int = 2000
    good_steps: int = 0  # finite steps since the last change of scale
    skipped: int = 0  # steps skipped over this scaler's life

    def update(self, finite: bool) -> bool:
        """Record a step's gradient; whether the optimizer applies it. Raises
        FloatingPointError when halving the scale no longer helps."""
        if finite:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale, self.good_steps = self.scale * 2, 0
            return True
        self.skipped += 1
        self.scale, self.good_steps = self.scale / 2, 0
        if self.scale < MIN_SCALE:
            raise FloatingPointError(
                f"the gradient stayed non-finite while the fp16 loss scale fell to "
                f"{self.scale:.3g} ({self.skipped} steps skipped)")
        return False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LossScaler:
        scaler = cls(**data)
        if not (MIN_SCALE <= scaler.scale < float("inf")) or scaler.skipped < 0 \
                or not 0 <= scaler.good_steps < scaler.growth_interval:
            raise ValueError(f"loss scaler state {data} is not consistent")
        return scaler
