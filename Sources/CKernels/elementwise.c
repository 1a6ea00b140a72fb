// Element-wise and per-channel loops, written so the compiler vectorizes them over channels.
#include "kernel_internal.h"

#include <string.h>

#include <math.h>

// The activation is hoisted out of the loops so each variant vectorizes as straight-line code.
CGK_DISPATCH(, cgk_bias_activation,
             (float *y, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ldy, const float *bias, int activation),
             (y, rows, cols, ldy, bias, activation)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *restrict row = y + r * ldy;
        if (bias != NULL) {
            const float *restrict b = bias;
            for (ptrdiff_t c = 0; c < cols; c++) row[c] += b[c];
        }
        if (activation == CGK_ACT_RELU) {
            for (ptrdiff_t c = 0; c < cols; c++) row[c] = row[c] > 0.0f ? row[c] : 0.0f;
        } else if (activation == CGK_ACT_RELU6) {
            for (ptrdiff_t c = 0; c < cols; c++) {
                float v = row[c] > 0.0f ? row[c] : 0.0f;
                row[c] = v < 6.0f ? v : 6.0f;
            }
        }
    }
}

CGK_DISPATCH(, cgk_add,
             (const float *a, const float *b, ptrdiff_t n, int activation, float *y),
             (a, b, n, activation, y)) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = cgk_activate(a[i] + b[i], activation);
}

CGK_DISPATCH(, cgk_scale_shift,
             (const float *x, ptrdiff_t rows, ptrdiff_t cols, const float *scale, const float *shift, int activation,
              float *y),
             (x, rows, cols, scale, shift, activation, y)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        for (ptrdiff_t c = 0; c < cols; c++) yr[c] = cgk_activate(xr[c] * scale[c] + shift[c], activation);
    }
}

// dx = dy where the activation let the gradient through (y > 0, and y < 6 for ReLU6), else 0.
// `relu6` is a constant at each call, so each copy is a plain vectorizable select.
CGK_INLINE void cgk_relu_mask(const float *restrict y, const float *restrict dy, ptrdiff_t n, int relu6, float *restrict dx) {
    for (ptrdiff_t i = 0; i < n; i++) dx[i] = (y[i] > 0.0f && (!relu6 || y[i] < 6.0f)) ? dy[i] : 0.0f;
}

CGK_INLINE void cgk_relu_mask_in_place(const float *restrict y, float *restrict d, ptrdiff_t n, int relu6) {
    for (ptrdiff_t i = 0; i < n; i++) d[i] = (y[i] > 0.0f && (!relu6 || y[i] < 6.0f)) ? d[i] : 0.0f;
}

CGK_DISPATCH(, cgk_activation_backward,
             (const float *y, const float *dy, ptrdiff_t n, int activation, float *dx),
             (y, dy, n, activation, dx)) {
    // In place (dx == dy) or into a separate buffer: loops whose pointers really do not alias,
    // so the compiler vectorizes the select. With possible aliasing it emitted a scalar loop
    // with a branch per element, which mispredicted on ReLU masks: 13% of a training step.
    if (activation == CGK_ACT_RELU && dx == dy) cgk_relu_mask_in_place(y, dx, n, 0);
    else if (activation == CGK_ACT_RELU) cgk_relu_mask(y, dy, n, 0, dx);
    else if (activation == CGK_ACT_RELU6 && dx == dy) cgk_relu_mask_in_place(y, dx, n, 1);
    else if (activation == CGK_ACT_RELU6) cgk_relu_mask(y, dy, n, 1, dx);
    else if (dx != dy) memmove(dx, dy, (size_t)n * sizeof(float));
}

CGK_DISPATCH(, cgk_column_sum, (const float *x, ptrdiff_t rows, ptrdiff_t cols, float *out), (x, rows, cols, out)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *restrict row = x + r * cols;
        float *restrict o = out;
        for (ptrdiff_t c = 0; c < cols; c++) o[c] += row[c];
    }
}

