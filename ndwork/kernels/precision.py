"""Conversions between float32 and the low-precision storage dtypes of mixed precision.

bfloat16 is float32's upper half: rounding to it is integer arithmetic on the bits
(round to nearest, ties to even; NaN stays NaN, quiet, with its sign, as ml_dtypes
makes it), and widening back is a shift, exact. float16 rounding is integer arithmetic
too (numba has no float16 type on the CPU), following the same steps as numpy's own
cast, which is the reference: round to nearest even, overflow to inf, subnormals kept,
NaN payloads truncated as numpy truncates them. numpy's cast runs one value at a time
(1.6 ms per million values here, against 0.6 for this kernel and 0.07 for bfloat16's);
widening float16 is numpy's cast, which is fast.

`to_low(x, dtype)` and `widen(x)` are what the rest of ndwork calls; the numba kernels
and their references are bit-identical, which the tests check on every class of value.
"""

import numpy as np
from llvmlite import ir
from ml_dtypes import bfloat16
from numba.core import types
from numba.extending import intrinsic

from ndwork.config import active
from ndwork.kernels._jit import jit, jit_exact

BF16, FP16 = np.dtype(bfloat16), np.dtype(np.float16)
LOW = (BF16, FP16)
NAMES = {BF16: "bf16", FP16: "fp16"}  # as Optimizations.precision calls them


# --- numpy reference ---------------------------------------------------------

