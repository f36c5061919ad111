"""Fused in-place optimizer updates over flat parameter vectors.

p, g and the moment buffers are 1-D float32 arrays (all parameters of a model live in
one flat vector, see ndwork.autodiff.Parameters), so one call updates the whole model.
The math is torch's Adam, AdamW and SGD (momentum, weight decay) at step t (1-based).
"""

import math

import numpy as np

from ndwork.kernels._jit import jit

# --- numpy reference -----------------------------------------------------------

def adam_update_reference(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                          weight_decay=0.0, decoupled=False):
    if weight_decay and decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    step_size = lr / (1 - beta1**step)
    denom = np.sqrt(v / (1 - beta2**step)) + eps
    p -= (step_size * m / denom).astype(p.dtype)


def sgd_update_reference(p, g, buf, lr, momentum=0.0, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        buf *= momentum
        buf += g
        g = buf
    p -= lr * g


# --- numba kernels ---------------------------------------------------------------
# Scalars arrive in the parameters' dtype: a float64 scalar would promote every element.

@jit
def _adam(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_bias2_sqrt,
          eps, shrink, coupled):
    for i in range(p.size):
        gi = g[i] + coupled * p[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * shrink - step_size * mi / (np.sqrt(vi) * inv_bias2_sqrt + eps)


@jit
def _sgd(p, g, buf, lr, momentum, weight_decay):
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        if momentum != 0:
            gi = momentum * buf[i] + gi
            buf[i] = gi
        p[i] -= lr * gi


def adam_update(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled=False):
    t = p.dtype.type
    shrink = 1 - lr * weight_decay if decoupled else 1.0
    coupled = 0.0 if decoupled else weight_decay
    _adam(p, g, m, v, t(beta1), t(beta2), t(1 - beta1), t(1 - beta2), t(lr / (1 - beta1**step)),
          t(1 / math.sqrt(1 - beta2**step)), t(eps), t(shrink), t(coupled))


def sgd_update(p, g, buf, lr, momentum=0.0, weight_decay=0.0):
    t = p.dtype.type
    _sgd(p, g, buf, t(lr), t(momentum), t(weight_decay))


KERNELS = {
    "adam_update": (adam_update, adam_update_reference),
    "sgd_update": (sgd_update, sgd_update_reference),
}
