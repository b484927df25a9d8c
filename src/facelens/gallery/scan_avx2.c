// The parts of the large-gallery scan that need only AVX2 (any x86-64 CPU since ~2015): the
// sign-code scan of SignScanIndex and the float16 re-rank both scan indexes share. Built by
// `make setup` into scan_avx2.so, called through ctypes (scan_index.py, sign_index.py).
//
// Sign codes: each face is 256 bits, the signs of its centred vector on 256 directions (the
// principal axes). A query's candidates are the faces with the fewest bits unlike its own
// (Hamming distance h), re-ranked exactly on float16 afterwards.
//
// Layout: faces in blocks of 256; a block is 266 words of 256 bits (32 bytes), bit j of a word
// belonging to face j of the block: words 0..255 are the faces' bits on each direction,
// 256..264 the 9 bit planes of each face's count of 1-bits, 265 a word of zeros (padding).
// So one AVX2 register holds one direction for 256 faces, and counting is done by bitwise
// adders across registers (Harley-Seal), 256 faces at once.
//
// Counting half the bits: with S1 the query's 1-bits and C(S) a face's count of 1-bits on S,
//   h = C(S0) + |S1| - C(S1) = |S1| + C(all) - 2 C(S1) = |S1| - C(all) + 2 C(S0),
// and C(all) is stored, so the scan counts the face bits on the smaller of S0 and S1 only.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WORDS 266
#define COUNT_PLANES 256  // first of the 9 planes of each face's count of 1-bits
#define ZERO_WORD 265
#define MAX_SET 128        // the smaller of a query's two sets has at most 128 directions
#define LIMIT_TOP 1023     // above any distance (h <= 256): "no floor yet"

typedef __m256i V;

// Carry-save adder: (high, low) = a + b + c, bitwise.
#define CSA(high, low, a, b, c)                                                  \
  {                                                                              \
    const V u_ = _mm256_xor_si256(a, b);                                         \
    high = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(u_, c));     \
    low = _mm256_xor_si256(u_, c);                                               \
  }

// Adds 16 words (the block's words at byte offsets `at`) into the running ones/twos/fours/eights planes and
// returns the carry into the sixteens plane.
static inline V add16(const V *block, const uint16_t *at, V *ones, V *twos, V *fours,
                      V *eights) {
#define W(k) _mm256_load_si256((const V *)((const char *)block + at[k]))
  V twos_a, twos_b, fours_a, fours_b, eights_a, eights_b, sixteens;
  CSA(twos_a, *ones, *ones, W(0), W(1));
  CSA(twos_b, *ones, *ones, W(2), W(3));
  CSA(fours_a, *twos, *twos, twos_a, twos_b);
  CSA(twos_a, *ones, *ones, W(4), W(5));
  CSA(twos_b, *ones, *ones, W(6), W(7));
  CSA(fours_b, *twos, *twos, twos_a, twos_b);
  CSA(eights_a, *fours, *fours, fours_a, fours_b);
  CSA(twos_a, *ones, *ones, W(8), W(9));
  CSA(twos_b, *ones, *ones, W(10), W(11));
  CSA(fours_a, *twos, *twos, twos_a, twos_b);
  CSA(twos_a, *ones, *ones, W(12), W(13));
  CSA(twos_b, *ones, *ones, W(14), W(15));
  CSA(fours_b, *twos, *twos, twos_a, twos_b);
  CSA(eights_b, *fours, *fours, fours_a, fours_b);
  CSA(sixteens, *eights, *eights, eights_a, eights_b);
  return sixteens;
#undef W
}

// A query: the directions of the smaller of its 0-bit and 1-bit sets, as byte offsets of
// their words in a block (32 x direction: no shift per load), padded with ZERO_WORD's to
// `groups` of 16; `ones` is 1 when that set is the 1-bits; `n1` its count of 1-bits.
typedef struct {
  uint16_t at[MAX_SET];
  int32_t groups, ones, n1;
} sign_query;

// One thread's candidates of one query: every face seen with h < limit, where limit is the
// smallest distance below which at least `keep` faces were seen (a histogram of distances, so
// each take is O(1), not a heap's log). Faces at or above limit are dropped when the buffer
// fills (and it grows if ties at the limit keep it over half full).
typedef struct {
  int64_t *face;
  int16_t *h;
  int len, cap, keep, below;  // below: faces held with h < limit
  int32_t seen[LIMIT_TOP + 1];
} candidates;

static void candidates_open(candidates *c, int keep) {
  c->cap = 4 * keep, c->keep = keep, c->len = c->below = 0;
  c->face = malloc(sizeof(int64_t) * c->cap), c->h = malloc(sizeof(int16_t) * c->cap);
  memset(c->seen, 0, sizeof c->seen);
}

