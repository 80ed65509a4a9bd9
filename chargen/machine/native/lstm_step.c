/* One batch-1 LSTM step in one call: the mat-vecs and the element-wise gate arithmetic fused.
 *
 * At batch 1 a step reads every weight once; the ~30 small torch ops around the
 * mat-vecs cost 1-5 us each, a fifth of the step. Here they run in the same call
 * as the products, on vectors that stay in L1. Weights come in chargen.sampling.steppers.
 * Stepper's layout: [in, 4H] row-major ("x @ W"), gate columns ordered (i, f, o, 2g),
 * so one sigmoid covers all four gates (tanh(g) = 2 sigmoid(2g) - 1).
 *
 * Built by chargen/native/build.py with -O3 -march=native: gcc vectorises every
 * loop here (the exp below is branch-free for that reason). Results differ from
 * torch's in the last bits only (order of the additions, exp's rounding).
 */
#include <stdint.h>
#include <string.h>

/* exp(x) for x in float: Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1 ulp),
 * without branches or calls so that the loops around it vectorise. */
static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to an integer */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n: n is in [-126, 127] after the clamp */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* y[N] += x[K] @ W[K, N], W row-major: four rows of W per pass over y, read in order. */
static void matvec_add(const float *restrict x, const float *restrict w, int k_rows, int n,
                       float *restrict y) {
    int k = 0;
    for (; k + 4 <= k_rows; k += 4) {
        const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
        const float *restrict w0 = w + (size_t)k * n;
        const float *restrict w1 = w0 + n, *restrict w2 = w1 + n, *restrict w3 = w2 + n;
        for (int j = 0; j < n; j++)
            y[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
    }
    for (; k < k_rows; k++) {
        const float xk = x[k];
        const float *restrict wk = w + (size_t)k * n;
        for (int j = 0; j < n; j++)
            y[j] += xk * wk[j];
    }
}

/* Gates [4H] (i, f, o, 2g pre-activations) -> c = f c + i tanh(g), h = o tanh(c). */
static void lstm_cell(float *restrict gates, const float *restrict c_in, float *restrict h_out,
                      float *restrict c_out, int hidden) {
    for (int j = 0; j < 4 * hidden; j++)
        gates[j] = 1.0f / (1.0f + exp_f32(-gates[j]));
    const float *i = gates, *f = gates + hidden, *o = gates + 2 * hidden, *s = gates + 3 * hidden;
    for (int j = 0; j < hidden; j++) {
        float c = f[j] * c_in[j] + 2.0f * i[j] * s[j] - i[j];
        c_out[j] = c;
        h_out[j] = o[j] * (2.0f / (1.0f + exp_f32(-2.0f * c)) - 1.0f);
    }
}

/* One step. input_row [4H]: layer 0's input pre-activations (token row of the input table,
 * bias included); label_row [4H] or NULL. w_hh[l], w_ih[l]: [H, 4H] (w_ih[0] unused);
 * bias[l]: [4H] (bias[0] unused). h_in, c_in, h_out, c_out: [L, H]. head_w [H, V],
 * head_b [V] -> logits [V]. gates: scratch [4H]. */
void chargen_lstm_step(int layers, int hidden, int vocab, const float *input_row, const float *label_row,
                       const float *const *w_hh, const float *const *w_ih, const float *const *bias,
                       const float *h_in, const float *c_in, float *h_out, float *c_out,
                       const float *head_w, const float *head_b, float *logits, float *gates) {
    const int g = 4 * hidden;
    const float *x = 0;
    for (int layer = 0; layer < layers; layer++) {
        const float *h = h_in + (size_t)layer * hidden;
        if (layer == 0) {
            memcpy(gates, input_row, sizeof(float) * g);
            if (label_row)
                for (int j = 0; j < g; j++)
                    gates[j] += label_row[j];
        } else {
            memcpy(gates, bias[layer], sizeof(float) * g);
            matvec_add(x, w_ih[layer], hidden, g, gates);
        }
        matvec_add(h, w_hh[layer], hidden, g, gates);
        lstm_cell(gates, c_in + (size_t)layer * hidden, h_out + (size_t)layer * hidden,
                  c_out + (size_t)layer * hidden, hidden);
        x = h_out + (size_t)layer * hidden;
    }
    memcpy(logits, head_b, sizeof(float) * vocab);
    matvec_add(x, head_w, hidden, vocab, logits);
}

/* y[N] = x[K] @ W[K, N]: the same product alone, for the memory floor that benchmarks measure it against. */
void chargen_matvec(const float *x, const float *w, int k_rows, int n, float *y) {
    memset(y, 0, sizeof(float) * n);
    matvec_add(x, w, k_rows, n, y);
}
