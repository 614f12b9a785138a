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
 * Written so that gcc vectorizes the block loop (with glibc's libmvec for log and sin);
 * compiled at first use by philox.py with -O3 -march=native -ffast-math.
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

/* Entries [start, start+n) of the float32 stream (key, draw), written to out[0..n). */
static void normal_f32(float *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start) {
  float za[BLK], zb[BLK], zc[BLK], zd[BLK];
  const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  const uint32_t d0 = (uint32_t)draw, d1 = (uint32_t)(draw >> 32);
  const uint64_t b0 = start / 4;
  const int64_t nblocks = (int64_t)((start + (uint64_t)n + 3) / 4 - b0);
  for (int64_t b = 0; b < nblocks; b += BLK) {
    const int m = nblocks - b < BLK ? (int)(nblocks - b) : BLK;
    const uint64_t base = b0 + (uint64_t)b;
    const uint32_t blo = (uint32_t)base, bhi = (uint32_t)(base >> 32);
    const int mv = (m + 15) & ~15; /* whole vectors only: short rows cost little */
#pragma omp simd
    for (int i = 0; i < mv; i++) {
      uint32_t x0 = blo + (uint32_t)i;
      uint32_t x1 = bhi + (x0 < blo);
      uint32_t x2 = d0, x3 = d1;
      philox10(&x0, &x1, &x2, &x3, k0, k1);
      float u1 = (float)((x0 >> 8) + 1) * 0x1p-24f;
      float u2 = (float)(x1 >> 8) * 0x1p-24f;
      float u3 = (float)((x2 >> 8) + 1) * 0x1p-24f;
      float u4 = (float)(x3 >> 8) * 0x1p-24f;
      float r1 = sqrtf(-2.0f * logf(u1)), r2 = sqrtf(-2.0f * logf(u3));
      float a1 = 6.28318530717958648f * u2, a2 = 6.28318530717958648f * u4;
      /* sin(a + pi/2) rather than cos(a): gcc fuses sin/cos of one angle into a sincos call
         that has no vector variant */
      za[i] = r1 * sinf(a1 + 1.57079632679489662f);
      zb[i] = r1 * sinf(a1);
      zc[i] = r2 * sinf(a2 + 1.57079632679489662f);
      zd[i] = r2 * sinf(a2);
    }
    const int64_t lo = (int64_t)(base * 4) - (int64_t)start; /* out index of entry 4*base */
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
  }
}

static void normal_f64(double *restrict out, int64_t n, uint64_t key, uint64_t draw,
                       uint64_t start) {
  double za[BLK], zb[BLK];
  const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  const uint32_t d0 = (uint32_t)draw, d1 = (uint32_t)(draw >> 32);
  const uint64_t b0 = start / 2;
  const int64_t nblocks = (int64_t)((start + (uint64_t)n + 1) / 2 - b0);
  for (int64_t b = 0; b < nblocks; b += BLK) {
    const int m = nblocks - b < BLK ? (int)(nblocks - b) : BLK;
    const uint64_t base = b0 + (uint64_t)b;
    const uint32_t blo = (uint32_t)base, bhi = (uint32_t)(base >> 32);
    const int mv = (m + 15) & ~15; /* whole vectors only: short rows cost little */
#pragma omp simd
    for (int i = 0; i < mv; i++) {
      uint32_t x0 = blo + (uint32_t)i;
      uint32_t x1 = bhi + (x0 < blo);
      uint32_t x2 = d0, x3 = d1;
      philox10(&x0, &x1, &x2, &x3, k0, k1);
      double u1 = (double)(((((uint64_t)x0 << 32) | x1) >> 11) + 1) * 0x1p-53;
      double u2 = (double)((((uint64_t)x2 << 32) | x3) >> 11) * 0x1p-53;
      double r = sqrt(-2.0 * log(u1));
      double a = 6.283185307179586477 * u2;
      za[i] = r * sin(a + 1.5707963267948966192);
      zb[i] = r * sin(a);
    }
    const int64_t lo = (int64_t)(base * 2) - (int64_t)start;
    for (int i = 0; i < m; i++) {
      const int64_t j = lo + 2 * i;
      if (j >= 0 && j < n) out[j] = za[i];
      if (j + 1 >= 0 && j + 1 < n) out[j + 1] = zb[i];
    }
  }
}

/* A batch of jobs, shared among the OpenMP threads (the runtime torch uses, so its waiting
   threads pick the work up instead of competing with it). Job i covers tensor i: rows[i] rows
   of n[i] entries (row r at x[i] + r*stride[i]), row r taking stream entries
   [start[i], start[i]+n[i]) of (keys[r], draw). Work is cut into tiles of TILE entries; every
   entry is a function of its tile alone, so results do not depend on the thread count.
   mode 0: x <- z;  mode 1: x <- a x + b z (a == 0: x <- b z). */
#define TILE 4096
/* below this many entries a batch runs on one thread (a parallel region costs ~µs) */
#define PARALLEL_MIN (1 << 13)

static void tile_f32(float *restrict xo, int64_t m, uint64_t key, uint64_t draw, uint64_t start,
                     int mode, float a, float b) {
  if (mode == 0) {
    normal_f32(xo, m, key, draw, start);
    return;
  }
  float z[TILE];
  normal_f32(z, m, key, draw, start);
  if (a == 0.0f) {
    for (int64_t i = 0; i < m; i++) xo[i] = b * z[i];
  } else {
    for (int64_t i = 0; i < m; i++) xo[i] = a * xo[i] + b * z[i];
  }
}

static void tile_f64(double *restrict xo, int64_t m, uint64_t key, uint64_t draw, uint64_t start,
                     int mode, double a, double b) {
  if (mode == 0) {
    normal_f64(xo, m, key, draw, start);
    return;
  }
  double z[TILE];
  normal_f64(z, m, key, draw, start);
  if (a == 0.0) {
    for (int64_t i = 0; i < m; i++) xo[i] = b * z[i];
  } else {
    for (int64_t i = 0; i < m; i++) xo[i] = a * xo[i] + b * z[i];
  }
}

void tt_philox_jobs(int64_t count, void *const *x, const int64_t *rows, const int64_t *n,
                    const int64_t *stride, const uint64_t *start, const uint64_t *keys,
                    uint64_t draw, int mode, double a, double b, int f64) {
  int64_t total = 0, entries = 0;
  for (int64_t i = 0; i < count; i++) {
    total += rows[i] * ((n[i] + TILE - 1) / TILE);
    entries += rows[i] * n[i];
  }
  /* one thread for small batches: a parallel region costs more than it saves */
#pragma omp parallel for schedule(static) if (entries >= PARALLEL_MIN)
  for (int64_t t = 0; t < total; t++) {
    int64_t i = 0, rest = t, tiles = 0;
    for (;; i++) {
      tiles = (n[i] + TILE - 1) / TILE;
      if (rest < rows[i] * tiles) break;
      rest -= rows[i] * tiles;
    }
    const int64_t r = rest / tiles, off = (rest % tiles) * TILE;
    const int64_t m = n[i] - off < TILE ? n[i] - off : TILE;
    const uint64_t s = start[i] + (uint64_t)off;
    if (f64)
      tile_f64((double *)x[i] + r * stride[i] + off, m, keys[r], draw, s, mode, a, b);
    else
      tile_f32((float *)x[i] + r * stride[i] + off, m, keys[r], draw, s, mode, (float)a,
               (float)b);
  }
}

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
                  double *sum) {                                                             \
    T z[TILE];                                                                               \
    NORMAL(z, m, key, draw, start);                                                          \
    int ok = 1;                                                                              \
    double acc = 0.0;                                                                        \
    if (kind == 0) {                                                                         \
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
    if (f64)
      ok &= scheme_tile_f64(kind, (double *)theta[i] + at, p[i] ? (double *)p[i] + at : NULL,
                            g[i] ? (const double *)g[i] + at : NULL, m, keys[r], draw,
                            start[i] + (uint64_t)off, prm, f, &acc);
    else
      ok &= scheme_tile_f32(kind, (float *)theta[i] + at, p[i] ? (float *)p[i] + at : NULL,
                            g[i] ? (const float *)g[i] + at : NULL, m, keys[r], draw,
                            start[i] + (uint64_t)off, prm, (float)f, &acc);
    if (partial) partial[t] = acc;
  }
  return ok;
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
  double *f = (double *)malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof(double));
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
  ok &= run_tiles(3, count, theta, p, g, rows, n, stride, start2, keys, draw, second, f, NULL,
                  f64);
  free(partial);
  free(f);
  return ok;
}