// Takes a face with h < limit; returns the new limit.
static int candidates_take(candidates *c, int limit, int64_t face, int h) {
  c->face[c->len] = face, c->h[c->len] = (int16_t)h, c->len++;
  c->seen[h]++, c->below++;
  while (c->below - c->seen[limit - 1] >= c->keep)
    c->below -= c->seen[limit - 1], c->seen[limit - 1] = 0, limit--;
  if (c->len == c->cap) {
    int kept = 0;
    for (int i = 0; i < c->len; i++)
      if (c->h[i] < limit) c->face[kept] = c->face[i], c->h[kept++] = c->h[i];
    c->len = kept;
    if (kept > c->cap / 2) {  // many ties at the limit: room to go on
      c->cap *= 2;
      c->face = realloc(c->face, sizeof(int64_t) * c->cap);
      c->h = realloc(c->h, sizeof(int16_t) * c->cap);
    }
  }
  return limit;
}

// No face: a score below any -h, and negatable (scan_index.py ranks threads' finds by -score).
#define NO_SCORE (INT32_MIN / 2)

// The best `keep` (fewer where fewer were seen: row -1, score NO_SCORE) as score -h, then freed.
static void candidates_close(candidates *c, int limit, int32_t *score, int64_t *row) {
  int out = 0;
  for (int pass = 0; pass < 2; pass++)  // below limit - 1 first, then ties at limit - 1
    for (int i = 0; i < c->len && out < c->keep; i++)
      if (pass == 0 ? c->h[i] < limit - 1 : c->h[i] == limit - 1)
        score[out] = -c->h[i], row[out++] = c->face[i];
  for (; out < c->keep; out++) score[out] = NO_SCORE, row[out] = -1;
  free(c->face), free(c->h);
}

// Bit j (of 256) of each of `planes` words, as a number.
static inline int bits_at(const uint64_t (*plane)[4], int planes, int j) {
  int value = 0;
  for (int k = 0; k < planes; k++) value |= (int)((plane[k][j >> 6] >> (j & 63)) & 1) << k;
  return value;
}

// Distances of one query to the 256 faces of `block`, as 11 bit planes of h - n1 + 1024, and
// the faces with h < limit as a mask.
static inline V block_distances(const V *block, const sign_query *q, int limit, V d[11]) {
  const V zero = _mm256_setzero_si256(), ones_word = _mm256_set1_epi8(-1);
  V ones = zero, twos = zero, fours = zero, eights = zero;
  V p16 = zero, p32 = zero, p64 = zero, p128 = zero;
  for (int g = 0; g < q->groups; g += 2) {
    const V a = add16(block, q->at + 16 * g, &ones, &twos, &fours, &eights);
    const V b = g + 1 < q->groups ? add16(block, q->at + 16 * (g + 1), &ones, &twos, &fours,
                                          &eights)
                                  : zero;
    V carry, carry2;
    CSA(carry, p16, p16, a, b);  // then ripple the carry up (C <= 128: nothing past p128)
    carry2 = _mm256_and_si256(p32, carry), p32 = _mm256_xor_si256(p32, carry);
    carry = _mm256_and_si256(p64, carry2), p64 = _mm256_xor_si256(p64, carry2);
    p128 = _mm256_or_si256(p128, carry);
  }
  // C(set) doubled (planes shifted up one) and C(all), both to 11 planes.
  const V count[8] = {ones, twos, fours, eights, p16, p32, p64, p128};
  V all[11], twice[11];
  for (int k = 0; k < 11; k++) {
    all[k] = k < 9 ? _mm256_load_si256(block + COUNT_PLANES + k) : zero;
    twice[k] = k >= 1 && k <= 8 ? count[k - 1] : zero;
  }
  // h - n1 = A - B: (C(all), 2C) for a 1-bit set, (2C, C(all)) for a 0-bit set; A + ~B + 1.
  const V *a = q->ones ? all : twice, *b = q->ones ? twice : all;
  V carry = ones_word;
  for (int k = 0; k < 11; k++) {
    const V not_b = _mm256_xor_si256(b[k], ones_word), u = _mm256_xor_si256(a[k], not_b);
    d[k] = _mm256_xor_si256(u, carry);
    carry = _mm256_or_si256(_mm256_and_si256(a[k], not_b), _mm256_and_si256(u, carry));
  }
  d[10] = _mm256_xor_si256(d[10], ones_word);  // two's complement -> offset by 1024
  // d < limit - n1 + 1024, compared from the top plane down
  const int bound = limit - q->n1 + 1024;
  V below = zero, equal = ones_word;
  for (int k = 10; k >= 0; k--) {
    if ((bound >> k) & 1) {
      below = _mm256_or_si256(below, _mm256_andnot_si256(d[k], equal));
      equal = _mm256_and_si256(equal, d[k]);
    } else {
      equal = _mm256_andnot_si256(d[k], equal);
    }
  }
  return below;
}

