/* 2 x 2, stride-2 max pooling of channels-last maps, forward and backward, for training.

   Why this exists: PyTorch's CPU max_pool2d_with_indices walks a channels-last map one window
   at a time with an int64 index per output, and with TinyVGG's 10 channels (shorter than one
   vector register) it took about a quarter of a training step. Here a pair of map rows is
   scanned as one contiguous run, many positions at once (GCC/Clang vector extensions: the
   compiler lowers them to whatever the processor has), and the winner of each window is kept
   as one byte (0 top left, 1 top right, 2 bottom left, 3 bottom right).

   Same numbers as PyTorch: a window is scanned in PyTorch's order (top left, top right,
   bottom left, bottom right) and a later value wins when it is greater or NaN, so ties go to
   the first maximum and a NaN to the last NaN, exactly as in aten's max_pool2d kernel; the
   output is the winner's bits, the backward pass gives each input its output's gradient if it
   won (a -0 as +0, as aten's zeroed sum does), else 0. Only a NaN's payload bits may differ
   from aten's, which itself writes different NaN bits on different paths. digitrec/pooling.py
   calls these through ctypes; tests/test_pooling.py checks them against PyTorch.

   With relu_first set, the forward pass pools relu(x) without writing it (a ReLU right before a
   pool, as in TinyVGG: the ReLU's pass over the whole map and its backward pass are saved):
   relu as PyTorch's (a negative number becomes +0; -0 and NaN stay), and the backward pass,
   given the pooled output, passes a window's gradient only where that output is not <= 0, as
   the ReLU's backward (threshold_backward) would.

   Layout: x is (n, h, w, c) in memory (a channels-last (n, c, h, w) tensor), h and w even;
   y and which are (n, h/2, w/2, c); gx is (n, h, w, c); the backward pass's y is NULL unless a
   ReLU came first. Each returns 0, or -1 where it could not allocate its row buffers. Two
   element types: bfloat16 (the training forward pass under autocast) and float32, each
   compared through an integer key that orders its bits as the values are ordered (-0 and +0
   equal; NaN is flagged apart). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One vector register's width on the processor compiled for (-march=native): a wider vector
   type is split by the compiler into passes through memory, several times slower than PyTorch. */
#if defined(__AVX512BW__)
#define VECTOR_BYTES 64
#elif defined(__AVX2__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16 /* SSE2, Arm's NEON */
#endif

/* POOL_KERNELS(suffix, T: signed integer of the element's width, MAGNITUDE: all bits but the
   sign, INF: the bits of +infinity) defines pool_forward_<suffix> and pool_backward_<suffix>. */
