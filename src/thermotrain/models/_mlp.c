/* Fused loss and gradient of an ensemble of small MLPs (fused.py); after it, tt_mlp_line, the
 * forward-only loss and accuracy along lines through weight space (fused.evaluate_line,
 * landscape.interpolate).
 *
 * Member k (its parameters at W[l] + k*out_l*in_l, b[l] + k*out_l) sees the rows idx[k, :]
 * of the data X (N x in_0) and targets Y (N): z_l = a_{l-1} W_l^T + b_l, a_l = phi(z_l)
 * (ReLU or tanh) for hidden layers, logits z_L; loss = the batch mean of binary
 * cross-entropy with logits (out_L = 1, Y in [0, 1]) or softmax cross-entropy (out_L >= 2,
 * Y = class index). Writes the gradient of member k's mean loss into gW/gb (overwriting)
 * and its loss into loss[k]. With VW/Vb (else NULL) the gradient is taken at the shifted
 * parameters theta + alpha v instead (theta unchanged). Members are independent and shared
 * among torch's OpenMP threads; each member's numbers are computed alone, so results do
 * not depend on the thread count or on K.
 *
 * The body below is compiled twice (float, double) by including this file into itself.
 * Tiny layers are the point: rows are ~100 entries, so passes are fused (activation into the
 * forward row, the bias gradient into the weight gradient, the activation derivative into
 * the back-propagated row) and inputs of <= 4 features get their own single-pass loops.
 */
#ifndef MLP_BODY
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXL 16
#define INLINE inline __attribute__((always_inline))

#define MLP_BODY
#define T float
#define S f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#define TANH tanhf
#define FABS fabsf
#include "_mlp.c"
#undef T
#undef S
#undef EXP
#undef LOG
#undef LOG1P
#undef TANH
#undef FABS

#define T double
#define S f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#define TANH tanh
#define FABS fabs
#include "_mlp.c"

#else /* MLP_BODY: the type-generic part */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define F(name) CAT(name, S)

static inline void F(axpy)(int64_t n, T a, const T *restrict x, T *restrict y) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static inline T F(dot)(int64_t n, const T *restrict x, const T *restrict y) {
  T s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
  return s;
}

/* z = b + sum_i x_i t_i (t_i = row i of W^T, length out), then phi if act >= 0; ReLU is
   applied in the same pass (RELU_IF: loop-invariant, unswitched by the compiler) */
#define RELU_IF(v) (act == 0 ? ((v) > 0 ? (v) : 0) : (v))
static inline void F(row_forward)(int64_t in, int64_t out, const T *restrict x,
                                  const T *restrict t, const T *restrict b, T *restrict z,
                                  int act) {
  switch (in) {
    case 1:
      for (int64_t o = 0; o < out; o++) {
        const T v = b[o] + x[0] * t[o];
        z[o] = RELU_IF(v);
      }
      break;
    case 2:
      for (int64_t o = 0; o < out; o++) {
        const T v = b[o] + x[0] * t[o] + x[1] * t[out + o];
        z[o] = RELU_IF(v);
      }
      break;
    case 3:
      for (int64_t o = 0; o < out; o++) {
        const T v = b[o] + x[0] * t[o] + x[1] * t[out + o] + x[2] * t[2 * out + o];
        z[o] = RELU_IF(v);
      }
      break;
    case 4:
      for (int64_t o = 0; o < out; o++) {
        const T v = b[o] + x[0] * t[o] + x[1] * t[out + o] + x[2] * t[2 * out + o] +
                    x[3] * t[3 * out + o];
        z[o] = RELU_IF(v);
      }
      break;
    default:
      for (int64_t o = 0; o < out; o++) z[o] = b[o];
      for (int64_t i = 0; i < in; i++) F(axpy)(out, x[i], t + i * out, z);
      if (act == 0)
        for (int64_t o = 0; o < out; o++) z[o] = z[o] > 0 ? z[o] : 0;
  }
  if (act == 1)
    for (int64_t o = 0; o < out; o++) z[o] = TANH(z[o]);
}
#undef RELU_IF

/* gb += d; t_i += x_i d (t = the weight gradient transposed, in x out) */
static inline void F(row_grad_t)(int64_t in, int64_t out, const T *restrict x,
                                 const T *restrict d, T *restrict gb, T *restrict t) {
  switch (in) {
    case 1:
      for (int64_t o = 0; o < out; o++) {
        gb[o] += d[o];
        t[o] += x[0] * d[o];
      }
      break;
    case 2:
      for (int64_t o = 0; o < out; o++) {
        gb[o] += d[o];
        t[o] += x[0] * d[o];
        t[out + o] += x[1] * d[o];
      }
      break;
    default:
      for (int64_t o = 0; o < out; o++) gb[o] += d[o];
      for (int64_t i = 0; i < in; i++) F(axpy)(out, x[i], d, t + i * out);
  }
}

