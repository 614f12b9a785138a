/* Fused loss and gradient of an ensemble of small MLPs (fused.py); after it, tt_mlp_eval, the
 * forward-only loss and accuracy over all rows (fused.evaluate_members, landscape.interpolate).
 *
 * Member k (its parameters at W[l] + k*out_l*in_l, b[l] + k*out_l) sees the rows idx[k, :]
 * of the data X (N x in_0) and targets Y (N): z_l = a_{l-1} W_l^T + b_l, a_l = phi(z_l)
 * (ReLU or tanh) for hidden layers, logits z_L; loss = the batch mean of binary
 * cross-entropy with logits (out_L = 1, Y in [0, 1]) or softmax cross-entropy (out_L >= 2,
 * Y = class index). Writes the gradient of member k's mean loss into gW/gb (overwriting)
 * and its loss into loss[k]. Members are independent and shared among torch's OpenMP
 * threads; each member's numbers are computed alone, so results do not depend on the thread
 * count or on K.
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

int F(tt_mlp_grad)(int64_t K, int64_t L, const int64_t *w, T *const *W, T *const *b,
                   T *const *gW, T *const *gb, const T *X, const T *Y, int64_t N,
                   const int64_t *idx, int64_t B, int act, T *loss) {
  if (L < 1 || L > MAXL) return -2;
  int bad = 0; /* rows outside the data: an error, never a read out of bounds */
  for (int64_t j = 0; j < K * B; j++) bad |= idx[j] < 0 || idx[j] >= N;
  if (bad) return -3;
  int64_t need = 0, maxw = 0, maxio = 0;
  for (int64_t l = 0; l <= L; l++) {
    need += B * w[l];
    if (w[l] > maxw) maxw = w[l];
  }
  for (int64_t l = 1; l <= L; l++)
    if (w[l] * w[l - 1] > maxio) maxio = w[l] * w[l - 1];
  int failed = 0;
#pragma omp parallel if (K * need >= 4096) reduction(| : failed)
  {
    /* a: every layer's activations (a_0 = the inputs, a_L = the logits); d, e: B x maxw
       backward rows; t: one transposed weight (gradient) */
    T *a = (T *)malloc(sizeof(T) * (size_t)(need + 2 * B * maxw + maxio));
    if (!a) failed = 1;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < K; k++) {
      if (!a) continue;
      T *d = a + need, *e = d + B * maxw, *t = e + B * maxw;
      T *al[MAXL + 1];
      al[0] = a;
      for (int64_t l = 1; l <= L; l++) al[l] = al[l - 1] + B * w[l - 1];
      const int64_t *ik = idx + k * B;
      for (int64_t r = 0; r < B; r++)
        memcpy(al[0] + r * w[0], X + ik[r] * w[0], sizeof(T) * (size_t)w[0]);

      /* forward */
      for (int64_t l = 1; l <= L; l++) {
        const int64_t in = w[l - 1], out = w[l];
        const T *Wk = W[l - 1] + k * out * in, *bk = b[l - 1] + k * out;
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
      loss[k] = (T)(total / (double)B);

      /* backward: d holds dL/dz_l of layer l */
      for (int64_t l = L; l >= 1; l--) {
        const int64_t in = w[l - 1], out = w[l];
        const T *Wk = W[l - 1] + k * out * in;
        T *gWk = gW[l - 1] + k * out * in, *gbk = gb[l - 1] + k * out;
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
    }
    free(a);
  }
  return failed ? -1 : 0;
}

/* Forward only (fused.evaluate_members): member k's summed loss over all N rows of X and
 * its count of correct predictions (binary head: z > 0 against label != 0; C >= 2 classes:
 * the first argmax against the class index label). No gradient and no row indices: the rows
 * are taken in blocks of EVAL_ROWS, whose activations (EVAL_ROWS x width, two buffers) stay
 * in L1/L2 — never a (K, N, width) array. Each member alone, as tt_mlp_grad: results do not
 * depend on the thread count or on K. Returns 0, -1 (no memory), -2 (bad depth) or -3 (a
 * class index outside [0, C)). */
