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
/* 512-bit vectors where AVX-512 is there: gcc's default for these CPUs is 256, which halves
   the lanes of libmvec's log and sin (their 16- and 8-lane variants give the same bits) */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
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
/* high and low words of x*m per 32-bit lane, from the two 64-bit products of the even and the
   odd lanes (no vpmulld: its two uops cost more than a shift and a blend) */
static inline void mulhilo_epu32(__m512i x, __m512i m, __m512i *hi, __m512i *lo) {
  const __m512i even = _mm512_mul_epu32(x, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  *hi = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(even, 32), odd);
  *lo = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 32));
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
      __m512i hi0, lo0, hi1, lo1;
      mulhilo_epu32(x0, m0, &hi0, &lo0);
      mulhilo_epu32(x2, m1, &hi1, &lo1);
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
 * Step programs (fused.py): one parameter group's whole step, as the list of sub-steps its
 * splitting compiles to (splittings.py), interpreted over tiles of TILE entries of
 * (theta, p, grad) while they are in cache; the noise is made tile by tile and never stored.
 * Job i: rows[i] rows (the ensemble members, rows[i] == K) of n[i] entries at
 * theta[i]/p[i]/g[i] + r*stride[i] (the three share a layout); row r draws from the stream
 * (keys[r], draw), noise op with draw index j from entry start[j*count + i] on.
 *
 *   op  A  th += t p            coef {t}         op  C  p *= exp(-xi t)   coef {t}
 *       B  p  -= k g            coef {k}             D  p += s z          coef {s}
 *       O  p  = c p + d z       coef {c, d}          E  xi += a (p.p - N tau)  coef {a, tau}
 *       R  p  = d z (resample)  coef {d}             G  th -= t g         coef {t}
 *                                                    W  th += s z         coef {s}
 *
 * Coefficients are per member: coef[(o*SLOTS + s)*K + r]. E ops cut the program into
 * segments (one parallel pass each); p.p is summed per tile in float64 and reduced in a fixed
 * order, so results do not depend on the thread count. A row with skip[r] != 0 is not
 * touched. rowok[r] = 0 when a value of member r written by this call is not finite.
 * Returns 1 (all finite), 0 (some row not finite), 2 (the screen of the scount jobs sx found
 * a row not finite: nothing written), -1 (no memory), -2 - i (job i does not fit), -100 - o (bad op o).
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

enum { OP_A, OP_B, OP_O, OP_R, OP_C, OP_D, OP_E, OP_G, OP_W, OP_COUNT };
#define SLOTS 2
#define MAXOPS 64
#define MAXDRAWS 8
#define MAXSEG 8 /* C ops per segment */
#define MAXZ 2   /* noise ops per segment */

static int is_noise(int op) { return op == OP_O || op == OP_R || op == OP_D || op == OP_W; }

/* p.p of a tile in float64, in 8 fixed lanes combined in a fixed order, compiled without
   -ffast-math's reassociation: the result does not depend on the alignment of p (a member of
   an ensemble sums exactly like the separate run) */
#pragma GCC push_options
#pragma GCC optimize("no-fast-math")
#define DEFINE_SUMSQ(T, NAME)                                                                  \
  static double NAME(const T *p, int64_t m) {                                                \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                \
    int64_t i = 0;                                                                           \
    for (; i + 8 <= m; i += 8)                                                               \
      for (int l = 0; l < 8; l++) acc[l] += (double)p[i + l] * (double)p[i + l];             \
    for (int l = 0; i < m; i++, l++) acc[l] += (double)p[i] * (double)p[i];                  \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
  }
DEFINE_SUMSQ(float, sumsq_f32)
DEFINE_SUMSQ(double, sumsq_f64)
/* the scalar exp, never a vector variant (libmvec's differs in the last bits): a member's
   C factor must not depend on how many members share the call */
__attribute__((noinline)) static double exp_scalar(double x) { return exp(x); }
#pragma GCC pop_options

/* A tile is run in sub-blocks of about SUB32 (float) or SUB64 (double) entries: their theta, p,
   gradient and noise stay in L1 while the segment's ops pass over them one after the other.
   A sub-block's noise is one call of normal_*: its boundaries inside the tile fall on Philox
   block boundaries (4 float or 2 double entries of the stream), so no block is made twice. */
