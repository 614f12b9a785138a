/* Counter-based standard normals for thermotrain (see philox.py for the definition).
 *
 * Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11) maps a 128-bit counter and a 64-bit key
 * to four 32-bit words; Box-Muller turns them into normals. Counter of block j of draw d:
 * (lo32(j), hi32(j), lo32(d), hi32(d)); key: the member's 64-bit seed.
 *
 *   float32: block j gives entries 4j..4j+3 from 24-bit uniforms
 *            u1 = (x0>>8)+1, u2 = x1>>8, u3 = (x2>>8)+1, u4 = x3>>8 (times 2^-24),
 *            r = sqrt(-2 log u), a = 2 pi u',  (r1 sin(a2 + pi/2), r1 sin(a2), r2 ..., r2 ...)
 *   float64: block j gives entries 2j, 2j+1 from 53-bit uniforms
 *            u1 = ((x0:x1)>>11)+1, u2 = (x2:x3)>>11 (times 2^-53).
 *
 * Blocks are computed 16 lanes at a time (AVX-512 intrinsics for the Philox rounds where
 * available, else gcc's vectorization; glibc's libmvec for log and sin); compiled at first
 * use by thermotrain._native (-O3 -march=native -ffast-math -fopenmp -mno-recip).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define M0 0xD2511F53u
#define M1 0xCD9E8D57u
#define W0 0x9E3779B9u
#define W1 0xBB67AE85u
#define BLK 256

static inline __attribute__((always_inline)) void philox10(uint32_t *x0, uint32_t *x1,
                                                            uint32_t *x2, uint32_t *x3,
                                                            uint32_t k0, uint32_t k1) {
#pragma GCC unroll 10
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)M0 * *x0;
    uint64_t p1 = (uint64_t)M1 * *x2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ *x1 ^ k0;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ *x3 ^ k1;
    *x1 = (uint32_t)p1;
    *x3 = (uint32_t)p0;
    *x0 = n0;
    *x2 = n2;
    k0 += W0;
    k1 += W1;
  }
}

/* Raw Philox4x32-10 words of blocks first..first+n-1 (for known-answer tests). */
void tt_philox4x32_raw(uint32_t *out, int64_t n, uint64_t first, uint64_t key, uint64_t draw) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t c = first + (uint64_t)i;
    uint32_t x0 = (uint32_t)c, x1 = (uint32_t)(c >> 32), x2 = (uint32_t)draw,
             x3 = (uint32_t)(draw >> 32);
    philox10(&x0, &x1, &x2, &x3, (uint32_t)key, (uint32_t)(key >> 32));
    out[4 * i] = x0;
    out[4 * i + 1] = x1;
    out[4 * i + 2] = x2;
    out[4 * i + 3] = x3;
  }
}