// Offers the faces of blocks from, from + step, ... (< to) to each query's candidates.
static void scan_blocks(const uint8_t *blocks, int64_t from, int64_t to, int64_t step,
                        int64_t n, const int64_t *labels, const sign_query *queries, int nq,
                        candidates *best, int32_t *limit) {
  for (int64_t b = from; b < to; b += step) {
    const V *block = (const V *)(blocks + b * WORDS * 32);
    for (int q = 0; q < nq; q++) {
      V d[11];
      const V below = block_distances(block, queries + q, limit[q], d);
      if (__builtin_expect(_mm256_testz_si256(below, below), 1)) continue;
      uint64_t mask[4], plane[11][4];
      _mm256_storeu_si256((V *)mask, below);
      for (int k = 0; k < 11; k++) _mm256_storeu_si256((V *)plane[k], d[k]);
      for (int w = 0; w < 4; w++)
        for (; mask[w]; mask[w] &= mask[w] - 1) {
          const int j = w * 64 + __builtin_ctzll(mask[w]);
          const int64_t face = b * 256 + j;
          const int h = bits_at(plane, 11, j) - 1024 + queries[q].n1;
          // the limit may have fallen since this block's mask was made
          if (face < n && labels[face] >= 0 && h < limit[q])
            limit[q] = candidates_take(best + q, limit[q], face, h);
        }
    }
  }
}

// Each of `nq` queries' best `keep` live faces (label >= 0) per thread, fewest bits unlike its
// own first: out_score/out_row are nq x (threads * keep), score -h, unsorted; row -1 (score
// NO_SCORE) where fewer were seen. `blocks` must be 32-byte aligned.
//
// A thread's limit ends near the keep-th smallest distance of its faces, but starting from
// none it is taken past ~keep * ln(faces / keep) times. So a first pass over every
// SEED_EVERY-th block keeps 3 * keep / SEED_EVERY faces a query, and the scan starts from the
// limit that leaves: a quantile ~3x the final one, above it but for a chance of ~1e-6 (and
// then a query gets fewer candidates, the nearest ones still).
#define SEED_EVERY 32
void fl_sign_search(const uint8_t *blocks, int64_t n, const int64_t *labels,
                    const sign_query *queries, int nq, int keep, int threads,
                    int32_t *out_score, int64_t *out_row) {
  const int64_t nblocks = (n + 255) / 256;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    candidates *best = malloc(sizeof(candidates) * nq);
    int32_t *limit = malloc(sizeof(int32_t) * nq);  // apart from `best`: read every block
    for (int q = 0; q < nq; q++) limit[q] = LIMIT_TOP;
    const int64_t first = nblocks * t / nt, last = nblocks * (t + 1) / nt;
    const int seed_keep = 3 * keep / SEED_EVERY > 8 ? 3 * keep / SEED_EVERY : 8;
    if ((last - first) / SEED_EVERY >= 4 * seed_keep / 256 + 4) {  // enough faces to seed from
      for (int q = 0; q < nq; q++) candidates_open(best + q, seed_keep);
      scan_blocks(blocks, first, last, SEED_EVERY, n, labels, queries, nq, best, limit);
      for (int q = 0; q < nq; q++) free(best[q].face), free(best[q].h);
    }
    for (int q = 0; q < nq; q++) candidates_open(best + q, keep);
    scan_blocks(blocks, first, last, 1, n, labels, queries, nq, best, limit);
    for (int q = 0; q < nq; q++)
      candidates_close(best + q, limit[q], out_score + ((int64_t)q * nt + t) * keep,
                       out_row + ((int64_t)q * nt + t) * keep);
    free(best), free(limit);
  }
}

// Queries as sign_query: centred on `mean`, projected on the 256 directions (`axes`, dim x 256
// row-major), each direction's sign a bit.
void fl_sign_queries(const float *queries, int nq, int dim, const float *mean, const float *axes,
                     sign_query *out) {
  float value[256];
  for (int q = 0; q < nq; q++) {
    memset(value, 0, sizeof value);
    for (int i = 0; i < dim; i++) {
      const float x = queries[(int64_t)q * dim + i] - mean[i];
      const float *a = axes + (int64_t)i * 256;
      for (int c = 0; c < 256; c++) value[c] += x * a[c];
    }
    int n1 = 0;
    for (int c = 0; c < 256; c++) n1 += value[c] > 0;
    sign_query *s = out + q;
    s->ones = n1 <= 128, s->n1 = n1;
    int len = 0;
    for (int c = 0; c < 256; c++)
      if ((value[c] > 0) == s->ones) s->at[len++] = (uint16_t)(c * 32);
    s->groups = (len + 15) / 16;
    for (; len < MAX_SET; len++) s->at[len] = ZERO_WORD * 32;
  }
}

// Inner products of each query with its candidate rows' float16 vectors (-inf for row -1).
void fl_rescore(const uint16_t *vectors, int dim, const float *queries, int nq,
                const int64_t *rows, int per_query, float *out) {
#pragma omp parallel for schedule(static)
  for (int q = 0; q < nq; q++) {
    const float *x = queries + (int64_t)q * dim;
    for (int c = 0; c < per_query; c++) {
      const int64_t r = rows[(int64_t)q * per_query + c];
      if (r < 0) {
        out[(int64_t)q * per_query + c] = -__builtin_inff();
        continue;
      }
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
      out[(int64_t)q * per_query + c] = sum;
    }
  }
}
