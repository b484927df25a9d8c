// Exhaustive scan of the sign codes of SignScanIndex (sign_index.py), compiled twice: for AVX2
// into scan_avx2.so (fl_sign_search_avx2) and for AVX-512 into scan_kernel.so
// (fl_sign_search_avx512). Layout and queries: sign_scan.h.
//
// Each face is 256 bits, the signs of its centred vector on 256 directions (the principal
// axes). A query's candidates are the faces with the fewest bits unlike its own (Hamming
// distance h), re-ranked exactly on float16 afterwards. Bits are counted with bitwise adders
// across registers (Harley-Seal), a register's width of faces at once; with AVX-512 a
// carry-save adder is two VPTERNLOGs on 512 faces instead of five operations on 256.
//
// Counting half the bits: with S1 the query's 1-bits and C(S) a face's count of 1-bits on S,
//   h = C(S0) + |S1| - C(S1) = |S1| + C(all) - 2 C(S1) = |S1| - C(all) + 2 C(S0),
// and C(all) is stored, so the scan counts the face bits on the smaller of S0 and S1 only.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sign_scan.h"

#if defined(__AVX512F__)
typedef __m512i V;
#define SIGN_SEARCH fl_sign_search_avx512
#define ZERO() _mm512_setzero_si512()
#define ALL_ONES() _mm512_set1_epi32(-1)
#define LOAD(p) _mm512_load_si512((const void *)(p))
#define STORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define XOR _mm512_xor_si512
#define AND _mm512_and_si512
#define OR _mm512_or_si512
#define ANDNOT _mm512_andnot_si512  // ~a & b
#define NONE(v) (_mm512_test_epi64_mask(v, v) == 0)
// Carry-save adder: (high, low) = a + b + c, bitwise: parity, then the majority from b, c
// and the parity (0xD4: b & c | (b ^ c) & ~parity), so that neither VPTERNLOG needs a copy
// of a register it overwrites (the copies cost as much as the adders).
#define CSA(high, low, a, b, c)                                                  \
  {                                                                              \
    const V b_ = (b), c_ = (c);                                                  \
    low = _mm512_ternarylogic_epi64(a, b_, c_, 0x96);                            \
    high = _mm512_ternarylogic_epi64(b_, c_, low, 0xD4);                         \
  }
#else
typedef __m256i V;
#define SIGN_SEARCH fl_sign_search_avx2
#define ZERO() _mm256_setzero_si256()
#define ALL_ONES() _mm256_set1_epi8(-1)
#define LOAD(p) _mm256_load_si256((const V *)(p))
#define STORE(p, v) _mm256_storeu_si256((V *)(p), v)
#define XOR _mm256_xor_si256
#define AND _mm256_and_si256
#define OR _mm256_or_si256
#define ANDNOT _mm256_andnot_si256  // ~a & b
#define NONE(v) _mm256_testz_si256(v, v)
#define CSA(high, low, a, b, c)                                                  \
  {                                                                              \
    const V a_ = (a), b_ = (b), c_ = (c), u_ = XOR(a_, b_);                      \
    high = OR(AND(a_, b_), AND(u_, c_));                                         \
    low = XOR(u_, c_);                                                           \
  }
#endif

#define LANES ((int)sizeof(V) / 8)     // 64-bit words a register
#define HALVES (WORD_BYTES / (int)sizeof(V))  // registers a word
#define LIMIT_TOP 1023  // above any distance (h <= 256): "no floor yet"