/* Philox words of m lanes: lane i has counter (C0[i], C1[i], d0, d1) and key (K0[i], K1[i]).
   The arrays hold a multiple of 16 lanes (m rounded up; the extra lanes are computed and
   ignored). With AVX-512 the 32x32->64-bit products use vpmuludq on even and odd lanes (the
   compiler's own vectorization widens to 64-bit lanes and vpmullq, about half as fast). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512i mulhi_epu32(__m512i x, __m512i m) {
  const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(x, m), 32);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
}
#endif

static void philox_lanes(int m, const uint32_t *C0, const uint32_t *C1, const uint32_t *K0,
                         const uint32_t *K1, uint32_t d0, uint32_t d1, uint32_t *X0,
                         uint32_t *X1, uint32_t *X2, uint32_t *X3) {
#if defined(__AVX512F__)
  const __m512i m0 = _mm512_set1_epi32((int)M0), m1 = _mm512_set1_epi32((int)M1);
  const __m512i w0 = _mm512_set1_epi32((int)W0), w1 = _mm512_set1_epi32((int)W1);
  for (int i = 0; i < m; i += 16) {
    __m512i x0 = _mm512_loadu_si512(C0 + i), x1 = _mm512_loadu_si512(C1 + i);
    __m512i x2 = _mm512_set1_epi32((int)d0), x3 = _mm512_set1_epi32((int)d1);
    __m512i k0 = _mm512_loadu_si512(K0 + i), k1 = _mm512_loadu_si512(K1 + i);
    for (int r = 0; r < 10; r++) {
      const __m512i hi0 = mulhi_epu32(x0, m0), lo0 = _mm512_mullo_epi32(x0, m0);
      const __m512i hi1 = mulhi_epu32(x2, m1), lo1 = _mm512_mullo_epi32(x2, m1);
      x0 = _mm512_xor_si512(_mm512_xor_si512(hi1, x1), k0);
      x2 = _mm512_xor_si512(_mm512_xor_si512(hi0, x3), k1);
      x1 = lo1;
      x3 = lo0;
      k0 = _mm512_add_epi32(k0, w0);
      k1 = _mm512_add_epi32(k1, w1);
    }
    _mm512_storeu_si512(X0 + i, x0);
    _mm512_storeu_si512(X1 + i, x1);
    _mm512_storeu_si512(X2 + i, x2);
    _mm512_storeu_si512(X3 + i, x3);
  }
#else
#pragma omp simd
  for (int i = 0; i < m; i++) {
    uint32_t x0 = C0[i], x1 = C1[i], x2 = d0, x3 = d1;
    philox10(&x0, &x1, &x2, &x3, K0[i], K1[i]);
    X0[i] = x0;
    X1[i] = x1;
    X2[i] = x2;
    X3[i] = x3;
  }
#endif
}

/* Box-Muller, float32: lane i gives entries (za, zb, zc, zd)[i] */
static void box_muller_f32(int m, const uint32_t *X0, const uint32_t *X1, const uint32_t *X2,
                           const uint32_t *X3, float *za, float *zb, float *zc, float *zd) {
#pragma omp simd
  for (int i = 0; i < m; i++) {
    float u1 = (float)((X0[i] >> 8) + 1) * 0x1p-24f;
    float u2 = (float)(X1[i] >> 8) * 0x1p-24f;
    float u3 = (float)((X2[i] >> 8) + 1) * 0x1p-24f;
    float u4 = (float)(X3[i] >> 8) * 0x1p-24f;
    float r1 = sqrtf(-2.0f * logf(u1)), r2 = sqrtf(-2.0f * logf(u3));
    float a1 = 6.28318530717958648f * u2, a2 = 6.28318530717958648f * u4;
    /* sin(a + pi/2) rather than cos(a): gcc fuses sin/cos of one angle into a sincos call
       that has no vector variant */
    za[i] = r1 * sinf(a1 + 1.57079632679489662f);
    zb[i] = r1 * sinf(a1);
    zc[i] = r2 * sinf(a2 + 1.57079632679489662f);
    zd[i] = r2 * sinf(a2);
  }
}

/* Box-Muller, float64: lane i gives entries (za, zb)[i] from 53-bit uniforms */
static void box_muller_f64(int m, const uint32_t *X0, const uint32_t *X1, const uint32_t *X2,
                           const uint32_t *X3, double *za, double *zb) {
#pragma omp simd
  for (int i = 0; i < m; i++) {
    double u1 = (double)(((((uint64_t)X0[i] << 32) | X1[i]) >> 11) + 1) * 0x1p-53;
    double u2 = (double)((((uint64_t)X2[i] << 32) | X3[i]) >> 11) * 0x1p-53;
    double r = sqrt(-2.0 * log(u1));
    double a = 6.283185307179586477 * u2;
    za[i] = r * sin(a + 1.5707963267948966192);
    zb[i] = r * sin(a);
  }
}

/* rows x n entries: row r (at out + r*ostride) gets entries [start, start+n) of the stream
   (keys[r], draw). Lanes (blocks) are gathered across rows, so short rows (ensembles of
   small tensors) fill the vectors as well as long ones. PER entries per block. */