/* One member's loss (returned) and gradient at its parameters Wm/bm (member k's, maybe
   shifted), written into gWm/gbm; rows ik of X, Y; a: its work space (need + 2 B maxw +
   maxio entries, see tt_mlp_grad). Inlined into each caller: a call would change how the
   compiler vectorizes the body, and with it the bits (tt_mlp_grad's are the same as when
   the body was written inside it, checked on 36 configurations). */
static INLINE T F(member_grad)(int64_t L, const int64_t *w, const T *const *Wm,
                               const T *const *bm, T *const *gWm, T *const *gbm, const T *X,
                               const T *Y, const int64_t *ik, int64_t B, int act, T *a,
                               int64_t need, int64_t maxw) {
  T *d = a + need, *e = d + B * maxw, *t = e + B * maxw;
  T *al[MAXL + 1];
  al[0] = a;
  for (int64_t l = 1; l <= L; l++) al[l] = al[l - 1] + B * w[l - 1];
  for (int64_t r = 0; r < B; r++)
    memcpy(al[0] + r * w[0], X + ik[r] * w[0], sizeof(T) * (size_t)w[0]);

  /* forward */
  for (int64_t l = 1; l <= L; l++) {
    const int64_t in = w[l - 1], out = w[l];
    const T *Wk = Wm[l - 1], *bk = bm[l - 1];
    const T *x = al[l - 1];
    T *z = al[l];
    const int phi = l < L ? act : -1;
    if (out < 8) { /* dot products along the input */
      for (int64_t r = 0; r < B; r++)
        for (int64_t o = 0; o < out; o++) {
          T v = F(dot)(in, x + r * in, Wk + o * in) + bk[o];
          if (phi == 0) v = v > 0 ? v : 0;
          if (phi == 1) v = TANH(v);
          z[r * out + o] = v;
        }
    } else { /* rows of W^T along the output */
      for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) t[i * out + o] = Wk[o * in + i];
      for (int64_t r = 0; r < B; r++)
        F(row_forward)(in, out, x + r * in, t, bk, z + r * out, phi);
    }
  }

  /* loss and dL/dz_L into d */
  const int64_t C = w[L];
  const T *zL = al[L];
  double total = 0;
  const T inv = (T)1 / (T)B;
  if (C == 1) {
    for (int64_t r = 0; r < B; r++) {
      const T zz = zL[r], y = Y[ik[r]];
      const T m = zz > 0 ? zz : 0;
      /* e <= 1: no overflow. (1 / (1 + exp(-z)) overflows for z << 0, and under
         -ffast-math 1/inf is a reciprocal estimate refined by Newton steps: NaN.) */
      const T e = EXP(-FABS(zz));
      total += (double)(m - zz * y + LOG1P(e));
      const T sig = zz >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
      d[r] = (sig - y) * inv;
    }
  } else {
    for (int64_t r = 0; r < B; r++) {
      const T *zr = zL + r * C;
      T m = zr[0];
      for (int64_t c = 1; c < C; c++) m = zr[c] > m ? zr[c] : m;
      T s = 0;
      for (int64_t c = 0; c < C; c++) s += EXP(zr[c] - m);
      const int64_t yc = (int64_t)Y[ik[r]];
      total += (double)(m + LOG(s) - zr[yc]);
      for (int64_t c = 0; c < C; c++) d[r * C + c] = EXP(zr[c] - m) / s * inv;
      d[r * C + yc] -= inv;
    }
  }

  /* backward: d holds dL/dz_l of layer l */
  for (int64_t l = L; l >= 1; l--) {
    const int64_t in = w[l - 1], out = w[l];
    const T *Wk = Wm[l - 1];
    T *gWk = gWm[l - 1], *gbk = gbm[l - 1];
    const T *x = al[l - 1];
    memset(gbk, 0, sizeof(T) * (size_t)out);
    if (in >= out) { /* weight-gradient rows along the input */
      memset(gWk, 0, sizeof(T) * (size_t)(out * in));
      for (int64_t r = 0; r < B; r++)
        for (int64_t o = 0; o < out; o++) {
          gbk[o] += d[r * out + o];
          F(axpy)(in, d[r * out + o], x + r * in, gWk + o * in);
        }
    } else { /* transposed, rows along the output */
      memset(t, 0, sizeof(T) * (size_t)(out * in));
      for (int64_t r = 0; r < B; r++) F(row_grad_t)(in, out, x + r * in, d + r * out, gbk, t);
      for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) gWk[o * in + i] = t[i * out + o];
    }
    if (l == 1) break;
    /* dL/dz_{l-1} = (d W) * phi'(z_{l-1}), phi' from the stored a_{l-1} */
    if (out == 1) {
      for (int64_t r = 0; r < B; r++) {
        const T dv = d[r];
        const T *xr = x + r * in;
        T *er = e + r * in;
        if (act == 0)
          for (int64_t i = 0; i < in; i++) er[i] = xr[i] > 0 ? dv * Wk[i] : 0;
        else
          for (int64_t i = 0; i < in; i++) er[i] = dv * Wk[i] * (1 - xr[i] * xr[i]);
      }
    } else {
      memset(e, 0, sizeof(T) * (size_t)(B * in));
      for (int64_t r = 0; r < B; r++)
        for (int64_t o = 0; o < out; o++) F(axpy)(in, d[r * out + o], Wk + o * in, e + r * in);
      if (act == 0)
        for (int64_t j = 0; j < B * in; j++) e[j] = x[j] > 0 ? e[j] : 0;
      else
        for (int64_t j = 0; j < B * in; j++) e[j] *= 1 - x[j] * x[j];
    }
    T *swap = d;
    d = e;
    e = swap;
  }
  return (T)(total / (double)B);
}