// Adds 16 words (at byte offsets `at` from `base`) into the running ones/twos/fours/eights
// planes and returns the carry into the sixteens plane.
static inline V add16(const char *base, const uint16_t *at, V *ones, V *twos, V *fours,
                      V *eights) {
#define W(k) LOAD(base + at[k])
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

// Bit j of a register's faces in each of `planes` planes, as a number.
static inline int bits_at(const uint64_t (*plane)[LANES], int planes, int j) {
  int value = 0;
  for (int k = 0; k < planes; k++) value |= (int)((plane[k][j >> 6] >> (j & 63)) & 1) << k;
  return value;
}

// Distances of one query to a register's width of faces (the block's words from `base`), as
// 11 bit planes of h - n1 + 1024, and the faces with h < limit as a mask.
static inline V distances(const char *base, const sign_query *q, int limit, V d[11]) {
  const V zero = ZERO(), ones_word = ALL_ONES();
  V ones = zero, twos = zero, fours = zero, eights = zero;
  V p16 = zero, p32 = zero, p64 = zero, p128 = zero;
  for (int g = 0; g < q->groups; g += 2) {
    const V a = add16(base, q->at + 16 * g, &ones, &twos, &fours, &eights);
    const V b = g + 1 < q->groups ? add16(base, q->at + 16 * (g + 1), &ones, &twos, &fours,
                                          &eights)
                                  : zero;
    V carry, carry2;
    CSA(carry, p16, p16, a, b);  // then ripple the carry up (C <= 128: nothing past p128)
    carry2 = AND(p32, carry), p32 = XOR(p32, carry);
    carry = AND(p64, carry2), p64 = XOR(p64, carry2);
    p128 = OR(p128, carry);
  }
  // C(set) doubled (planes shifted up one) and C(all), both to 11 planes.
  const V count[8] = {ones, twos, fours, eights, p16, p32, p64, p128};
  V all[11], twice[11];
  for (int k = 0; k < 11; k++) {
    all[k] = k < 9 ? LOAD(base + (COUNT_PLANES + k) * WORD_BYTES) : zero;
    twice[k] = k >= 1 && k <= 8 ? count[k - 1] : zero;
  }
  // h - n1 = A - B: (C(all), 2C) for a 1-bit set, (2C, C(all)) for a 0-bit set; A + ~B + 1.
  const V *a = q->ones ? all : twice, *b = q->ones ? twice : all;
  V carry = ones_word;
  for (int k = 0; k < 11; k++) {
    const V not_b = XOR(b[k], ones_word), u = XOR(a[k], not_b);
    d[k] = XOR(u, carry);
    carry = OR(AND(a[k], not_b), AND(u, carry));
  }
  d[10] = XOR(d[10], ones_word);  // two's complement -> offset by 1024
  // d < limit - n1 + 1024, compared from the top plane down
  const int bound = limit - q->n1 + 1024;
  V below = zero, equal = ones_word;
  for (int k = 10; k >= 0; k--) {
    if ((bound >> k) & 1) {
      below = OR(below, ANDNOT(d[k], equal));
      equal = AND(equal, d[k]);
    } else {
      equal = ANDNOT(d[k], equal);
    }
  }
  return below;
}

// Offers the faces of blocks from, from + step, ... (< to) to each query's candidates.
static void scan_blocks(const uint8_t *blocks, int64_t from, int64_t to, int64_t step,
                        int64_t n, const int64_t *labels, const sign_query *queries, int nq,
                        candidates *best, int32_t *limit) {
  const int lines = (WORDS + nq - 1) / nq;  // of the next block, fetched while a query runs
  for (int64_t b = from; b < to; b += step)
    for (int half = 0; half < HALVES; half++) {
      const char *base = (const char *)(blocks + b * WORDS * WORD_BYTES) + half * sizeof(V);
      const char *next = (const char *)(blocks + (b + step < to ? b + step : b) * WORDS *
                                        WORD_BYTES);
      const int64_t face0 = b * FACES + half * (FACES / HALVES);
      for (int q = 0; q < nq; q++) {
        // why: the words a query reads jump by its set, which the CPU's prefetchers miss
        for (int line = q * lines; half == 0 && line < (q + 1) * lines && line < WORDS; line++)
          _mm_prefetch(next + line * WORD_BYTES, _MM_HINT_T0);
        V d[11];
        const V below = distances(base, queries + q, limit[q], d);
        if (__builtin_expect(NONE(below), 1)) continue;
        uint64_t mask[LANES], plane[11][LANES];
        STORE(mask, below);
        for (int k = 0; k < 11; k++) STORE(plane[k], d[k]);
        for (int w = 0; w < LANES; w++)
          for (; mask[w]; mask[w] &= mask[w] - 1) {
            const int j = w * 64 + __builtin_ctzll(mask[w]);
            const int64_t face = face0 + j;
            const int h = bits_at(plane, 11, j) - 1024 + queries[q].n1;
            // the limit may have fallen since this register's mask was made
            if (face < n && labels[face] >= 0 && h < limit[q])
              limit[q] = candidates_take(best + q, limit[q], face, h);
          }
      }
    }
}

// Each of `nq` queries' best `keep` live faces (label >= 0) per thread, fewest bits unlike its
// own first: out_score/out_row are nq x (threads * keep), score -h, unsorted; row -1 (score
// NO_SCORE) where fewer were seen. `blocks` must be 64-byte aligned.
//
// A thread's limit ends near the keep-th smallest distance of its faces, but starting from
// none it is taken past ~keep * ln(faces / keep) times. So a first pass over every
// SEED_EVERY-th block keeps 3 * keep / SEED_EVERY faces a query, and the scan starts from the
// limit that leaves: a quantile ~3x the final one, above it but for a chance of ~1e-6 (and
// then a query gets fewer candidates, the nearest ones still).
#define SEED_EVERY 32
void SIGN_SEARCH(const uint8_t *blocks, int64_t n, const int64_t *labels,
                 const sign_query *queries, int nq, int keep, int threads, int32_t *out_score,
                 int64_t *out_row) {
  const int64_t nblocks = (n + FACES - 1) / FACES;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    candidates *best = malloc(sizeof(candidates) * nq);
    int32_t *limit = malloc(sizeof(int32_t) * nq);  // apart from `best`: read every block
    for (int q = 0; q < nq; q++) limit[q] = LIMIT_TOP;
    const int64_t first = nblocks * t / nt, last = nblocks * (t + 1) / nt;
    const int seed_keep = 3 * keep / SEED_EVERY > 8 ? 3 * keep / SEED_EVERY : 8;
    if ((last - first) / SEED_EVERY >= 4 * seed_keep / FACES + 4) {  // enough to seed from
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
