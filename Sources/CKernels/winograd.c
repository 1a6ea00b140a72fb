// Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016): each 4x4 output tile costs 36 products per channel pair
// instead of 144. Inputs are transformed per 6x6 tile (V = B^T d B), multiplied in the transform
// domain by weights transformed once at load (U = G g G^T) - 36 independent GEMMs - and
// transformed back (Y = A^T M A). Layout: NHWC; V and M are [36][tiles][channels].
#include "kernel_internal.h"

#include <string.h>

// U[36][cin][cout] from weight [3][3][cin][cout].
void cgk_winograd_weights(const float *weight, int32_t cin, int32_t cout, float *u) {
    static const float G[6][3] = {
        {1.0f / 4, 0, 0}, {-1.0f / 6, -1.0f / 6, -1.0f / 6}, {-1.0f / 6, 1.0f / 6, -1.0f / 6},
        {1.0f / 24, 1.0f / 12, 1.0f / 6}, {1.0f / 24, -1.0f / 12, 1.0f / 6}, {0, 0, 1},
    };
    const ptrdiff_t plane = (ptrdiff_t)cin * cout;
    for (int32_t ci = 0; ci < cin; ci++) {
        for (int32_t co = 0; co < cout; co++) {
            float g[3][3], t[6][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = weight[((ptrdiff_t)(i * 3 + j) * cin + ci) * cout + co];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * g[0][j] + G[i][1] * g[1][j] + G[i][2] * g[2][j];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++)
                    u[(ptrdiff_t)(i * 6 + j) * plane + (ptrdiff_t)ci * cout + co] = t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2];
        }
    }
}

#define CGK_WV 16 // channels per vector step

// Copies cn <= CGK_WV floats. Whole vectors are one vector load and store: with a variable
// length the compiler emits masked stores (vmaskmovps), which AMD CPUs run slowly, and with two
// memcpy calls (64 bytes or cn * 4) it merged them into one call of libc's memcpy of a selected
// length, 52 calls per tile (8% of the baseline CNN's samples, AVX-512 machine).
CGK_INLINE void cgk_copy_channels(float *dst, const float *src, int32_t cn) {
    if (cn == CGK_WV) {
        cgk_store16(dst, cgk_load16(src));
        return;
    }
#pragma clang loop vectorize(disable)
    for (int32_t c = 0; c < cn; c++) dst[c] = src[c];
}

// B^T x B for one 6x6 block of CGK_WV-wide channel vectors, rows then columns.
CGK_INLINE void cgk_winograd_input_tile(float d[6][6][CGK_WV], float v[6][6][CGK_WV]) {
    float t[6][6][CGK_WV];
    for (int j = 0; j < 6; j++) {
        for (int c = 0; c < CGK_WV; c++) {
            const float d0 = d[0][j][c], d1 = d[1][j][c], d2 = d[2][j][c], d3 = d[3][j][c], d4 = d[4][j][c], d5 = d[5][j][c];
            t[0][j][c] = 4 * d0 - 5 * d2 + d4;
            t[1][j][c] = -4 * d1 - 4 * d2 + d3 + d4;
            t[2][j][c] = 4 * d1 - 4 * d2 - d3 + d4;
            t[3][j][c] = -2 * d1 - d2 + 2 * d3 + d4;
            t[4][j][c] = 2 * d1 - d2 - 2 * d3 + d4;
            t[5][j][c] = 4 * d1 - 5 * d3 + d5;
        }
    }
    for (int i = 0; i < 6; i++) {
        for (int c = 0; c < CGK_WV; c++) {
            const float d0 = t[i][0][c], d1 = t[i][1][c], d2 = t[i][2][c], d3 = t[i][3][c], d4 = t[i][4][c], d5 = t[i][5][c];
            v[i][0][c] = 4 * d0 - 5 * d2 + d4;
            v[i][1][c] = -4 * d1 - 4 * d2 + d3 + d4;
            v[i][2][c] = 4 * d1 - 4 * d2 - d3 + d4;
            v[i][3][c] = -2 * d1 - d2 + 2 * d3 + d4;
            v[i][4][c] = 2 * d1 - d2 - 2 * d3 + d4;
            v[i][5][c] = 4 * d1 - 5 * d3 + d5;
        }
    }
}