/* The work space of a call: activations of every layer (need), two backward row blocks,
   one transposed weight (maxio); -3 for a row outside the data, -2 for too many layers. */
static int F(sizes)(int64_t K, int64_t L, const int64_t *w, int64_t N, const int64_t *idx,
                    int64_t B, int64_t *need, int64_t *maxw, int64_t *maxio,
                    int64_t *nparam) {
  if (L < 1 || L > MAXL) return -2;
  int bad = 0; /* rows outside the data: an error, never a read out of bounds */
  for (int64_t j = 0; j < K * B; j++) bad |= idx[j] < 0 || idx[j] >= N;
  if (bad) return -3;
  *need = *maxw = *maxio = *nparam = 0;
  for (int64_t l = 0; l <= L; l++) {
    *need += B * w[l];
    if (w[l] > *maxw) *maxw = w[l];
  }
  for (int64_t l = 1; l <= L; l++) {
    if (w[l] * w[l - 1] > *maxio) *maxio = w[l] * w[l - 1];
    *nparam += w[l] * w[l - 1] + w[l];
  }
  return 0;
}

/* Member k's parameters into Wm/bm: theta's, or theta + alpha v made in sw (VW/Vb: v, NULL
   for a tensor that is not shifted; VW NULL: none is); theta itself is never written. */
static INLINE void F(member_params)(int64_t k, int64_t L, const int64_t *w, T *const *W,
                                    T *const *b, T *const *VW, T *const *Vb, T alpha, T *sw,
                                    const T **Wm, const T **bm) {
  for (int64_t l = 1; l <= L; l++) {
    const int64_t nw = w[l] * w[l - 1], nb = w[l];
    Wm[l - 1] = W[l - 1] + k * nw;
    bm[l - 1] = b[l - 1] + k * nb;
    if (VW && VW[l - 1]) {
      const T *v = VW[l - 1] + k * nw, *p = Wm[l - 1];
      for (int64_t i = 0; i < nw; i++) sw[i] = p[i] + alpha * v[i];
      Wm[l - 1] = sw;
      sw += nw;
    }
    if (VW && Vb[l - 1]) {
      const T *v = Vb[l - 1] + k * nb, *p = bm[l - 1];
      for (int64_t i = 0; i < nb; i++) sw[i] = p[i] + alpha * v[i];
      bm[l - 1] = sw;
      sw += nb;
    }
  }
}

/* Probe entries f0 .. f0 + n - 1 of a record into u (Rademacher signs times scale): entry f
   is bit f % 8 of random byte f / 8, set for -scale (thermo.probes.RecordLayout's table: the
   same values as its float probes); whole bytes eight entries at a time. */
static inline T F(probe)(const int64_t *bytes, int64_t f, T scale) {
  return (bytes[f >> 3] >> (f & 7)) & 1 ? -scale : scale;
}

static inline void F(probes)(const int64_t *bytes, int64_t f0, int64_t n, T scale,
                             const T *table, T *u) {
  int64_t i = 0;
  for (; i < n && ((f0 + i) & 7); i++) u[i] = F(probe)(bytes, f0 + i, scale);
  for (; i + 8 <= n; i += 8) memcpy(u + i, table + 8 * (bytes[(f0 + i) >> 3] & 255), 8 * sizeof(T));
  for (; i < n; i++) u[i] = F(probe)(bytes, f0 + i, scale);
}

/* Whether member k's parameters are all finite, from the exponent bits (-ffast-math folds
   isfinite() and x != x away); and a quiet NaN. A member with a NaN or an infinite parameter
   gets a NaN loss (and record), as autograd gives it: the kernel's ReLU (v > 0 ? v : 0)
   would otherwise hide a NaN unit, and the loop would not see the member diverge. */