#define POOL_KERNELS(SUFFIX, T, MAGNITUDE, INF)                                                     \
    typedef T vec_##SUFFIX __attribute__((vector_size(VECTOR_BYTES)));                              \
    enum { LANES_##SUFFIX = VECTOR_BYTES / sizeof(T), SIGN_SHIFT_##SUFFIX = 8 * sizeof(T) - 1 };  \
                                                                                                     \
    static inline vec_##SUFFIX load_##SUFFIX(const T *p) {                                          \
        vec_##SUFFIX v; memcpy(&v, p, sizeof v); return v;                                          \
    }                                                                                                \
    static inline void store_##SUFFIX(T *p, vec_##SUFFIX v) { memcpy(p, &v, sizeof v); }           \
    /* where mask: a, else b (masks are all ones or all zeros per lane) */                           \
    static inline vec_##SUFFIX pick_##SUFFIX(vec_##SUFFIX mask, vec_##SUFFIX a, vec_##SUFFIX b) {   \
        return (mask & a) | (~mask & b);                                                             \
    }                                                                                                \
    /* sign-magnitude bits -> two's complement order; -0 -> 0 */                                    \
    static inline vec_##SUFFIX key_##SUFFIX(vec_##SUFFIX bits) {                                    \
        vec_##SUFFIX key = bits ^ ((bits >> SIGN_SHIFT_##SUFFIX) & (T)MAGNITUDE);                   \
        return key & (vec_##SUFFIX)((bits & (T)MAGNITUDE) != 0);                                    \
    }                                                                                                \
    static inline vec_##SUFFIX nan_##SUFFIX(vec_##SUFFIX bits) {                                    \
        return (vec_##SUFFIX)((bits & (T)MAGNITUDE) > (T)INF);                                      \
    }                                                                                                \
    /* PyTorch's relu on the bits: a negative number (key below 0, not NaN) becomes +0 */           \
    static inline vec_##SUFFIX relu_##SUFFIX(vec_##SUFFIX bits) {                                   \
        return bits & ~((key_##SUFFIX(bits) < 0) & ~nan_##SUFFIX(bits));                            \
    }                                                                                                \
    static inline T key1_##SUFFIX(T bits) {                                                         \
        T key = (T)(bits ^ ((bits >> SIGN_SHIFT_##SUFFIX) & (T)MAGNITUDE));                         \
        return (bits & (T)MAGNITUDE) ? key : 0;                                                      \
    }                                                                                                \
    static inline int nan1_##SUFFIX(T bits) { return (bits & (T)MAGNITUDE) > (T)INF; }              \
    static inline T relu1_##SUFFIX(T bits) {                                                        \
        return (key1_##SUFFIX(bits) < 0 && !nan1_##SUFFIX(bits)) ? 0 : bits;                        \
    }                                                                                                \
                                                                                                     \
    /* For every position p < span of a pair of rows, the window starting there (as if every       \
       pixel began one; the caller keeps the even ones): its winner's bits and slot. */             \
    static void windows_##SUFFIX(const T *r0, const T *r1, T *best, T *slot, int64_t span,          \
                                 int64_t c, int relu_first) {                                        \
        int64_t p = 0;                                                                               \
        if (span >= LANES_##SUFFIX) {                                                                \
            for (;;) {                                                                               \
                vec_##SUFFIX b0 = load_##SUFFIX(r0 + p), b1 = load_##SUFFIX(r0 + p + c),            \
                             b2 = load_##SUFFIX(r1 + p), b3 = load_##SUFFIX(r1 + p + c);            \
                if (relu_first) {                                                                    \
                    b0 = relu_##SUFFIX(b0); b1 = relu_##SUFFIX(b1);                                  \
                    b2 = relu_##SUFFIX(b2); b3 = relu_##SUFFIX(b3);                                  \
                }                                                                                    \
                vec_##SUFFIX k0 = key_##SUFFIX(b0), k1 = key_##SUFFIX(b1),                          \
                             k2 = key_##SUFFIX(b2), k3 = key_##SUFFIX(b3);                          \
                vec_##SUFFIX n0 = nan_##SUFFIX(b0), n1 = nan_##SUFFIX(b1),                          \
                             n2 = nan_##SUFFIX(b2), n3 = nan_##SUFFIX(b3);                          \
                /* a later value wins if greater (never over a NaN), or if it is NaN */             \
                vec_##SUFFIX later = ((k1 > k0) & ~n0) | n1;                                         \
                vec_##SUFFIX k = pick_##SUFFIX(later, k1, k0), n = pick_##SUFFIX(later, n1, n0);    \
                vec_##SUFFIX bits = pick_##SUFFIX(later, b1, b0), s = later & 1;                    \
                later = ((k2 > k) & ~n) | n2;                                                        \
                k = pick_##SUFFIX(later, k2, k); n = pick_##SUFFIX(later, n2, n);                   \
                bits = pick_##SUFFIX(later, b2, bits); s = pick_##SUFFIX(later, s * 0 + 2, s);      \
                later = ((k3 > k) & ~n) | n3;                                                        \
                bits = pick_##SUFFIX(later, b3, bits); s = pick_##SUFFIX(later, s * 0 + 3, s);      \
                store_##SUFFIX(best + p, bits); store_##SUFFIX(slot + p, s);                         \
                if (p + LANES_##SUFFIX == span) return;                                              \
                p += LANES_##SUFFIX;                                                                 \
                /* the last vector may overlap the one before: each position's answer is the same */\
                if (p + LANES_##SUFFIX > span) p = span - LANES_##SUFFIX;                            \
            }                                                                                        \
        }                                                                                            \
        for (; p < span; p++) { /* rows shorter than one vector */                                  \
            T b[4] = {r0[p], r0[p + c], r1[p], r1[p + c]};                                          \
            if (relu_first)                                                                          \
                for (int q = 0; q < 4; q++) b[q] = relu1_##SUFFIX(b[q]);                             \
            int win = 0;                                                                             \
            for (int q = 1; q < 4; q++)                                                              \
                if ((key1_##SUFFIX(b[q]) > key1_##SUFFIX(b[win]) && !nan1_##SUFFIX(b[win]))         \
                    || nan1_##SUFFIX(b[q]))                                                          \
                    win = q;                                                                         \
            best[p] = b[win]; slot[p] = (T)win;                                                      \
        }                                                                                            \
    }                                                                                                \
                                                                                                     \
    /* keep the windows that start at even pixels (c is a constant where the caller can make it) */ \
    static inline void keep_even_##SUFFIX(const T *best, const T *slot, T *y, uint8_t *which,       \
                                          int64_t ow, int64_t c) {                                   \
        for (int64_t j = 0; j < ow; j++)                                                             \
            for (int64_t k = 0; k < c; k++) {                                                        \
                y[j * c + k] = best[2 * j * c + k];                                                  \
                which[j * c + k] = (uint8_t)slot[2 * j * c + k];                                     \
            }                                                                                        \
    }                                                                                                \
                                                                                                     \
    int pool_forward_##SUFFIX(const T *x, T *y, uint8_t *which, int64_t n, int64_t h, int64_t w,   \
                              int64_t c, int relu_first) {                                           \
        int64_t oh = h / 2, ow = w / 2, row = w * c;                                                 \
        T *best = malloc(2 * row * sizeof(T)), *slot = best + row;                                   \
        if (!best) return -1;                                                                        \
        for (int64_t b = 0; b < n; b++)                                                              \
            for (int64_t i = 0; i < oh; i++) {                                                       \
                const T *r0 = x + (b * h + 2 * i) * row;                                             \
                int64_t out = (b * oh + i) * ow * c;                                                 \
                windows_##SUFFIX(r0, r0 + row, best, slot, row - c, c, relu_first);                 \
                if (c == 10) keep_even_##SUFFIX(best, slot, y + out, which + out, ow, 10);          \
                else keep_even_##SUFFIX(best, slot, y + out, which + out, ow, c);                   \
            }                                                                                        \
        free(best);                                                                                  \
        return 0;                                                                                    \
    }                                                                                                \
                                                                                                     \
    /* each output's gradient and winner, repeated for both pixels of its window in a row; with     \
       the pooled output y (a ReLU came first), 0 where y <= 0, as the ReLU's backward pass */      \
    static inline void spread_##SUFFIX(const T *g, const uint8_t *which, const T *y, T *g2,         \
                                       T *which2, int64_t ow, int64_t c) {                           \
        for (int64_t j = 0; j < ow; j++)                                                             \
            for (int64_t k = 0; k < c; k++) {                                                        \
                T passed = g[j * c + k];                                                             \
                if (y && !(key1_##SUFFIX(y[j * c + k]) > 0 || nan1_##SUFFIX(y[j * c + k])))          \
                    passed = 0;                                                                      \
                if ((passed & (T)MAGNITUDE) == 0) /* aten adds the gradient to a zeroed one: */     \
                    passed = 0;                   /* -0 arrives as +0 */                             \
                g2[2 * j * c + k] = g2[2 * j * c + c + k] = passed;                                  \
                which2[2 * j * c + k] = which2[2 * j * c + c + k] = (T)which[j * c + k];            \
            }                                                                                        \
    }                                                                                                \
                                                                                                     \
    int pool_backward_##SUFFIX(const T *g, const uint8_t *which, const T *y, T *gx, int64_t n,      \
                               int64_t h, int64_t w, int64_t c) {                                    \
        int64_t oh = h / 2, ow = w / 2, row = w * c;                                                 \
        T *g2 = malloc(3 * row * sizeof(T)), *which2 = g2 + row, *column = which2 + row;             \
        if (!g2) return -1;                                                                          \
        /* column: 0 for a window's left pixel, 1 for its right */                                  \
        for (int64_t p = 0; p < row; p++) column[p] = (T)((p / c) % 2);                              \
        for (int64_t b = 0; b < n; b++)                                                              \
            for (int64_t i = 0; i < oh; i++) {                                                       \
                int64_t out = (b * oh + i) * ow * c;                                                 \
                T *top = gx + (b * h + 2 * i) * row, *bottom = top + row;                            \
                const T *y_row = y ? y + out : 0;                                                    \
                if (c == 10) spread_##SUFFIX(g + out, which + out, y_row, g2, which2, ow, 10);      \
                else spread_##SUFFIX(g + out, which + out, y_row, g2, which2, ow, c);               \
                int64_t p = 0;                                                                       \
                for (; p + LANES_##SUFFIX <= row; p += LANES_##SUFFIX) {                             \
                    vec_##SUFFIX gv = load_##SUFFIX(g2 + p), won = load_##SUFFIX(which2 + p);       \
                    vec_##SUFFIX col = load_##SUFFIX(column + p);                                    \
                    store_##SUFFIX(top + p, gv & (vec_##SUFFIX)(won == col));                        \
                    store_##SUFFIX(bottom + p, gv & (vec_##SUFFIX)(won == col + 2));                 \
                }                                                                                    \
                for (; p < row; p++) {                                                               \
                    top[p] = which2[p] == column[p] ? g2[p] : 0;                                     \
                    bottom[p] = which2[p] == column[p] + 2 ? g2[p] : 0;                              \
                }                                                                                    \
            }                                                                                        \
        free(g2);                                                                                    \
        return 0;                                                                                    \
    }

POOL_KERNELS(bfloat16, int16_t, 0x7FFF, 0x7F80)
POOL_KERNELS(float32, int32_t, 0x7FFFFFFF, 0x7F800000)