#define NORMAL_ROWS(T, PER, BOXMULLER_CALL, ...)                                                \
  if (n <= 0) return;                                                                        \
  uint32_t K0[BLK], K1[BLK], C0[BLK], C1[BLK], X0[BLK], X1[BLK], X2[BLK], X3[BLK];           \
  int64_t row[BLK], col[BLK]; /* where a block's first entry goes (col may be < 0) */       \
  const uint32_t d0 = (uint32_t)draw, d1 = (uint32_t)(draw >> 32);                           \
  const uint64_t b0 = start / PER;                                                           \
  const int64_t nb = (int64_t)((start + (uint64_t)n + PER - 1) / PER - b0);                  \
  const int64_t lead = (int64_t)(start - b0 * PER);                                          \
  int m = 0;                                                                                 \
  for (int64_t r = 0; r < rows; r++) {                                                       \
    const uint32_t k0 = (uint32_t)keys[r], k1 = (uint32_t)(keys[r] >> 32);                   \
    for (int64_t j = 0; j < nb; j++) {                                                       \
      const uint64_t blk = b0 + (uint64_t)j;                                                 \
      K0[m] = k0;                                                                            \
      K1[m] = k1;                                                                            \
      C0[m] = (uint32_t)blk;                                                                 \
      C1[m] = (uint32_t)(blk >> 32);                                                         \
      row[m] = r;                                                                            \
      col[m] = PER * j - lead;                                                               \
      if (++m < BLK && !(r == rows - 1 && j == nb - 1)) continue;                            \
      const int mv = (m + 15) & ~15;                                                         \
      for (int i = m; i < mv; i++) K0[i] = K1[i] = C0[i] = C1[i] = 0;                        \
      philox_lanes(mv, C0, C1, K0, K1, d0, d1, X0, X1, X2, X3);                              \
      BOXMULLER_CALL;                                                                        \
      for (int i = 0; i < m; i++) {                                                          \
        T *o = out + row[i] * ostride;                                                       \
        const int64_t c = col[i];                                                            \
        __VA_ARGS__                                                                          \
      }                                                                                      \
      m = 0;                                                                                 \
    }                                                                                        \
  }

static void normal_f32(float *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start);
static void normal_f64(double *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start);

static void normal_rows_f32(float *out, int64_t rows, int64_t n, int64_t ostride,
                            const uint64_t *keys, uint64_t draw, uint64_t start) {
  if (rows == 1 || n >= 4 * BLK) {
    for (int64_t r = 0; r < rows; r++) normal_f32(out + r * ostride, n, keys[r], draw, start);
    return;
  }
  float za[BLK], zb[BLK], zc[BLK], zd[BLK];
  NORMAL_ROWS(float, 4, box_muller_f32(mv, X0, X1, X2, X3, za, zb, zc, zd), {
    if (c >= 0 && c + 4 <= n) {
      o[c] = za[i];
      o[c + 1] = zb[i];
      o[c + 2] = zc[i];
      o[c + 3] = zd[i];
    } else {
      const float v[4] = {za[i], zb[i], zc[i], zd[i]};
      for (int l = 0; l < 4; l++)
        if (c + l >= 0 && c + l < n) o[c + l] = v[l];
    }
  })
}

static void normal_rows_f64(double *out, int64_t rows, int64_t n, int64_t ostride,
                            const uint64_t *keys, uint64_t draw, uint64_t start) {
  if (rows == 1 || n >= 2 * BLK) {
    for (int64_t r = 0; r < rows; r++) normal_f64(out + r * ostride, n, keys[r], draw, start);
    return;
  }
  double za[BLK], zb[BLK];
  NORMAL_ROWS(double, 2, box_muller_f64(mv, X0, X1, X2, X3, za, zb), {
    if (c >= 0 && c < n) o[c] = za[i];
    if (c + 1 >= 0 && c + 1 < n) o[c + 1] = zb[i];
  })
}

/* Entries [start, start+n) of the stream (key, draw), written to out[0..n): one row, its
   blocks consecutive, so counters are made in a vector loop and the output is contiguous. */
#define NORMAL_ROW(T, PER, BOXMULLER_CALL, ...)                                               \
  uint32_t K0[BLK], K1[BLK], C0[BLK], C1[BLK], X0[BLK], X1[BLK], X2[BLK], X3[BLK];           \
  const uint32_t d0 = (uint32_t)draw, d1 = (uint32_t)(draw >> 32);                           \
  for (int i = 0; i < BLK; i++) {                                                            \
    K0[i] = (uint32_t)key;                                                                   \
    K1[i] = (uint32_t)(key >> 32);                                                           \
  }                                                                                          \
  const uint64_t b0 = start / PER;                                                           \
  const int64_t nblocks = (int64_t)((start + (uint64_t)n + PER - 1) / PER - b0);             \
  for (int64_t b = 0; b < nblocks; b += BLK) {                                               \
    const int m = nblocks - b < BLK ? (int)(nblocks - b) : BLK;                              \
    const int mv = (m + 15) & ~15;                                                           \
    const uint64_t base = b0 + (uint64_t)b;                                                  \
    const uint32_t blo = (uint32_t)base, bhi = (uint32_t)(base >> 32);                       \
    for (int i = 0; i < mv; i++) {                                                           \
      C0[i] = blo + (uint32_t)i;                                                             \
      C1[i] = bhi + (C0[i] < blo);                                                           \
    }                                                                                        \
    philox_lanes(mv, C0, C1, K0, K1, d0, d1, X0, X1, X2, X3);                                \
    BOXMULLER_CALL;                                                                          \
    const int64_t lo = (int64_t)(base * PER) - (int64_t)start; /* out index of block 0 */    \
    __VA_ARGS__                                                                              \
  }