#define SUB32 1024
#define SUB64 512
static inline int64_t sub_end(int64_t s0, int64_t m, uint64_t first, int64_t sub) {
  /* first: the stream index of the tile's entry 0; the sub-block ends where the stream
     index is a multiple of sub (itself a multiple of the entries per Philox block) */
  const int64_t next = (int64_t)((first + (uint64_t)s0) / (uint64_t)sub + 1) * sub - (int64_t)first;
  return next < m ? next : m;
}

/* A segment's ops on a sub-block of a tile, op after op, each a vector loop (in L1). */
#define DEFINE_SEGMENT_TILE(T, NAME, isfinite)                                          \
  static int NAME(const int *ops, int o0, int o1, const double *coef, int64_t K, int64_t r,  \
                  T *restrict th, T *restrict p, const T *restrict g, int64_t m,             \
                  const T *const *z, const T *cf) {                                          \
    int q = 0, qc = 0;                                                                       \
    for (int o = o0; o < o1; o++) {                                                          \
      const T a = (T)coef[(o * SLOTS) * K + r], b = (T)coef[(o * SLOTS + 1) * K + r];        \
      switch (ops[o]) {                                                                      \
      case OP_A:                                                                             \
        for (int64_t i = 0; i < m; i++) th[i] = th[i] + a * p[i];                            \
        break;                                                                               \
      case OP_B:                                                                             \
        for (int64_t i = 0; i < m; i++) p[i] = p[i] - a * g[i];                              \
        break;                                                                               \
      case OP_O: {                                                                           \
        const T *restrict zz = z[q++];                                                       \
        for (int64_t i = 0; i < m; i++) p[i] = a * p[i] + b * zz[i];                         \
        break;                                                                               \
      }                                                                                      \
      case OP_R: {                                                                           \
        const T *restrict zz = z[q++];                                                       \
        for (int64_t i = 0; i < m; i++) p[i] = a * zz[i];                                    \
        break;                                                                               \
      }                                                                                      \
      case OP_C: {                                                                           \
        const T f = cf[qc++];                                                                \
        for (int64_t i = 0; i < m; i++) p[i] = p[i] * f;                                     \
        break;                                                                               \
      }                                                                                      \
      case OP_D: {                                                                           \
        const T *restrict zz = z[q++];                                                       \
        for (int64_t i = 0; i < m; i++) p[i] = p[i] + a * zz[i];                             \
        break;                                                                               \
      }                                                                                      \
      case OP_G:                                                                             \
        for (int64_t i = 0; i < m; i++) th[i] = th[i] - a * g[i];                            \
        break;                                                                               \
      case OP_W: {                                                                           \
        const T *restrict zz = z[q++];                                                       \
        for (int64_t i = 0; i < m; i++) th[i] = th[i] + a * zz[i];                           \
        break;                                                                               \
      }                                                                                      \
      }                                                                                      \
    }                                                                                        \
    int ok = 1;                                                                              \
    for (int64_t i = 0; i < m; i++) ok &= isfinite(th[i]);                                   \
    if (p)                                                                                   \
      for (int64_t i = 0; i < m; i++) ok &= isfinite(p[i]);                                  \
    return ok;                                                                               \
  }

DEFINE_SEGMENT_TILE(float, segment_tile_f32, finite_f32)
DEFINE_SEGMENT_TILE(double, segment_tile_f64, finite_f64)

static int rows_finite_f32(const float *x, int64_t m) {
  int ok = 1;
  for (int64_t i = 0; i < m; i++) ok &= finite_f32(x[i]);
  return ok;
}
static int rows_finite_f64(const double *x, int64_t m) {
  int ok = 1;
  for (int64_t i = 0; i < m; i++) ok &= finite_f64(x[i]);
  return ok;
}

/* tile t of the batch -> (job i, row r, offset off, length m, global row index jrow) */
static inline void locate(int64_t t, const int64_t *rows, const int64_t *n, int64_t *i_,
                          int64_t *r_, int64_t *off_, int64_t *m_) {
  int64_t i = 0, rest = t, tiles = 0;
  for (;; i++) {
    tiles = (n[i] + TILE - 1) / TILE;
    if (rest < rows[i] * tiles) break;
    rest -= rows[i] * tiles;
  }
  *i_ = i;
  *r_ = rest / tiles;
  *off_ = (rest % tiles) * TILE;
  *m_ = n[i] - *off_ < TILE ? n[i] - *off_ : TILE;
}

