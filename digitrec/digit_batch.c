/* A training batch gathered from the digits held in memory: the chosen rows of the uint8 images,
   each pixel scaled to [0, 1] as float32, and their labels, in one pass.

   Why this exists: PyTorch made a batch in four operations (index_select of the images and of the
   labels, a cast to float, a division by 255), and for FCNet 784-16-16-10 that took 45-78 us of
   a training step of about 375, up to a fifth of it. Most of it was waiting on memory:
   a batch's 128 rows lie scattered over the 47 MB of digits. Here the rows a few places ahead are
   prefetched while the current one is scaled, so the loads overlap.

   Same numbers as PyTorch: a pixel v becomes the float32 nearest to v / 255, as
   images.float().div_(255) gives (IEEE division, correctly rounded). A division of every pixel was
   slow (49 us a batch: the divider takes 16 lanes per several cycles), and so was a table of the 256
   quotients (40 us: a load per pixel). Instead q = v * (1/255) is corrected once by the remainder,
   q + (v - 255 q) / 255, both steps as fused multiply-adds (fmaf: one rounding each, on any
   processor: the instruction where there is one, the C library's exact fmaf elsewhere). A pixel
   has only 256 values, and tests/test_digit_batch.py checks every one of them against PyTorch's
   division, at each vector width: on those the correction is exact (30 us a batch).

   Layout: images (count, pixels) uint8 contiguous, labels (count,) int64; rows (n,) int64 (the
   caller's permutation); out (n, pixels) float32, labels_out (n,) int64. Returns 0, or -1 (having
   read nothing) where a row is outside 0..count-1. */

#include <math.h>
#include <stdint.h>

/* How many rows ahead to prefetch: 8 rows (about 100 cache lines of MNIST digits) kept FCNet's
   batches fastest here; 4 to 32 were within noise of it. */
#define ROWS_AHEAD 8
#define CACHE_LINE 64

static void prefetch_row(const uint8_t *row, int64_t pixels) {
  for (int64_t b = 0; b < pixels; b += CACHE_LINE) __builtin_prefetch(row + b);
}

int gather_digits(const uint8_t *images, int64_t count, int64_t pixels, const int64_t *labels, const int64_t *rows,
                  int64_t n, float *out, int64_t *labels_out) {
  for (int64_t i = 0; i < n; i++)
    if (rows[i] < 0 || rows[i] >= count) return -1;
  const float inverse = 1.0f / 255.0f;
  for (int64_t i = 0; i < n && i < ROWS_AHEAD; i++) prefetch_row(images + rows[i] * pixels, pixels);
  for (int64_t i = 0; i < n; i++) {
    if (i + ROWS_AHEAD < n) prefetch_row(images + rows[i + ROWS_AHEAD] * pixels, pixels);
    const uint8_t *restrict src = images + rows[i] * pixels;
    float *restrict dst = out + i * pixels;
    for (int64_t j = 0; j < pixels; j++) {
      float v = (float)src[j];
      float q = v * inverse;                 /* within an ulp of v / 255 */
      float remainder = fmaf(-q, 255.0f, v);  /* v - 255 q, exactly */
      dst[j] = fmaf(remainder, inverse, q);   /* q nudged to the nearest float of v / 255 */
    }
    labels_out[i] = labels[rows[i]];
  }
  return 0;
}