static void normal_f32(float *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start) {
  float za[BLK], zb[BLK], zc[BLK], zd[BLK];
  NORMAL_ROW(float, 4, box_muller_f32(mv, X0, X1, X2, X3, za, zb, zc, zd), {
    if (lo >= 0 && lo + 4 * (int64_t)m <= n) {
      float *o = out + lo;
      for (int i = 0; i < m; i++) {
        o[4 * i] = za[i];
        o[4 * i + 1] = zb[i];
        o[4 * i + 2] = zc[i];
        o[4 * i + 3] = zd[i];
      }
    } else {
      for (int i = 0; i < m; i++) {
        const float v[4] = {za[i], zb[i], zc[i], zd[i]};
        for (int l = 0; l < 4; l++) {
          const int64_t j = lo + 4 * i + l;
          if (j >= 0 && j < n) out[j] = v[l];
        }
      }
    }
  })
}

static void normal_f64(double *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start) {
  double za[BLK], zb[BLK];
  NORMAL_ROW(double, 2, box_muller_f64(mv, X0, X1, X2, X3, za, zb), {
    for (int i = 0; i < m; i++) {
      const int64_t j = lo + 2 * i;
      if (j >= 0 && j < n) out[j] = za[i];
      if (j + 1 >= 0 && j + 1 < n) out[j + 1] = zb[i];
    }
  })
}

/* A batch of jobs, shared among the OpenMP threads (the runtime torch uses, so its waiting
   threads pick the work up instead of competing with it). Job i covers tensor i: rows[i] rows
   of n[i] entries (row r at x[i] + r*stride[i]), row r taking stream entries
   [start[i], start[i]+n[i]) of (keys[r], draw). Work is cut into tiles of TILE entries; every
   entry is a function of its tile alone, so results do not depend on the thread count. */
#define TILE 4096
/* below this many entries a batch runs on one thread (a parallel region costs ~µs) */
#define PARALLEL_MIN (1 << 13)
/* rows shorter than this get their noise made many rows at a time (normal_rows) */
#define SHORT_ROW 1024
#define ROWS_PER_CHUNK(n) ((n) >= 2048 ? 1 : 2048 / (n))


/* ---------------------------------------------------------------------------------------
 * Fused schemes (fused.py): a whole group's step in one pass over (theta, p, grad), the
 * noise made in cache. Job i: rows[i] rows of n[i] entries at theta[i]/p[i]/g[i] + r*stride[i]
 * (the three share a layout), row r on stream (keys[r], draw) from entry start[i].
 * prm: per-kind scalars; rowf[i*rows[i] + r]: per (job, row) factor (adaptive: e^{-xi t}).
 *
 *   kind 0  langevin   p -= k g; th += h2 p; p = c p + d z (c = 0: p = d z); th += h2 p
 *                      prm = {k, h2, c, d}
 *   kind 1  sgld       th = th - h g + s z                            prm = {h, s}
 *   kind 2  adaptive,  p -= k g; th += h2 p; p *= f; p += s z;  sums[i*rows+r] = sum p^2
 *           1st half                                               prm = {k, h2, s}
 *   kind 3  adaptive,  p += s z; p *= f; th += h2 p                prm = {s, h2}
 *           2nd half
 *   kind 4  draw       th = z                                         (p, g unused)
 *   kind 5  axpby      th = a th + b z (a = 0: th = b z)              prm = {a, b}
 *
 * Returns 1 if every value written is finite, else 0. Sums are reduced tile by tile in a
 * fixed order, so results do not depend on the number of threads.
 * ------------------------------------------------------------------------------------- */