int tt_finite_rows(int64_t count, void *const *x, const int64_t *rows, const int64_t *n,
                   const int64_t *stride, const int64_t *numel, int64_t K, int32_t *rowok,
                   int f64);

static double xi_get(const void *xi, int64_t r, int f64) {
  return f64 ? ((const double *)xi)[r] : (double)((const float *)xi)[r];
}

/* Check a program and its jobs before touching memory: -100 - o for a bad op o, -2 - i for
   job i whose sizes do not fit the tensors (numel[3*i + {0,1,2}] = entries of theta, p, g;
   0 where the tensor is absent), 0 if fine. */
static int check_program(int64_t count, void *const *theta, void *const *p, void *const *g,
                         void *const *xi, const int64_t *rows, const int64_t *n,
                         const int64_t *stride, const int64_t *numel, int64_t K, int nops,
                         const int *ops, const int *opdraw, int ndraws) {
  if (nops < 0 || nops > MAXOPS || ndraws < 0 || ndraws > MAXDRAWS || K < 1) return -100;
  int noise = 0, cops = 0;
  for (int o = 0; o < nops; o++) {
    if (ops[o] < 0 || ops[o] >= OP_COUNT) return -100 - o;
    if (is_noise(ops[o]) && (opdraw[o] < 0 || opdraw[o] >= ndraws)) return -100 - o;
    if (ops[o] == OP_E) {
      noise = cops = 0;
      continue;
    }
    if (is_noise(ops[o]) && ++noise > MAXZ) return -100 - o;
    if (ops[o] == OP_C && ++cops > MAXSEG) return -100 - o;
  }
  for (int64_t i = 0; i < count; i++) {
    if (rows[i] != K || n[i] < 0 || (rows[i] > 1 && stride[i] < n[i]) || !theta[i]) return -2 - (int)i;
    const int64_t need = (rows[i] - 1) * stride[i] + n[i];
    if (n[i] > 0 && numel[3 * i] < need) return -2 - (int)i;
    for (int o = 0; o < nops; o++) {
      const int op = ops[o];
      const int uses_p = op == OP_A || op == OP_B || op == OP_O || op == OP_R || op == OP_C ||
                         op == OP_D || op == OP_E;
      const int uses_g = op == OP_B || op == OP_G;
      if (uses_p && (!p[i] || (n[i] > 0 && numel[3 * i + 1] < need))) return -2 - (int)i;
      if (uses_g && (!g[i] || (n[i] > 0 && numel[3 * i + 2] < need))) return -2 - (int)i;
      if ((op == OP_E || op == OP_C) && !xi[i]) return -2 - (int)i;
    }
  }
  return 0;
}

/* One tile of a segment (tt_program's parallel loop; its locals in scope): the ops run
   sub-block by sub-block (sub_end), each sub-block's noise made for it or taken from the
   short-row buffers; then the tile's p.p when an E op follows. */
#define RUN_TILE(T, SUB, NORMAL, SEGMENT, SUMSQ)                                               \
  do {                                                                                       \
    T zbuf[MAXZ][SUB];                                                                       \
    const T *z[MAXZ];                                                                        \
    T f[MAXSEG];                                                                             \
    for (int c = 0; c < nc; c++) f[c] = (T)cf[(i * K + r) * MAXSEG + c];                     \
    int ok = 1;                                                                              \
    for (int64_t s0 = 0, s1; s0 < m; s0 = s1) {                                              \
      s1 = sub_end(s0, m, start[i] + (uint64_t)off, SUB);                                    \
      int q = 0, own = 0;                                                                    \
      for (int o = o0; o < o1; o++) {                                                        \
        if (!is_noise(ops[o])) continue;                                                     \
        const int j = opdraw[o];                                                             \
        if (zb[i * MAXDRAWS + j]) {                                                          \
          z[q++] = (const T *)zb[i * MAXDRAWS + j] + zat + s0;                               \
        } else {                                                                             \
          T *buf = zbuf[own++];                                                              \
          NORMAL(buf, s1 - s0, keys[r], draw, start[j * count + i] + (uint64_t)(off + s0));  \
          z[q++] = buf;                                                                      \
        }                                                                                    \
      }                                                                                      \
      ok &= SEGMENT(ops, o0, o1, coef, K, r, (T *)theta[i] + at + s0,                        \
                    p[i] ? (T *)p[i] + at + s0 : NULL,                                       \
                    g[i] ? (const T *)g[i] + at + s0 : NULL, s1 - s0, z, f);                 \
    }                                                                                        \
    if (reduce) acc = SUMSQ((const T *)p[i] + at, m);                                        \
    tileok[t] = ok;                                                                          \
  } while (0)

