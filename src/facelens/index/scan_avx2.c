// The parts of the sign scan that need only AVX2 (any x86-64 CPU since ~2015) whichever scan
// runs: the queries' bits and the float16 re-rank. Built by `make setup` into scan_avx2.so with
// sign_scan.c's AVX2 scan, called through ctypes (kernels.py).
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "sign_scan.h"

// Puts the `top` largest of value[order[0..n-1]] first in `order` (any order among them).
static void largest_first(const float *value, uint8_t *order, int n, int top) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {  // quickselect on the middle element
    const float pivot = value[order[(lo + hi) / 2]];
    int i = lo, j = hi;
    while (i <= j) {
      while (value[order[i]] > pivot) i++;
      while (value[order[j]] < pivot) j--;
      if (i <= j) {
        const uint8_t swap = order[i];
        order[i++] = order[j], order[j--] = swap;
      }
    }
    if (top - 1 <= j) hi = j;
    else if (top - 1 >= i) lo = i;
    else break;
  }
}

// Queries as sign_query: centred on `mean`, projected on the 256 directions (`axes`, dim x 256
// row-major), each direction's sign a bit, the STRONG largest |projection| its filter's; the
// filter's `pass` is set by the caller.
void fl_sign_queries(const float *queries, int nq, int dim, const float *mean, const float *axes,
                     sign_query *out) {
#pragma omp parallel for schedule(static)
  for (int q = 0; q < nq; q++) {
    float value[DIRECTIONS], size[DIRECTIONS];
    uint8_t order[DIRECTIONS];
    memset(value, 0, sizeof value);
    for (int i = 0; i < dim; i++) {
      const float x = queries[(int64_t)q * dim + i] - mean[i];
      const float *a = axes + (int64_t)i * DIRECTIONS;
      for (int c = 0; c < DIRECTIONS; c++) value[c] += x * a[c];
    }
    sign_query *s = out + q;
    memset(s->bits, 0, sizeof s->bits);
    for (int c = 0; c < DIRECTIONS; c++) {
      s->bits[c / 64] |= (uint64_t)(value[c] > 0) << (c % 64);
      size[c] = __builtin_fabsf(value[c]), order[c] = (uint8_t)c;
    }
    largest_first(size, order, DIRECTIONS, STRONG);
    memset(s->strong, 0, sizeof s->strong);
    for (int k = 0; k < STRONG; k++) {  // a 1-bit query is unlike the faces' inverted bits
      const int c = order[k];
      s->at[k] = (uint16_t)((value[c] > 0 ? INVERTED + c : c) * WORD_BYTES);
      s->strong[c / 64] |= 1ULL << (c % 64);
    }
    s->pass = STRONG, s->unused = 0;
  }
}

// Each query's k best candidates by the inner product with their float16 rows, best first:
// out_score/out_row are nq x k (score -inf, row -1 where fewer than k rows are >= 0).
#define AHEAD 32  // candidates fetched ahead
void fl_rescore(const uint16_t *vectors, int dim, const float *queries, int nq,
                const int64_t *rows, int per_query, int k, float *out_score, int64_t *out_row) {
#pragma omp parallel for schedule(static)
  for (int q = 0; q < nq; q++) {
    const float *x = queries + (int64_t)q * dim;
    const int64_t *row = rows + (int64_t)q * per_query;
    float *best = out_score + (int64_t)q * k;
    int64_t *best_row = out_row + (int64_t)q * k;
    for (int i = 0; i < k; i++) best[i] = -__builtin_inff(), best_row[i] = -1;
    for (int c = 0; c < per_query; c++) {
      // rows lie anywhere in memory: fetch a few candidates ahead, not one miss at a time
      const int64_t ahead = c + AHEAD < per_query ? row[c + AHEAD] : -1;
      if (ahead >= 0)
        for (int line = 0; line < dim * 2; line += 64)
          _mm_prefetch((const char *)(vectors + ahead * dim) + line, _MM_HINT_T0);
      const int64_t r = row[c];
      if (r < 0) continue;
      const uint16_t *v = vectors + r * dim;
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      int d = 0;
      for (; d + 16 <= dim; d += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + d))),
                               _mm256_loadu_ps(x + d), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + d + 8))),
                               _mm256_loadu_ps(x + d + 8), acc1);
      }
      float lanes[8];
      _mm256_storeu_ps(lanes, _mm256_add_ps(acc0, acc1));
      float sum = 0;
      for (int i = 0; i < 8; i++) sum += lanes[i];
      for (; d < dim; d++) sum += _cvtsh_ss(v[d]) * x[d];
      if (sum <= best[k - 1]) continue;
      int i = k - 1;  // insertion into the sorted k best (k is small: a search's top k)
      for (; i > 0 && best[i - 1] < sum; i--) best[i] = best[i - 1], best_row[i] = best_row[i - 1];
      best[i] = sum, best_row[i] = r;
    }
  }
}