/* finiteness by the exponent bits: -ffast-math lets the compiler assume isfinite() is true */
static inline int finite_f32(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (u & 0x7f800000u) != 0x7f800000u;
}
static inline int finite_f64(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

#define DEFINE_SCHEME_TILE(T, NORMAL, NAME, isfinite)                                                 \
  static int NAME(int kind, T *restrict th, T *restrict p, const T *restrict g, int64_t m,   \
                  uint64_t key, uint64_t draw, uint64_t start, const double *prm, T f,       \
                  double *sum, const T *zpre) {                                              \
    *sum = 0.0;                                                                              \
    if (kind == 4 && !zpre) {                                                                \
      NORMAL(th, m, key, draw, start);                                                       \
      return 1;                                                                              \
    }                                                                                        \
    T zbuf[TILE];                                                                            \
    const T *z = zpre;                                                                       \
    if (!z) {                                                                                \
      NORMAL(zbuf, m, key, draw, start);                                                     \
      z = zbuf;                                                                              \
    }                                                                                        \
    int ok = 1;                                                                              \
    double acc = 0.0;                                                                        \
    if (kind == 4) {                                                                         \
      memcpy(th, z, sizeof(T) * (size_t)m);                                                  \
    } else if (kind == 5) {                                                                  \
      const T a = (T)prm[0], b = (T)prm[1];                                                  \
      if (a == (T)0)                                                                         \
        for (int64_t i = 0; i < m; i++) th[i] = b * z[i];                                    \
      else                                                                                   \
        for (int64_t i = 0; i < m; i++) th[i] = a * th[i] + b * z[i];                        \
    } else if (kind == 0) {                                                                  \
      const T k = (T)prm[0], h2 = (T)prm[1], c = (T)prm[2], d = (T)prm[3];                   \
      if (c == (T)0) {                                                                       \
        for (int64_t i = 0; i < m; i++) {                                                    \
          T q = p[i] - k * g[i];                                                             \
          T t = th[i] + h2 * q;                                                              \
          q = d * z[i];                                                                      \
          t = t + h2 * q;                                                                    \
          th[i] = t;                                                                         \
          p[i] = q;                                                                          \
          ok &= isfinite(t) & isfinite(q);                                                   \
        }                                                                                    \
      } else {                                                                               \
        for (int64_t i = 0; i < m; i++) {                                                    \
          T q = p[i] - k * g[i];                                                             \
          T t = th[i] + h2 * q;                                                              \
          q = c * q + d * z[i];                                                              \
          t = t + h2 * q;                                                                    \
          th[i] = t;                                                                         \
          p[i] = q;                                                                          \
          ok &= isfinite(t) & isfinite(q);                                                   \
        }                                                                                    \
      }                                                                                      \
    } else if (kind == 1) {                                                                  \
      const T h = (T)prm[0], s = (T)prm[1];                                                  \
      for (int64_t i = 0; i < m; i++) {                                                      \
        T t = th[i] - h * g[i];                                                              \
        t = t + s * z[i];                                                                    \
        th[i] = t;                                                                           \
        ok &= isfinite(t);                                                                   \
      }                                                                                      \
    } else if (kind == 2) {                                                                  \
      const T k = (T)prm[0], h2 = (T)prm[1], s = (T)prm[2];                                  \
      for (int64_t i = 0; i < m; i++) {                                                      \
        T q = p[i] - k * g[i];                                                               \
        T t = th[i] + h2 * q;                                                                \
        q = q * f;                                                                           \
        q = q + s * z[i];                                                                    \
        th[i] = t;                                                                           \
        p[i] = q;                                                                            \
        acc += (double)q * (double)q;                                                        \
        ok &= isfinite(t) & isfinite(q);                                                     \
      }                                                                                      \
    } else {                                                                                 \
      const T s = (T)prm[0], h2 = (T)prm[1];                                                 \
      for (int64_t i = 0; i < m; i++) {                                                      \
        T q = p[i] + s * z[i];                                                               \
        q = q * f;                                                                           \
        T t = th[i] + h2 * q;                                                                \
        th[i] = t;                                                                           \
        p[i] = q;                                                                            \
        ok &= isfinite(t) & isfinite(q);                                                     \
      }                                                                                      \
    }                                                                                        \
    *sum = acc;                                                                              \
    return ok;                                                                               \
  }

DEFINE_SCHEME_TILE(float, normal_f32, scheme_tile_f32, finite_f32)
DEFINE_SCHEME_TILE(double, normal_f64, scheme_tile_f64, finite_f64)

/* The tiles of a batch of jobs, shared among the OpenMP threads; partial[t] = tile t's sum of
   p^2 (kind 2) when partial is given. */
static int run_tiles(int kind, int64_t count, void *const *theta, void *const *p,
                     void *const *g, const int64_t *rows, const int64_t *n,
                     const int64_t *stride, const uint64_t *start, const uint64_t *keys,
                     uint64_t draw, const double *prm, const double *rowf, double *partial,
                     int f64) {
  int64_t total = 0, entries = 0;
  for (int64_t i = 0; i < count; i++) {
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    entries += rows[i] * n[i];
  }
  /* short rows (an ensemble of small tensors): all rows' noise first, many rows per vector
     loop (normal_rows), into a buffer that stays in cache */
  void **zb = (void **)calloc((size_t)(count > 0 ? count : 1), sizeof(void *));
  if (!zb) return -1;
  int64_t chunks = 0;
  for (int64_t i = 0; i < count; i++) {
    if (rows[i] > 1 && n[i] > 0 && n[i] < SHORT_ROW) {
      zb[i] = malloc((size_t)(rows[i] * n[i]) * (f64 ? sizeof(double) : sizeof(float)));
      if (!zb[i]) {
        for (int64_t j = 0; j < i; j++) free(zb[j]);
        free(zb);
        return -1;
      }
      chunks += (rows[i] + ROWS_PER_CHUNK(n[i]) - 1) / ROWS_PER_CHUNK(n[i]);
    }
  }
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t i = 0, rest = c, per = 1, nc = 0;
    for (;; i++) {
      if (!zb[i]) continue;
      per = ROWS_PER_CHUNK(n[i]);
      nc = (rows[i] + per - 1) / per;
      if (rest < nc) break;
      rest -= nc;
    }
    const int64_t r0 = rest * per, nr = rows[i] - r0 < per ? rows[i] - r0 : per;
    if (f64)
      normal_rows_f64((double *)zb[i] + r0 * n[i], nr, n[i], n[i], keys + r0, draw, start[i]);
    else
      normal_rows_f32((float *)zb[i] + r0 * n[i], nr, n[i], n[i], keys + r0, draw, start[i]);
  }
  int ok = 1;
#pragma omp parallel for schedule(static) reduction(& : ok) if (entries >= PARALLEL_MIN)
  for (int64_t t = 0; t < total; t++) {
    int64_t i = 0, rest = t, tiles = 0, jrow = 0;
    for (;; i++) {
      tiles = (n[i] + TILE - 1) / TILE;
      if (rest < rows[i] * tiles) break;
      rest -= rows[i] * tiles;
      jrow += rows[i];
    }
    const int64_t r = rest / tiles, off = (rest % tiles) * TILE;
    const int64_t m = n[i] - off < TILE ? n[i] - off : TILE;
    const int64_t at = r * stride[i] + off;
    const double f = rowf ? rowf[jrow + r] : 1.0;
    double acc = 0.0;
    const int64_t zat = r * n[i] + off; /* in the short-row buffer */
    if (f64)
      ok &= scheme_tile_f64(kind, (double *)theta[i] + at, p[i] ? (double *)p[i] + at : NULL,
                            g[i] ? (const double *)g[i] + at : NULL, m, keys[r], draw,
                            start[i] + (uint64_t)off, prm, f, &acc,
                            zb[i] ? (const double *)zb[i] + zat : NULL);
    else
      ok &= scheme_tile_f32(kind, (float *)theta[i] + at, p[i] ? (float *)p[i] + at : NULL,
                            g[i] ? (const float *)g[i] + at : NULL, m, keys[r], draw,
                            start[i] + (uint64_t)off, prm, (float)f, &acc,
                            zb[i] ? (const float *)zb[i] + zat : NULL);
    if (partial) partial[t] = acc;
  }
  for (int64_t i = 0; i < count; i++) free(zb[i]);
  free(zb);
  return ok;
}