static inline int F(member_finite)(int64_t k, int64_t L, const int64_t *w, T *const *W,
                                   T *const *b) {
  int bad = 0;
  for (int64_t j = 0; j < 2 * L; j++) {
    const int64_t l = j / 2 + 1, n = j % 2 ? w[l] : w[l] * w[l - 1];
    const T *p = (j % 2 ? b[l - 1] : W[l - 1]) + k * n;
    if (sizeof(T) == 4) {
      for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
      }
    } else {
      for (int64_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, p + i, 8);
        bad |= (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
      }
    }
  }
  return !bad;
}

static inline T F(quiet_nan)(void) {
  T v;
  if (sizeof(T) == 4) {
    const uint32_t u = 0x7fc00000u;
    memcpy(&v, &u, 4);
  } else {
    const uint64_t u = 0x7ff8000000000000ull;
    memcpy(&v, &u, 8);
  }
  return v;
}

/* The loss and gradient of every member (loss[k], gW/gb), at theta or, with VW/Vb (else
 * NULL), at theta + alpha v (theta unchanged).
 *
 * With pbytes (else NULL; VW must then be NULL) the call is instead a finite-difference
 * Hutchinson record (thermo.ConfigurationalTemperature), per member k and group g, into
 * out[(0 * K + k) * G + g] and out[(1 * K + k) * G + g]:
 *   sum over g's entries of G0^2 (G0 = gW/gb: the gradient at theta, given, not written),
 *   and of u (G(theta + alpha u) - G0) (central = 0) or u (G(theta + alpha u) -
 *   G(theta - alpha u)) (central = 1);
 * tensor j (2 (l - 1): layer l's weight, 2 (l - 1) + 1: its bias) is in group group[j] (-1:
 * none, not shifted); its member-k entry i has the probe u = entry k row + col[j] + i of the
 * record's member-major probe rows of length row (see probes). The shifted gradients
 * stay in the work space; sums in double; loss is not written.
 *
 * Both run one member's gradient through one inlined body (the loop's hot code is also the
 * record's), and the gradient's bits are those of the body written inline. */
int F(tt_mlp_grad)(int64_t K, int64_t L, const int64_t *w, T *const *W, T *const *b,
                   T *const *gW, T *const *gb, T *const *VW, T *const *Vb, double alpha,
                   const T *X, const T *Y, int64_t N, const int64_t *idx, int64_t B, int act,
                   T *loss, const int64_t *pbytes, int64_t row, const int64_t *col,
                   double scale, int central, const int64_t *group, int64_t G, T *out) {
  int64_t need, maxw, maxio, nparam;
  const int status = F(sizes)(K, L, w, N, idx, B, &need, &maxw, &maxio, &nparam);
  if (status) return status;
  const int fd = pbytes != NULL;
  if (fd) {
    if (VW || G < 1 || G > 2 * MAXL) return -2;
    for (int64_t j = 0; j < 2 * L; j++) {
      const int64_t n = j % 2 ? w[j / 2 + 1] : w[j / 2 + 1] * w[j / 2];
      if (group[j] >= G || (group[j] >= 0 && (col[j] < 0 || col[j] + n > row))) return -2;
    }
  }
  const int64_t base = need + 2 * B * maxw + maxio;
  /* room for a member's shifted parameters (and, for a record, its one or two gradients
     and its probe) */
  const int64_t room = fd ? nparam * (central ? 4 : 3) : VW ? nparam : 0;
  const int sides = fd ? 1 + central : 1;
  const T sc = (T)scale;
  T table[256 * 8]; /* byte b's eight probe entries */
  if (fd)
    for (int c = 0; c < 256; c++)
      for (int t = 0; t < 8; t++) table[8 * c + t] = (c >> t) & 1 ? -sc : sc;
  int failed = 0;
#pragma omp parallel if (K * need >= 4096) reduction(| : failed)
  {
    T *a = (T *)malloc(sizeof(T) * (size_t)(base + room));
    if (!a) failed = 1;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < K; k++) {
      if (!a) continue;
      T lk = 0;
      T *const u = a + base + nparam * (1 + sides); /* the member's probe, grouped tensors */
      if (fd)
        for (int64_t j = 0, at = 0; j < 2 * L; j++) {
          const int64_t l = j / 2 + 1, n = j % 2 ? w[l] : w[l] * w[l - 1];
          if (group[j] >= 0) {
            F(probes)(pbytes, k * row + col[j], n, sc, table, u + at);
            at += n;
          }
        }
      for (int side = 0; side < sides; side++) {
        const T *Wm[MAXL], *bm[MAXL];
        T *gWm[MAXL], *gbm[MAXL];
        if (!fd) {
          F(member_params)(k, L, w, W, b, VW, Vb, (T)alpha, a + base, Wm, bm);
          for (int64_t l = 1; l <= L; l++) {
            gWm[l - 1] = gW[l - 1] + k * w[l] * w[l - 1];
            gbm[l - 1] = gb[l - 1] + k * w[l];
          }
        } else { /* theta +- alpha u for grouped tensors; gradients into the work space */
          const T al_ = (T)(side ? -alpha : alpha);
          T *sw = a + base, *gs = a + base + nparam * (1 + side);
          const T *uj = u;
          for (int64_t j = 0; j < 2 * L; j++) {
            const int64_t l = j / 2 + 1, n = j % 2 ? w[l] : w[l] * w[l - 1];
            const T *p = (j % 2 ? b[l - 1] : W[l - 1]) + k * n;
            if (group[j] >= 0) {
              for (int64_t i = 0; i < n; i++) sw[i] = p[i] + al_ * uj[i];
              p = sw;
              sw += n;
              uj += n;
            }
            if (j % 2) {
              bm[l - 1] = p;
              gbm[l - 1] = gs;
            } else {
              Wm[l - 1] = p;
              gWm[l - 1] = gs;
            }
            gs += n;
          }
        }
        lk = F(member_grad)(L, w, Wm, bm, gWm, gbm, X, Y, idx + k * B, B, act, a, need, maxw);
      }
      const int finite = F(member_finite)(k, L, w, W, b);
      if (!fd) {
        loss[k] = finite ? lk : F(quiet_nan)();
        continue;
      }
      double g2[2 * MAXL] = {0}, lap[2 * MAXL] = {0};
      const T *gplus = a + base + nparam, *gminus = gplus + nparam, *uj = u;
      for (int64_t j = 0; j < 2 * L; j++) {
        const int64_t l = j / 2 + 1, n = j % 2 ? w[l] : w[l] * w[l - 1], g = group[j];
        if (g >= 0) {
          const T *g0 = (j % 2 ? gb[l - 1] : gW[l - 1]) + k * n;
          const T *gref = central ? gminus : g0;
          double s2 = 0, sl = 0;
          for (int64_t i = 0; i < n; i++) {
            s2 += (double)g0[i] * (double)g0[i];
            sl += (double)uj[i] * ((double)gplus[i] - (double)gref[i]);
          }
          g2[g] += s2;
          lap[g] += sl;
          uj += n;
        }
        gplus += n;
        gminus += n;
      }
      for (int64_t g = 0; g < G; g++) {
        out[k * G + g] = finite ? (T)g2[g] : F(quiet_nan)();
        out[(K + k) * G + g] = finite ? (T)lap[g] : F(quiet_nan)();
      }
    }
    free(a);
  }
  return failed ? -1 : 0;
}