int tt_program(int64_t count, void *const *theta, void *const *p, void *const *g,
               void *const *xi, const int64_t *rows, const int64_t *n, const int64_t *stride,
               const int64_t *numel, int nops, const int *ops, const int *opdraw,
               const double *coef, int ndraws, const uint64_t *start, const uint64_t *keys,
               uint64_t draw, const int32_t *skip, int64_t scount, void *const *sx,
               const int64_t *srows, const int64_t *sn, const int64_t *snumel, int32_t *rowok,
               int f64) {
  const int64_t K = count > 0 ? rows[0] : 1;
  const int bad = check_program(count, theta, p, g, xi, rows, n, stride, numel, K, nops, ops,
                                opdraw, ndraws);
  if (bad) return bad;
  for (int64_t r = 0; r < K; r++) rowok[r] = 1;
  int64_t total = 0, entries = 0;
  for (int64_t i = 0; i < count; i++) {
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    entries += rows[i] * n[i];
  }
  const size_t esz = f64 ? sizeof(double) : sizeof(float);
  int32_t *tileok = (int32_t *)malloc((size_t)(total > 0 ? total : 1) * sizeof(int32_t));
  if (!tileok) return -1;
  /* the gradient screen (scount jobs sx, e.g. the gradients of every group of the step):
     nothing is written when a (not skipped) row is not finite, so that a caller can skip the
     batch with the state untouched */
  if (scount > 0) {
    const int all = tt_finite_rows(scount, sx, srows, sn, sn, snumel, K, rowok, f64);
    if (all < 0) {
      free(tileok);
      return all;
    }
    int bad = 0;
    for (int64_t r = 0; r < K; r++) {
      if (skip && skip[r]) rowok[r] = 1;
      bad |= !rowok[r];
    }
    if (bad) {
      free(tileok);
      return 2; /* a gradient is not finite: nothing written */
    }
  }
  /* short rows (an ensemble of small tensors): every draw's noise for them first, many rows
     per vector loop (normal_rows), into buffers that stay in cache */
  int used[MAXDRAWS] = {0};
  for (int o = 0; o < nops; o++)
    if (is_noise(ops[o])) used[opdraw[o]] = 1;
  void **zb = (void **)calloc((size_t)(count * MAXDRAWS > 0 ? count * MAXDRAWS : 1),
                              sizeof(void *));
  double *partial = (double *)calloc((size_t)(total > 0 ? total : 1), sizeof(double));
  double *cf = (double *)calloc((size_t)(count * K * MAXSEG > 0 ? count * K * MAXSEG : 1),
                                sizeof(double));
  int status = 1;
  if (!zb || !partial || !cf) {
    status = -1;
    goto done;
  }
  int64_t chunks = 0;
  for (int64_t i = 0; i < count; i++) {
    if (!(rows[i] > 1 && n[i] > 0 && n[i] < SHORT_ROW)) continue;
    for (int j = 0; j < ndraws; j++) {
      if (!used[j]) continue;
      zb[i * MAXDRAWS + j] = malloc((size_t)(rows[i] * n[i]) * esz);
      if (!zb[i * MAXDRAWS + j]) {
        status = -1;
        goto done;
      }
      chunks += (rows[i] + ROWS_PER_CHUNK(n[i]) - 1) / ROWS_PER_CHUNK(n[i]);
    }
  }
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t i = 0, rest = c, per = 1, nc = 0;
    int j = 0;
    for (;; ) {
      if (zb[i * MAXDRAWS + j]) {
        per = ROWS_PER_CHUNK(n[i]);
        nc = (rows[i] + per - 1) / per;
        if (rest < nc) break;
        rest -= nc;
      }
      if (++j == MAXDRAWS) {
        j = 0;
        i++;
      }
    }
    const int64_t r0 = rest * per, nr = rows[i] - r0 < per ? rows[i] - r0 : per;
    const uint64_t s = start[j * count + i];
    if (f64)
      normal_rows_f64((double *)zb[i * MAXDRAWS + j] + r0 * n[i], nr, n[i], n[i], keys + r0,
                      draw, s);
    else
      normal_rows_f32((float *)zb[i * MAXDRAWS + j] + r0 * n[i], nr, n[i], n[i], keys + r0,
                      draw, s);
  }
  for (int o0 = 0; o0 <= nops;) {
    int o1 = o0;
    while (o1 < nops && ops[o1] != OP_E) o1++;
    const int reduce = o1 < nops; /* an E op follows: sum p.p per tile */
    /* C factors of this segment per (job, row): exp(-xi t) */
    int nc = 0;
    for (int o = o0; o < o1; o++) {
      if (ops[o] != OP_C) continue;
      for (int64_t i = 0; i < count; i++)
        for (int64_t r = 0; r < K; r++)
          cf[(i * K + r) * MAXSEG + nc] =
              exp_scalar(-xi_get(xi[i], r, f64) * coef[(o * SLOTS) * K + r]);
      nc++;
    }
    int segok = 1;
    if (o1 > o0 || reduce) {
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
      for (int64_t t = 0; t < total; t++) {
        int64_t i, r, off, m;
        locate(t, rows, n, &i, &r, &off, &m);
        tileok[t] = 1;
        if (skip && skip[r]) continue;
        const int64_t at = r * stride[i] + off;
        const int64_t zat = r * n[i] + off; /* in the short-row buffers */
        double acc = 0.0;
        if (f64)
          RUN_TILE(double, SUB64, normal_f64, segment_tile_f64, sumsq_f64);
        else
          RUN_TILE(float, SUB32, normal_f32, segment_tile_f32, sumsq_f32);
        partial[t] = acc;
      }
      for (int64_t t = 0; t < total; t++) {
        if (tileok[t]) continue;
        int64_t i, r, off, m;
        locate(t, rows, n, &i, &r, &off, &m);
        rowok[r] = 0;
        segok = 0;
      }
    }
    if (!segok) status = 0;
    if (!reduce) break;
    /* E per (job, member): its tiles' sums in order, then xi += a (p.p - N tau) */
    const int e = o1;
    for (int64_t i = 0, t = 0; i < count; i++) {
      const int64_t tiles = (n[i] + TILE - 1) / TILE;
      for (int64_t r = 0; r < rows[i]; r++) {
        double ss = 0.0;
        for (int64_t q = 0; q < tiles; q++) ss += partial[t++];
        if (skip && skip[r]) continue;
        const double a = coef[(e * SLOTS) * K + r], tau = coef[(e * SLOTS + 1) * K + r];
        const double x = xi_get(xi[i], r, f64) + a * (ss - (double)n[i] * tau);
        if (f64)
          ((double *)xi[i])[r] = x;
        else
          ((float *)xi[i])[r] = (float)x;
        if (!finite_f64(xi_get(xi[i], r, f64))) {
          rowok[r] = 0;
          status = 0;
        }
      }
    }
    o0 = o1 + 1;
  }