def round_bf16_reference(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(bfloat16)


def round_fp16_reference(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16)


def widen_bf16_reference(x: np.ndarray) -> np.ndarray:
    return (x.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def widen_fp16_reference(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32)


def bf16_weights_matmul_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) @ widen_bf16_reference(w)


# --- numba path ----------------------------------------------------------------

@intrinsic
def _float32_of_bits(typingctx, bits):
    """The float32 whose bits are `bits` (uint32): a bitcast, which numba has no
    function for; LLVM vectorizes it with the loop around it."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_of_float32(typingctx, value):
    """The bits (uint32) of a float32: the bitcast the other way."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@jit
def bf16_bits(u):
    """float32 bits -> bfloat16 bits, rounded to nearest even; NaN stays NaN, quiet,
    with its sign."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint16(((u >> 16) & 0x8000) | 0x7FC0)
    # add just under half an ulp, plus one when the kept lowest bit is odd
    return np.uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)


@jit
def float32_of_bf16(bits):
    return _float32_of_bits(np.uint32(bits) << 16)


@jit
def bf16_of_float32(value):
    return bf16_bits(_bits_of_float32(np.float32(value)))



@jit
def _round_bf16_bits(bits, out):
    for i in range(bits.size):
        out[i] = bf16_bits(bits[i])


@jit
def _round_fp16_bits(bits, out):
    for i in range(bits.size):
        u = bits[i]
        sign = (u >> 16) & 0x8000
        exponent = u & 0x7F800000
        if exponent >= 0x47800000:  # inf, NaN, or beyond float16's range
            payload = (u & 0x007FFFFF) >> 13
            if exponent == 0x7F800000 and u & 0x007FFFFF:  # NaN: keep it one
                out[i] = sign | 0x7C00 | (payload if payload else 1)
            else:
                out[i] = sign | 0x7C00
        elif exponent <= 0x38000000:  # a float16 subnormal, or zero
            if exponent < 0x33000000:
                out[i] = sign
            else:
                shift = 113 - (exponent >> 23)
                significand = (0x00800000 + (u & 0x007FFFFF)) >> shift
                if (significand & 0x3FFF) != 0x1000 or u & 0x7FF:  # not an exact tie to even
                    significand += 0x1000
                out[i] = sign | (significand >> 13)
        else:
            significand = u & 0x007FFFFF
            if (significand & 0x3FFF) != 0x1000:  # not an exact tie to even
                significand += 0x1000
            # a carry out of the significand moves into the exponent: the right result
            out[i] = sign | (((exponent - 0x38000000) >> 13) + (significand >> 13))


@jit_exact  # IEEE arithmetic: a negative zero stays one
def _widen_fp16_bits(bits, out):
    for i in range(bits.size):
        h = np.uint32(bits[i])
        sign = (h & 0x8000) << 16
        exponent = (h >> 10) & 0x1F
        mantissa = h & 0x3FF
        if exponent == 0:  # zero or subnormal: mantissa * 2^-24, exact in float32
            value = np.float32(mantissa) * np.float32(5.9604644775390625e-08)
            out[i] = -value if sign else value
        elif exponent == 0x1F:  # inf, NaN (payload kept)
            out[i] = _float32_of_bits(sign | 0x7F800000 | (mantissa << 13))
        else:
            out[i] = _float32_of_bits(sign | ((exponent + 112) << 23) | (mantissa << 13))


@jit
def _widen_bf16_bits(bits, out):
    for i in range(bits.size):
        out[i] = np.uint32(bits[i]) << 16


@jit
def _bf16_weights_matmul(x, w_bits, out):
    """out = x @ W, W (k, n) given as bfloat16 bits, widened in registers as it streams
    (four rows of W per pass over out). For a few rows of x (a forecast): the weights
    stream from memory at half float32's bytes."""
    m, k = x.shape
    n = w_bits.shape[1]
    out[:] = 0.0
    for i in range(m):
        p = 0
        while p + 4 <= k:
            x0, x1, x2, x3 = x[i, p], x[i, p + 1], x[i, p + 2], x[i, p + 3]
            for j in range(n):
                out[i, j] += (x0 * float32_of_bf16(w_bits[p, j])
                              + x1 * float32_of_bf16(w_bits[p + 1, j])
                              + x2 * float32_of_bf16(w_bits[p + 2, j])
                              + x3 * float32_of_bf16(w_bits[p + 3, j]))
            p += 4
        for q in range(p, k):
            for j in range(n):
                out[i, j] += x[i, q] * float32_of_bf16(w_bits[q, j])


def bf16_weights_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (m, k) float32 @ w (k, n) bfloat16, in float32."""
    out = np.empty((x.shape[0], w.shape[1]), np.float32)
    if not w.flags.c_contiguous:
        w = np.ascontiguousarray(w)
    _bf16_weights_matmul(x, w.view(np.uint16), out)
    return out


def round_bf16(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, BF16)
    _round_bf16_bits(x.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint16))
    return out


def round_fp16(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, FP16)
    _round_fp16_bits(x.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint16))
    return out


def widen_fp16(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, np.float32)
    _widen_fp16_bits(x.reshape(-1).view(np.uint16), out.reshape(-1))
    return out


def widen_bf16(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, np.float32)
    _widen_bf16_bits(x.reshape(-1).view(np.uint16), out.reshape(-1).view(np.uint32))
    return out


KERNELS = {
    "round_bf16": (round_bf16, round_bf16_reference),
    "round_fp16": (round_fp16, round_fp16_reference),
    "widen_bf16": (widen_bf16, widen_bf16_reference),
    "widen_fp16": (widen_fp16, widen_fp16_reference),
    "bf16_weights_matmul": (bf16_weights_matmul, bf16_weights_matmul_reference),
}


def _kernel(name: str):
    """ndwork.kernels.kernel(name), which this module cannot import (the package imports
    it): the side Optimizations.kernels selects."""
    return KERNELS[name][0 if active().kernels == "numba" else 1]


def to_low(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """x rounded to `dtype` (bfloat16 or float16); x itself when it already is."""
    if x.dtype == dtype:
        return x
    return _kernel(f"round_{NAMES[dtype]}")(widen(x))


def widen(x: np.ndarray) -> np.ndarray:
    """A low-precision x as float32 (exact); any other x as it is."""
    if x.dtype == BF16:
        return _kernel("widen_bf16")(x)
    if x.dtype == FP16:
        return _kernel("widen_fp16")(x)
    return x


def matmul_bf16_weights(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w in float32 for float32 x and bfloat16 w (a forecast's weights)."""
    return _kernel("bf16_weights_matmul")(x, w)