/* rows per block of the forward-only evaluation: its activations stay in L1/L2 */
#ifndef EVAL_ROWS
#define EVAL_ROWS 32
#endif

/* The loss along lines through weight space (fused.evaluate_line, landscape.interpolate):
 * member k at alphas[a] has the parameters theta_k(alpha) = lerp(theta0_k, theta1_k, alpha)
 * (W0/b0 and W1/b1, torch.lerp's two-sided formula); writes the summed loss over all N rows
 * and the count of correct predictions of every (a, k) to loss[a*K + k], correct[a*K + k].
 * The first layer is affine in its parameters, so its pre-activations along the line are
 * the lerp of the two end points' (z(alpha) = z0 + alpha (z1 - z0)): computed once per block
 * of rows for all alphas, the first layer costs one multiply-add per unit and alpha instead
 * of in of them. Work items are (member, block of EVAL_ROWS rows), each looping over every
 * alpha (LINE_ALPHAS at a time: the block's z0, dz are loaded once for all of them) with
 * the block's activations in cache; the per-block sums are added in a fixed order
 * afterwards, so results do not depend on the thread count or on K. */
#define LINE_ALPHAS 4
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options /* full-width vectors here only: tt_mlp_grad's code is unchanged */
#pragma GCC target("prefer-vector-width=512")
#define LINE_POP_OPTIONS
#endif

static inline T F(lerp1)(T a, T b, T w) {
  return w < (T)0.5 ? a + w * (b - a) : b - (b - a) * ((T)1 - w);
}

/* one hidden layer and one logit ([in, H, 1]) at LINE_ALPHAS alphas al[j] (output weights
   w2[j], biases bias[j]): lg[j * EVAL_ROWS + r] = bias_j + sum_o phi(z0 + al_j dz)_{r,o} w2_jo.
   z0, dz are transposed (H x EVAL_ROWS, padding rows zero): the vectors run along the rows,
   so nothing is reduced across lanes and each (z0, dz) pair is loaded once for 4 alphas */