CGK_DISPATCH(, cgk_multiply, (const float *x, const float *mask, ptrdiff_t n, float *y), (x, mask, n, y)) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * mask[i];
}

CGK_DISPATCH(, cgk_channel_moments,
             (const float *x, ptrdiff_t rows, int32_t channels, double *sum, double *sum_squares),
             (x, rows, channels, sum, sum_squares)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *restrict row = x + r * channels;
        for (int32_t c = 0; c < channels; c++) {
            double v = row[c];
            sum[c] += v;
            sum_squares[c] += v * v;
        }
    }
}

CGK_DISPATCH(, cgk_batchnorm_backward_reduce,
             (const float *dy, const float *x, ptrdiff_t rows, int32_t channels, const float *mean, const float
              *inv_std, double *sum_dy, double *sum_dy_xhat),
             (dy, x, rows, channels, mean, inv_std, sum_dy, sum_dy_xhat)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *restrict g = dy + r * channels;
        const float *restrict v = x + r * channels;
        for (int32_t c = 0; c < channels; c++) {
            sum_dy[c] += g[c];
            sum_dy_xhat[c] += (double)g[c] * ((v[c] - mean[c]) * inv_std[c]);
        }
    }
}

CGK_DISPATCH(, cgk_batchnorm_backward_apply,
             (const float *dy, const float *x, ptrdiff_t rows, int32_t channels, const float *mean, const float
              *inv_std, const float *gamma, const float *mean_dy, const float *mean_dy_xhat, float *dx),
             (dy, x, rows, channels, mean, inv_std, gamma, mean_dy, mean_dy_xhat, dx)) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *restrict g = dy + r * channels;
        const float *restrict v = x + r * channels;
        float *restrict d = dx + r * channels;
        for (int32_t c = 0; c < channels; c++) {
            float xhat = (v[c] - mean[c]) * inv_std[c];
            d[c] = gamma[c] * inv_std[c] * (g[c] - mean_dy[c] - xhat * mean_dy_xhat[c]);
        }
    }
}

CGK_DISPATCH(, cgk_normalize_rgb,
             (float *x, ptrdiff_t pixels, const float scale[3], const float shift[3]),
             (x, pixels, scale, shift)) {
    for (ptrdiff_t p = 0; p < pixels; p++) {
        x[3 * p] = x[3 * p] * scale[0] + shift[0];
        x[3 * p + 1] = x[3 * p + 1] * scale[1] + shift[1];
        x[3 * p + 2] = x[3 * p + 2] * scale[2] + shift[2];
    }
}

CGK_DISPATCH(, cgk_adam_update,
             (float *w, const float *g, float *m, float *v, ptrdiff_t n, float lr, float beta1, float beta2, float
              bias1, float bias2, float epsilon, float l2, float decoupled, float clip),
             (w, g, m, v, n, lr, beta1, beta2, bias1, bias2, epsilon, l2, decoupled, clip)) {
    const float inv1 = 1.0f / bias1, inv2 = 1.0f / bias2;
    for (ptrdiff_t i = 0; i < n; i++) {
        const float grad = g[i] * clip + l2 * w[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * grad;
        v[i] = beta2 * v[i] + (1.0f - beta2) * grad * grad;
        const float update = (m[i] * inv1) / (sqrtf(v[i] * inv2) + epsilon) + decoupled * w[i];
        w[i] -= lr * update;
    }
}

CGK_DISPATCH(, cgk_sgd_update,
             (float *w, const float *g, float *velocity, ptrdiff_t n, float lr, float momentum, float l2, float clip),
             (w, g, velocity, n, lr, momentum, l2, clip)) {
    for (ptrdiff_t i = 0; i < n; i++) {
        velocity[i] = momentum * velocity[i] + g[i] * clip + l2 * w[i];
        w[i] -= lr * velocity[i];
    }
}