done:
  if (zb)
    for (int64_t k = 0; k < count * MAXDRAWS; k++) free(zb[k]);
  free(zb);
  free(partial);
  free(cf);
  free(tileok);
  return status;
}

/* tt_program with its arguments in one array of 24 int64 slots (pointers as addresses, in
   the order of tt_program's parameters without rowok): one ctypes argument to convert
   instead of 25, a few microseconds a call on small models. */
int tt_program_v(const int64_t *a, int32_t *rowok) {
#define P_(k) ((void *const *)(intptr_t)a[k])
#define L_(k) ((const int64_t *)(intptr_t)a[k])
  return tt_program(a[0], P_(1), P_(2), P_(3), P_(4), L_(5), L_(6), L_(7), L_(8), (int)a[9],
                    (const int *)(intptr_t)a[10], (const int *)(intptr_t)a[11],
                    (const double *)(intptr_t)a[12], (int)a[13], (const uint64_t *)(intptr_t)a[14],
                    (const uint64_t *)(intptr_t)a[15], (uint64_t)a[16],
                    (const int32_t *)(intptr_t)a[17], a[18], P_(19), L_(20), L_(21), L_(22),
                    rowok, (int)a[23]);
#undef P_
#undef L_
}

/* Plain draws (NoiseSource.draw, philox_normal_): job i's rows[i] rows of n[i] entries (row r
   at x[i] + r*stride[i]) get stream entries [start[i], start[i]+n[i]) of (keys[r], draw), in
   tiles shared among the OpenMP threads. numel[i]: entries of x[i], checked. */