/* Plain draws (NoiseSource.draw and CounterNoise): mode 0 x <- z, mode 1 x <- a x + b z
   (a == 0: x <- b z), through the same tiles as the fused schemes (kinds 4 and 5). */
int tt_philox_jobs(int64_t count, void *const *x, const int64_t *rows, const int64_t *n,
                   const int64_t *stride, const uint64_t *start, const uint64_t *keys,
                   uint64_t draw, int mode, double a, double b, int f64) {
  void **none = (void **)calloc((size_t)(count > 0 ? count : 1), sizeof(void *));
  if (!none) return -1;
  const double prm[4] = {a, b, 0.0, 0.0};
  const int ok = run_tiles(mode == 0 ? 4 : 5, count, x, none, none, rows, n, stride, start,
                           keys, draw, prm, NULL, NULL, f64);
  free(none);
  return ok < 0 ? -1 : 0;
}

/* kinds 0 (langevin) and 1 (sgld) */
int tt_scheme_jobs(int kind, int64_t count, void *const *theta, void *const *p,
                   void *const *g, const int64_t *rows, const int64_t *n,
                   const int64_t *stride, const uint64_t *start, const uint64_t *keys,
                   uint64_t draw, const double *prm, int f64) {
  return run_tiles(kind, count, theta, p, g, rows, n, stride, start, keys, draw, prm, NULL,
                   NULL, f64);
}

