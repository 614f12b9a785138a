"""Triton kernels of the Philox stream (imported only where Triton is: see :mod:`._triton`).
Kept in their own module because Triton's JIT (and its interpreter) resolves the helper
functions a kernel calls among the module's globals."""

import triton
import triton.language as tl


@triton.jit
def philox10(c0, c1, c2, c3, k0, k1):
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo1 = c2 * 0xCD9E8D57
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def block_words(keys_lo, keys_hi, row, first, d0, d1, BLOCK: tl.constexpr):
    """The Philox words of this program's BLOCK blocks ``first + j`` of row ``row``'s
    stream: ``(j, first + j, x0, x1, x2, x3)``."""
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # block index from `first`
    b = first + j.to(tl.int64)
    c0 = (b & 0xFFFFFFFF).to(tl.uint32)
    c1 = (b >> 32).to(tl.uint32)
    zero = tl.full([BLOCK], 0, tl.uint32)  # a builtin: no call into triton.language.standard
    k0 = tl.load(keys_lo + row).to(tl.uint32) + zero
    k1 = tl.load(keys_hi + row).to(tl.uint32) + zero
    # a draw word >= 2**31 arrives as int64: its low 32 bits are the word
    x0, x1, x2, x3 = philox10(c0, c1, zero + d0.to(tl.uint32), zero + d1.to(tl.uint32), k0, k1)
    return j, b, x0, x1, x2, x3


@triton.jit
def raw_kernel(out, keys_lo, keys_hi, first, nblocks, d0, d1, BLOCK: tl.constexpr):
    j, b, x0, x1, x2, x3 = block_words(keys_lo, keys_hi, 0, first, d0, d1, BLOCK)
    ok = j < nblocks
    o = out + 4 * j.to(tl.int64)
    tl.store(o, x0.to(tl.int32, bitcast=True), mask=ok)
    tl.store(o + 1, x1.to(tl.int32, bitcast=True), mask=ok)
    tl.store(o + 2, x2.to(tl.int32, bitcast=True), mask=ok)
    tl.store(o + 3, x3.to(tl.int32, bitcast=True), mask=ok)


@triton.jit
def normal_f32(out, stride, n, start, keys_lo, keys_hi, first, nblocks, d0, d1,
               BLOCK: tl.constexpr):
    row = tl.program_id(0)
    j, b, x0, x1, x2, x3 = block_words(keys_lo, keys_hi, row, first, d0, d1, BLOCK)
    u1 = ((x0 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08  # 2**-24
    u2 = (x1 >> 8).to(tl.float32) * 5.9604644775390625e-08
    u3 = ((x2 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08
    u4 = (x3 >> 8).to(tl.float32) * 5.9604644775390625e-08
    r1 = tl.sqrt(-2.0 * tl.log(u1))
    r2 = tl.sqrt(-2.0 * tl.log(u3))
    a1 = 6.28318530717958648 * u2
    a2 = 6.28318530717958648 * u4
    e = 4 * b - start  # the row entry of the block's first normal
    base = out + row.to(tl.int64) * stride
    live = j < nblocks
    tl.store(base + e, r1 * tl.sin(a1 + 1.57079632679489662),
             mask=live & (e >= 0) & (e < n))
    tl.store(base + e + 1, r1 * tl.sin(a1), mask=live & (e + 1 >= 0) & (e + 1 < n))
    tl.store(base + e + 2, r2 * tl.sin(a2 + 1.57079632679489662),
             mask=live & (e + 2 >= 0) & (e + 2 < n))
    tl.store(base + e + 3, r2 * tl.sin(a2), mask=live & (e + 3 >= 0) & (e + 3 < n))


@triton.jit
def normal_f64(out, stride, n, start, keys_lo, keys_hi, first, nblocks, d0, d1,
               BLOCK: tl.constexpr):
    row = tl.program_id(0)
    j, b, x0, x1, x2, x3 = block_words(keys_lo, keys_hi, row, first, d0, d1, BLOCK)
    m1 = (x0.to(tl.uint64) << 21) | (x1 >> 11).to(tl.uint64)
    m2 = (x2.to(tl.uint64) << 21) | (x3 >> 11).to(tl.uint64)
    u1 = (m1 + 1).to(tl.float64) * 1.1102230246251565e-16  # 2**-53
    u2 = m2.to(tl.float64) * 1.1102230246251565e-16
    r = tl.sqrt(-2.0 * tl.log(u1))
    a = 6.283185307179586477 * u2
    e = 2 * b - start
    base = out + row.to(tl.int64) * stride
    live = j < nblocks
    tl.store(base + e, r * tl.sin(a + 1.5707963267948966192),
             mask=live & (e >= 0) & (e < n))
    tl.store(base + e + 1, r * tl.sin(a), mask=live & (e + 1 >= 0) & (e + 1 < n))


KERNELS = {"raw": raw_kernel, "float32": normal_f32, "float64": normal_f64}