static inline void F(shlp_logits)(int64_t H, const T *restrict zt, const T *restrict dt,
                                  const T *al, const T *const *w2, const T *bias, int act,
                                  T *restrict lg) {
  const T a0 = al[0], a1 = al[1], a2 = al[2], a3 = al[3];
  T s0[EVAL_ROWS], s1[EVAL_ROWS], s2[EVAL_ROWS], s3[EVAL_ROWS];
  for (int64_t r = 0; r < EVAL_ROWS; r++) {
    s0[r] = bias[0];
    s1[r] = bias[1];
    s2[r] = bias[2];
    s3[r] = bias[3];
  }
  if (act == 0) {
    for (int64_t o = 0; o < H; o++) {
      const T *zo = zt + o * EVAL_ROWS, *d = dt + o * EVAL_ROWS;
      const T u0 = w2[0][o], u1 = w2[1][o], u2 = w2[2][o], u3 = w2[3][o];
      for (int64_t r = 0; r < EVAL_ROWS; r++) {
        const T v0 = zo[r] + a0 * d[r], v1 = zo[r] + a1 * d[r], v2 = zo[r] + a2 * d[r],
                v3 = zo[r] + a3 * d[r];
        s0[r] += (v0 > 0 ? v0 : 0) * u0;
        s1[r] += (v1 > 0 ? v1 : 0) * u1;
        s2[r] += (v2 > 0 ? v2 : 0) * u2;
        s3[r] += (v3 > 0 ? v3 : 0) * u3;
      }
    }
  } else {
    for (int64_t o = 0; o < H; o++) {
      const T *zo = zt + o * EVAL_ROWS, *d = dt + o * EVAL_ROWS;
      const T u0 = w2[0][o], u1 = w2[1][o], u2 = w2[2][o], u3 = w2[3][o];
      for (int64_t r = 0; r < EVAL_ROWS; r++) {
        s0[r] += TANH(zo[r] + a0 * d[r]) * u0;
        s1[r] += TANH(zo[r] + a1 * d[r]) * u1;
        s2[r] += TANH(zo[r] + a2 * d[r]) * u2;
        s3[r] += TANH(zo[r] + a3 * d[r]) * u3;
      }
    }
  }
  for (int64_t r = 0; r < EVAL_ROWS; r++) {
    lg[r] = s0[r];
    lg[EVAL_ROWS + r] = s1[r];
    lg[2 * EVAL_ROWS + r] = s2[r];
    lg[3 * EVAL_ROWS + r] = s3[r];
  }
}

/* zt = b + W xt, transposed: xt (in x EVAL_ROWS), W (out x in, row-major), zt (out x
   EVAL_ROWS); vectors along the rows, OUT_BLOCK outputs at a time share each load of xt */
#define OUT_BLOCK 4
static inline void F(affine_t)(int64_t in, int64_t out, const T *restrict xt,
                               const T *restrict W, const T *restrict b, T *restrict zt) {
  int64_t o = 0;
  for (; o + OUT_BLOCK <= out; o += OUT_BLOCK) {
    T acc[OUT_BLOCK][EVAL_ROWS];
    for (int64_t j = 0; j < OUT_BLOCK; j++)
      for (int64_t r = 0; r < EVAL_ROWS; r++) acc[j][r] = b[o + j];
    for (int64_t i = 0; i < in; i++) {
      const T *xi = xt + i * EVAL_ROWS;
      const T p0 = W[o * in + i], p1 = W[(o + 1) * in + i], p2 = W[(o + 2) * in + i],
              p3 = W[(o + 3) * in + i];
      for (int64_t r = 0; r < EVAL_ROWS; r++) {
        acc[0][r] += p0 * xi[r];
        acc[1][r] += p1 * xi[r];
        acc[2][r] += p2 * xi[r];
        acc[3][r] += p3 * xi[r];
      }
    }
    for (int64_t j = 0; j < OUT_BLOCK; j++)
      for (int64_t r = 0; r < EVAL_ROWS; r++) zt[(o + j) * EVAL_ROWS + r] = acc[j][r];
  }
  for (; o < out; o++) {
    T acc[EVAL_ROWS];
    for (int64_t r = 0; r < EVAL_ROWS; r++) acc[r] = b[o];
    for (int64_t i = 0; i < in; i++) {
      const T p = W[o * in + i], *xi = xt + i * EVAL_ROWS;
      for (int64_t r = 0; r < EVAL_ROWS; r++) acc[r] += p * xi[r];
    }
    for (int64_t r = 0; r < EVAL_ROWS; r++) zt[o * EVAL_ROWS + r] = acc[r];
  }
}

/* a hidden layer's activation in place, z (n x EVAL_ROWS): phi(z * scale + shift) with the
   per-unit batch-norm scale and shift when given, else phi(z) */