static double xi_get(const void *xi, int64_t r, int f64) {
  return f64 ? ((const double *)xi)[r] : (double)((const float *)xi)[r];
}

/* The adaptive scheme's whole step, A C D E D C A after the merged kick, around its one
   reduction: job i's thermostat xi[i] holds rows[i] values (one per member, in the
   parameters' dtype); its noise for the two D steps starts at start1[i] and start2[i].
   prm = {k, h/2, s = sigma_A sqrt(h/2), h*epsilon, tau}. */
int tt_adaptive_jobs(int64_t count, void *const *theta, void *const *p, void *const *g,
                     void *const *xi, const int64_t *rows, const int64_t *n,
                     const int64_t *stride, const uint64_t *start1, const uint64_t *start2,
                     const uint64_t *keys, uint64_t draw, const double *prm, int f64) {
  int64_t total = 0, nrows = 0;
  for (int64_t i = 0; i < count; i++) {
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    nrows += rows[i];
  }
  double *partial = (double *)calloc((size_t)(total > 0 ? total : 1), sizeof(double));
  double *f = (double *)calloc((size_t)(nrows > 0 ? nrows : 1), sizeof(double));
  if (!partial || !f) {
    free(partial);
    free(f);
    return -1;
  }
  const double h2 = prm[1];
  for (int64_t i = 0, j = 0; i < count; i++)
    for (int64_t r = 0; r < rows[i]; r++, j++) f[j] = exp(-xi_get(xi[i], r, f64) * h2);
  const double first[4] = {prm[0], h2, prm[2], 0.0};
  int ok = run_tiles(2, count, theta, p, g, rows, n, stride, start1, keys, draw, first, f,
                     partial, f64);
  if (ok < 0) {
    free(partial);
    free(f);
    return -1;
  }
  /* E_h per (job, member): its tiles' sums in order, then xi += h eps (p.p - N tau) */
  for (int64_t i = 0, t = 0, j = 0; i < count; i++) {
    const int64_t tiles = (n[i] + TILE - 1) / TILE;
    for (int64_t r = 0; r < rows[i]; r++, j++) {
      double ss = 0.0;
      for (int64_t q = 0; q < tiles; q++) ss += partial[t++];
      const double x = xi_get(xi[i], r, f64) + prm[3] * (ss - (double)n[i] * prm[4]);
      if (f64)
        ((double *)xi[i])[r] = x;
      else
        ((float *)xi[i])[r] = (float)x;
      ok &= finite_f64(xi_get(xi[i], r, f64));
      f[j] = exp(-xi_get(xi[i], r, f64) * h2);
    }
  }
  const double second[4] = {prm[2], h2, 0.0, 0.0};
  const int ok2 = run_tiles(3, count, theta, p, g, rows, n, stride, start2, keys, draw, second,
                            f, NULL, f64);
  ok = ok2 < 0 ? -1 : ok & ok2;
  free(partial);
  free(f);
  return ok;
}