int tt_philox_fill(int64_t count, void *const *x, const int64_t *rows, const int64_t *n,
                   const int64_t *stride, const int64_t *numel, const uint64_t *start,
                   const uint64_t *keys, uint64_t draw, int f64) {
  int64_t total = 0, entries = 0;
  for (int64_t i = 0; i < count; i++) {
    if (rows[i] < 0 || n[i] < 0 || (rows[i] > 1 && stride[i] < n[i]) || !x[i]) return -2 - (int)i;
    if (rows[i] > 0 && n[i] > 0 && numel[i] < (rows[i] - 1) * stride[i] + n[i]) return -2 - (int)i;
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    entries += rows[i] * n[i];
  }
  /* short rows many at a time */
  for (int64_t i = 0; i < count; i++) {
    if (rows[i] > 1 && n[i] > 0 && n[i] < SHORT_ROW) {
      if (f64)
        normal_rows_f64((double *)x[i], rows[i], n[i], stride[i], keys, draw, start[i]);
      else
        normal_rows_f32((float *)x[i], rows[i], n[i], stride[i], keys, draw, start[i]);
    }
  }
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
  for (int64_t t = 0; t < total; t++) {
    int64_t i, r, off, m;
    locate(t, rows, n, &i, &r, &off, &m);
    if (rows[i] > 1 && n[i] < SHORT_ROW) continue;
    const int64_t at = r * stride[i] + off;
    if (f64)
      normal_f64((double *)x[i] + at, m, keys[r], draw, start[i] + (uint64_t)off);
    else
      normal_f32((float *)x[i] + at, m, keys[r], draw, start[i] + (uint64_t)off);
  }
  return 0;
}

/* Finiteness per member: rowok[r] = 0 when an entry of row r of any job is not finite
   (job i: rows[i] == K rows of n[i] entries at x[i] + r*stride[i]; numel[i] checked). */
int tt_finite_rows(int64_t count, void *const *x, const int64_t *rows, const int64_t *n,
                   const int64_t *stride, const int64_t *numel, int64_t K, int32_t *rowok,
                   int f64) {
  int64_t total = 0, entries = 0;
  for (int64_t i = 0; i < count; i++) {
    if (rows[i] != K || n[i] < 0 || (rows[i] > 1 && stride[i] < n[i]) || !x[i]) return -2 - (int)i;
    if (n[i] > 0 && numel[i] < (rows[i] - 1) * stride[i] + n[i]) return -2 - (int)i;
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    entries += rows[i] * n[i];
  }
  for (int64_t r = 0; r < K; r++) rowok[r] = 1;
  int32_t *tileok = (int32_t *)malloc((size_t)(total > 0 ? total : 1) * sizeof(int32_t));
  if (!tileok) return -1;
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
  for (int64_t t = 0; t < total; t++) {
    int64_t i, r, off, m;
    locate(t, rows, n, &i, &r, &off, &m);
    const int64_t at = r * stride[i] + off;
    tileok[t] = f64 ? rows_finite_f64((const double *)x[i] + at, m)
                    : rows_finite_f32((const float *)x[i] + at, m);
  }
  int all = 1;
  for (int64_t t = 0; t < total; t++) {
    if (tileok[t]) continue;
    int64_t i, r, off, m;
    locate(t, rows, n, &i, &r, &off, &m);
    rowok[r] = 0;
    all = 0;
  }
  free(tileok);
  return all;
}