static inline void F(hidden)(int64_t n, T *restrict z, const T *scale, const T *shift,
                             int act) {
  if (scale)
    for (int64_t o = 0; o < n; o++) {
      const T a = scale[o], c = shift[o];
      for (int64_t r = 0; r < EVAL_ROWS; r++) z[o * EVAL_ROWS + r] = z[o * EVAL_ROWS + r] * a + c;
    }
  if (act == 0)
    for (int64_t i = 0; i < n * EVAL_ROWS; i++) z[i] = z[i] > 0 ? z[i] : 0;
  else
    for (int64_t i = 0; i < n * EVAL_ROWS; i++) z[i] = TANH(z[i]);
}

int F(tt_mlp_line)(int64_t K, int64_t L, const int64_t *w, T *const *W0, T *const *b0,
                   T *const *W1, T *const *b1, const T *alphas, int64_t A, const T *X,
                   const T *Y, const int64_t *label, int64_t N, int act,
                   const T *bn_scale, const T *bn_shift, double *loss, int64_t *correct) {
  if (L < 1 || L > MAXL || A < 1) return -2;
  const int64_t C = w[L];
  if (C >= 2) {
    int bad = 0;
    for (int64_t r = 0; r < N; r++) bad |= label[r] < 0 || label[r] >= C;
    if (bad) return -3;
  }
  const int64_t H1 = w[1], in0 = w[0], nblk = (N + EVAL_ROWS - 1) / EVAL_ROWS;
  /* one hidden layer, one logit, no batch norm: shlp_logits */
  const int shlp = L == 2 && C == 1 && !bn_scale;
  int64_t maxw = 0, rest = 0, work = 0, hsum = 0;
  for (int64_t l = 1; l < L; l++) hsum += w[l];
  for (int64_t l = 0; l <= L; l++)
    if (w[l] > maxw) maxw = w[l];
  for (int64_t l = 2; l <= L; l++) rest += w[l] * w[l - 1] + w[l];
  for (int64_t l = 1; l <= L; l++) work += w[l] * w[l - 1];
  double *ploss = (double *)malloc(sizeof(double) * (size_t)(K * nblk * A));
  int64_t *phits = (int64_t *)malloc(sizeof(int64_t) * (size_t)(K * nblk * A));
  if (!ploss || !phits) {
    free(ploss);
    free(phits);
    return -1;
  }
  int failed = 0;
#pragma omp parallel if (K * N * A * work >= 65536) reduction(| : failed)
  {
    /* every array is transposed (features x EVAL_ROWS): the block's inputs; its first-layer
       pre-activations at theta0 and their change to theta1; two activation buffers; the
       logits of LINE_ALPHAS alphas; their lerped weights of layers >= 2 (row-major) */
    const size_t need = (size_t)(EVAL_ROWS * (in0 + 2 * H1 + 2 * maxw + LINE_ALPHAS * C) +
                                 LINE_ALPHAS * rest);
    T *buf = (T *)malloc(sizeof(T) * need);
    if (!buf) failed = 1;
    /* dynamic: on a shared machine a thread whose core is busy takes fewer items (each
       item's sums are its own, so the results stay independent of the schedule) */
#pragma omp for schedule(dynamic, 2)
    for (int64_t item = 0; item < K * nblk; item++) {
      if (!buf) continue;
      const int64_t k = item / nblk, blk = item % nblk, r0 = blk * EVAL_ROWS;
      const int64_t nb = N - r0 < EVAL_ROWS ? N - r0 : EVAL_ROWS;
      T *xt = buf, *zt = xt + EVAL_ROWS * in0, *dt = zt + EVAL_ROWS * H1, *h[2];
      h[0] = dt + EVAL_ROWS * H1;
      h[1] = h[0] + EVAL_ROWS * maxw;
      T *lg = h[1] + EVAL_ROWS * maxw, *wl = lg + LINE_ALPHAS * EVAL_ROWS * C;
      /* the block's rows, transposed, padding rows 0 (their logits are never read) */
      const T *xb = X + r0 * in0;
      for (int64_t r = 0; r < EVAL_ROWS; r++)
        for (int64_t i = 0; i < in0; i++) xt[i * EVAL_ROWS + r] = r < nb ? xb[r * in0 + i] : 0;
      /* first layer at both ends: zt = z(theta0), dt = z(theta1) - z(theta0) */
      F(affine_t)(in0, H1, xt, W0[0] + k * H1 * in0, b0[0] + k * H1, zt);
      F(affine_t)(in0, H1, xt, W1[0] + k * H1 * in0, b1[0] + k * H1, dt);
      for (int64_t i = 0; i < H1 * EVAL_ROWS; i++) dt[i] -= zt[i];
      const T *yb = Y + r0;
      const int64_t *lab = label + r0;
      for (int64_t a0 = 0; a0 < A; a0 += LINE_ALPHAS) {
        const int64_t na = A - a0 < LINE_ALPHAS ? A - a0 : LINE_ALPHAS;
        T al[LINE_ALPHAS];
        const T *lw[LINE_ALPHAS][MAXL + 1], *lb[LINE_ALPHAS][MAXL + 1];
        for (int64_t j = 0; j < LINE_ALPHAS; j++) { /* j >= na: repeats of the last */
          al[j] = alphas[a0 + (j < na ? j : na - 1)];
          T *q = wl + j * rest;
          for (int64_t l = 2; l <= L; l++) {
            const int64_t n = w[l] * w[l - 1], out = w[l];
            const T *pa = W0[l - 1] + k * n, *pb = W1[l - 1] + k * n;
            for (int64_t i = 0; i < n; i++) q[i] = F(lerp1)(pa[i], pb[i], al[j]);
            lw[j][l] = q;
            q += n;
            const T *ba = b0[l - 1] + k * out, *bb = b1[l - 1] + k * out;
            for (int64_t o = 0; o < out; o++) q[o] = F(lerp1)(ba[o], bb[o], al[j]);
            lb[j][l] = q;
            q += out;
          }
        }
        if (shlp) { /* fused: the hidden activations are never stored */
          const T *w2[LINE_ALPHAS];
          T bias[LINE_ALPHAS];
          for (int64_t j = 0; j < LINE_ALPHAS; j++) {
            w2[j] = lw[j][2];
            bias[j] = lb[j][2][0];
          }
          F(shlp_logits)(H1, zt, dt, al, w2, bias, act, lg);
        } else {
          for (int64_t j = 0; j < na; j++) {
            T *lgj = lg + j * EVAL_ROWS * C;
            T *z = L == 1 ? lgj : h[1];
            for (int64_t i = 0; i < H1 * EVAL_ROWS; i++) z[i] = zt[i] + al[j] * dt[i];
            /* batch norm in eval mode at this alpha: per unit z * scale + shift */
            const T *bs = bn_scale ? bn_scale + ((a0 + j) * K + k) * hsum : 0;
            const T *bt = bn_shift ? bn_shift + ((a0 + j) * K + k) * hsum : 0;
            if (L > 1) F(hidden)(H1, z, bs, bt, act);
            const T *x = z;
            for (int64_t l = 2; l <= L; l++) {
              const int64_t out = w[l];
              T *zo = l == L ? lgj : h[l & 1];
              F(affine_t)(w[l - 1], out, x, lw[j][l], lb[j][l], zo);
              if (l < L) {
                bs = bs ? bs + w[l - 1] : 0;
                bt = bt ? bt + w[l - 1] : 0;
                F(hidden)(out, zo, bs, bt, act);
              }
              x = zo;
            }
          }
        }
        for (int64_t j = 0; j < na; j++) { /* loss and hits of the block at alpha a0 + j */
          const T *zl = lg + j * EVAL_ROWS * C; /* C x EVAL_ROWS */
          double total = 0;
          int64_t hits = 0;
          if (C == 1) {
            for (int64_t r = 0; r < nb; r++) {
              const T zz = zl[r];
              const T m = zz > 0 ? zz : 0;
              total += (double)(m - zz * yb[r] + LOG1P(EXP(-FABS(zz))));
              hits += (zz > 0) == (lab[r] != 0);
            }
          } else {
            for (int64_t r = 0; r < nb; r++) {
              T m = zl[r];
              int64_t best = 0;
              for (int64_t c = 1; c < C; c++)
                if (zl[c * EVAL_ROWS + r] > m) {
                  m = zl[c * EVAL_ROWS + r];
                  best = c;
                }
              T s = 0;
              for (int64_t c = 0; c < C; c++) s += EXP(zl[c * EVAL_ROWS + r] - m);
              total += (double)(m + LOG(s) - zl[lab[r] * EVAL_ROWS + r]);
              hits += best == lab[r];
            }
          }
          ploss[(k * nblk + blk) * A + a0 + j] = total;
          phits[(k * nblk + blk) * A + a0 + j] = hits;
        }
      }
    }
    free(buf);
  }
  if (!failed)
    for (int64_t k = 0; k < K; k++)
      for (int64_t a = 0; a < A; a++) {
        double total = 0;
        int64_t hits = 0;
        for (int64_t blk = 0; blk < nblk; blk++) {
          total += ploss[(k * nblk + blk) * A + a];
          hits += phits[(k * nblk + blk) * A + a];
        }
        loss[a * K + k] = total;
        correct[a * K + k] = hits;
      }
  free(ploss);
  free(phits);
  return failed ? -1 : 0;
}
#ifdef LINE_POP_OPTIONS
#pragma GCC pop_options
#undef LINE_POP_OPTIONS
#endif

#undef F
#undef CAT
#undef CAT_
#endif /* MLP_BODY */