// V[36][tile][cin] (row stride ldv = cin) for tiles [t_begin, t_end) of one image.
CGK_DISPATCH(, cgk_winograd_input,
             (const float *x, const cgk_window *w, int32_t tiles_w, int32_t t_begin, int32_t t_end, float *v,
              ptrdiff_t plane),
             (x, w, tiles_w, t_begin, t_end, v, plane)) {
    const int32_t H = w->height, W = w->width, C = w->channels;
    float d[6][6][CGK_WV], out[6][6][CGK_WV];
    for (int32_t t = t_begin; t < t_end; t++) {
        const int32_t ih0 = (t / tiles_w) * 4 - w->pad_top, iw0 = (t % tiles_w) * 4 - w->pad_left;
        float *row = v + (ptrdiff_t)(t - t_begin) * C;
        // The next tile to the right reads four new columns of the same six rows: ask for them
        // now, while this tile's transform runs.
        if (t + 1 < t_end && (t + 1) % tiles_w != 0)
            for (int i = 0; i < 6; i++) {
                const int32_t ih = ih0 + i, iw = iw0 + 6;
                if (ih < 0 || ih >= H || iw >= W) continue;
                const char *from = (const char *)(x + ((ptrdiff_t)ih * W + iw) * C);
                const ptrdiff_t bytes = (ptrdiff_t)cgk_min(4, W - iw) * C * (ptrdiff_t)sizeof(float);
                for (ptrdiff_t b = 0; b < bytes; b += 64) __builtin_prefetch(from + b);
            }
        for (int32_t c0 = 0; c0 < C; c0 += CGK_WV) {
            const int32_t cn = C - c0 < CGK_WV ? C - c0 : CGK_WV;
            for (int i = 0; i < 6; i++) {
                const int32_t ih = ih0 + i;
                for (int j = 0; j < 6; j++) {
                    const int32_t iw = iw0 + j;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W || cn < CGK_WV) {
                        for (int c = 0; c < CGK_WV; c++) d[i][j][c] = 0.0f;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                            for (int c = 0; c < cn; c++) d[i][j][c] = x[((ptrdiff_t)ih * W + iw) * C + c0 + c];
                    } else {
                        const float *src = x + ((ptrdiff_t)ih * W + iw) * C + c0;
                        for (int c = 0; c < CGK_WV; c++) d[i][j][c] = src[c];
                    }
                }
            }
            cgk_winograd_input_tile(d, out);
            for (int p = 0; p < 36; p++) {
                float *dst = row + (ptrdiff_t)p * plane + c0;
                cgk_copy_channels(dst, out[p / 6][p % 6], cn);
            }
        }
    }
}

// Y = act(A^T M A + bias) for tiles [t_begin, t_end): M[36][tile][cout] -> NHWC output.
CGK_DISPATCH(, cgk_winograd_output,
             (const float *m, ptrdiff_t plane, int32_t cout, int32_t out_h, int32_t out_w, int32_t tiles_w, int32_t
              t_begin, int32_t t_end, const float *bias, int activation, float *y),
             (m, plane, cout, out_h, out_w, tiles_w, t_begin, t_end, bias, activation, y)) {
    float s[6][6][CGK_WV], t[4][6][CGK_WV], o[4][4][CGK_WV], b[CGK_WV];
    for (int32_t tile = t_begin; tile < t_end; tile++) {
        const int32_t oh0 = (tile / tiles_w) * 4, ow0 = (tile % tiles_w) * 4;
        const float *row = m + (ptrdiff_t)(tile - t_begin) * cout;
        for (int32_t c0 = 0; c0 < cout; c0 += CGK_WV) {
            const int32_t cn = cout - c0 < CGK_WV ? cout - c0 : CGK_WV;
            if (cn < CGK_WV) { // lanes past the last channel compute zeros that are never stored
                memset(s, 0, sizeof s);
                memset(b, 0, sizeof b);
            }
            for (int p = 0; p < 36; p++) cgk_copy_channels(s[p / 6][p % 6], row + (ptrdiff_t)p * plane + c0, cn);
            if (bias != NULL) cgk_copy_channels(b, bias + c0, cn);
            else memset(b, 0, sizeof b);
            for (int j = 0; j < 6; j++) {
                for (int c = 0; c < CGK_WV; c++) {
                    const float m0 = s[0][j][c], m1 = s[1][j][c], m2 = s[2][j][c], m3 = s[3][j][c], m4 = s[4][j][c], m5 = s[5][j][c];
                    t[0][j][c] = m0 + m1 + m2 + m3 + m4;
                    t[1][j][c] = m1 - m2 + 2 * m3 - 2 * m4;
                    t[2][j][c] = m1 + m2 + 4 * m3 + 4 * m4;
                    t[3][j][c] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
                }
            }
            for (int i = 0; i < 4; i++) {
                for (int c = 0; c < CGK_WV; c++) {
                    const float m0 = t[i][0][c], m1 = t[i][1][c], m2 = t[i][2][c], m3 = t[i][3][c], m4 = t[i][4][c], m5 = t[i][5][c];
                    const float v0 = m0 + m1 + m2 + m3 + m4 + b[c], v1 = m1 - m2 + 2 * m3 - 2 * m4 + b[c];
                    const float v2 = m1 + m2 + 4 * m3 + 4 * m4 + b[c], v3 = m1 - m2 + 8 * m3 - 8 * m4 + m5 + b[c];
                    o[i][0][c] = v0;
                    o[i][1][c] = v1;
                    o[i][2][c] = v2;
                    o[i][3][c] = v3;
                }
            }
            // Activation in a loop of its own: inside the transform the compiler turned the
            // per-activation branches into masked stores, which AMD CPUs run slowly.
            float *flat = &o[0][0][0];
            if (activation != CGK_ACT_NONE)
                for (int e = 0; e < 16 * CGK_WV; e++) flat[e] = cgk_activate(flat[e], activation);
            for (int i = 0; i < 4 && oh0 + i < out_h; i++)
                for (int j = 0; j < 4 && ow0 + j < out_w; j++)
                    cgk_copy_channels(y + ((ptrdiff_t)(oh0 + i) * out_w + ow0 + j) * cout + c0, o[i][j], cn);
        }
    }
}