#ifndef EVAL_ROWS
#define EVAL_ROWS 32
#endif
int F(tt_mlp_eval)(int64_t K, int64_t L, const int64_t *w, T *const *W, T *const *b,
                   const T *X, const T *Y, const int64_t *label, int64_t N, int act,
                   double *loss, int64_t *correct) {
  if (L < 1 || L > MAXL) return -2;
  const int64_t C = w[L];
  if (C >= 2) {
    int bad = 0;
    for (int64_t r = 0; r < N; r++) bad |= label[r] < 0 || label[r] >= C;
    if (bad) return -3;
  }
  int64_t maxw = 0, tsize = 0, work = 0;
  for (int64_t l = 0; l <= L; l++)
    if (w[l] > maxw) maxw = w[l];
  for (int64_t l = 1; l <= L; l++) {
    work += w[l] * w[l - 1];
    if (w[l] >= 8) tsize += w[l] * w[l - 1];
  }
  int failed = 0;
#pragma omp parallel if (K * N * work >= 65536) reduction(| : failed)
  {
    /* two EVAL_ROWS x maxw activation buffers, then the transposed weights of the layers
       with >= 8 outputs (rows of W^T along the output, as in the training forward) */
    T *buf = (T *)malloc(sizeof(T) * (size_t)(2 * EVAL_ROWS * maxw + tsize));
    if (!buf) failed = 1;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < K; k++) {
      if (!buf) continue;
      T *bufs[2] = {buf, buf + EVAL_ROWS * maxw};
      const T *tl[MAXL];
      T *p = bufs[1] + EVAL_ROWS * maxw;
      for (int64_t l = 1; l <= L; l++) {
        const int64_t in = w[l - 1], out = w[l];
        const T *Wk = W[l - 1] + k * out * in;
        tl[l - 1] = 0;
        if (out >= 8) {
          for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) p[i * out + o] = Wk[o * in + i];
          tl[l - 1] = p;
          p += out * in;
        }
      }
      double total = 0;
      int64_t hits = 0;
      for (int64_t r0 = 0; r0 < N; r0 += EVAL_ROWS) {
        const int64_t nb = N - r0 < EVAL_ROWS ? N - r0 : EVAL_ROWS;
        const T *x = X + r0 * w[0];
        for (int64_t l = 1; l <= L; l++) {
          const int64_t in = w[l - 1], out = w[l];
          const T *Wk = W[l - 1] + k * out * in, *bk = b[l - 1] + k * out;
          T *z = bufs[l & 1];
          const int phi = l < L ? act : -1;
          if (tl[l - 1]) {
            for (int64_t r = 0; r < nb; r++)
              F(row_forward)(in, out, x + r * in, tl[l - 1], bk, z + r * out, phi);
          } else {
            for (int64_t r = 0; r < nb; r++)
              for (int64_t o = 0; o < out; o++) {
                T v = F(dot)(in, x + r * in, Wk + o * in) + bk[o];
                if (phi == 0) v = v > 0 ? v : 0;
                if (phi == 1) v = TANH(v);
                z[r * out + o] = v;
              }
          }
          x = z;
        }
        /* x: the block's logits, nb x C */
        const int64_t *lab = label + r0;
        if (C == 1) {
          const T *y = Y + r0;
          for (int64_t r = 0; r < nb; r++) {
            const T zz = x[r];
            const T m = zz > 0 ? zz : 0;
            total += (double)(m - zz * y[r] + LOG1P(EXP(-FABS(zz))));
            hits += (zz > 0) == (lab[r] != 0);
          }
        } else {
          for (int64_t r = 0; r < nb; r++) {
            const T *zr = x + r * C;
            T m = zr[0];
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++)
              if (zr[c] > m) {
                m = zr[c];
                best = c;
              }
            T s = 0;
            for (int64_t c = 0; c < C; c++) s += EXP(zr[c] - m);
            total += (double)(m + LOG(s) - zr[lab[r]]);
            hits += best == lab[r];
          }
        }
      }
      loss[k] = total;
      correct[k] = hits;
    }
    free(buf);
  }
  return failed ? -1 : 0;
}

#undef F
#undef CAT
#undef CAT_
#endif /* MLP_BODY */
