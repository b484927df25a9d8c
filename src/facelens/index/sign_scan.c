// Exhaustive scan of the sign codes of SignScanIndex (sign.py), compiled twice: for AVX2
// into scan_avx2.so (fl_sign_search_avx2) and for AVX-512 into scan_avx512.so
// (fl_sign_search_avx512). Layout and queries: sign_scan.h.
//
// Each face is 256 bits, the signs of its centred vector on 256 directions (the principal
// axes). A query's candidates are the faces with the fewest bits unlike its own, weighted as
// below (h), re-ranked exactly on float16 afterwards. Two steps:
// - a filter counts, for a register's width of faces at once, on how many of the query's 64
//   strongest directions each face is unlike it, with bitwise adders across registers
//   (Harley-Seal; with AVX-512 a carry-save adder is two VPTERNLOGs on 512 faces instead of
//   five operations on 256). A direction where the query's projection is large is one where
//   a second photo of the same face rarely differs, so few strangers pass (~0.5%) and nearly
//   every mate does (docs/decisions.md);
// - the faces that pass get their full count from their 32-byte codes (VPOPCNTQ on AVX-512,
//   POPCNT on AVX2), a bit unlike the query's counting STRONG_WEIGHT on its strongest
//   directions and 1 elsewhere: a ranking closer to the float one than plain Hamming, so that
//   fewer candidates keep the nearest (docs/decisions.md).
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
#define XOR _mm512_xor_si512
#define AND _mm512_and_si512
#define OR _mm512_or_si512
#define ANDNOT _mm512_andnot_si512  // ~a & b
// Carry-save adder: (high, low) = a + b + c, bitwise: parity, then the majority from b, c
// and the parity (0xD4: b & c | (b ^ c) & ~parity), so that neither VPTERNLOG needs a copy
// of a register it overwrites (the copies cost as much as the adders).
#define CSA(high, low, a, b, c)                                                  \
  {                                                                              \
    const V b_ = (b), c_ = (c);                                                  \
    low = _mm512_ternarylogic_epi64(a, b_, c_, 0x96);                            \
    high = _mm512_ternarylogic_epi64(b_, c_, low, 0xD4);                         \
  }
#pragma GCC target("avx512vpopcntdq")  // the full count (kernels.py checks the CPU has it)
// A query as the full count takes it: its bits twice, and which bits each half counts.
typedef struct {
  __m512i bits, counted;
} count_query;
static inline count_query count_query_of(const sign_query *q) {
  const __m256i bits = _mm256_loadu_si256((const __m256i *)q->bits);
  const __m256i strong = _mm256_loadu_si256((const __m256i *)q->strong);
  return (count_query){_mm512_broadcast_i64x4(bits),
                       _mm512_inserti64x4(_mm512_set1_epi64(-1), strong, 1)};
}
// Appends the nonzero 64-face words of `below` to held[listed..], their faces' first at
// first + 64 · word; returns the new count (up to 8 entries past it are written).
static inline int list_words(V below, int first, uint64_t *held, int32_t *start, int listed) {
  const __mmask8 nonzero = _mm512_test_epi64_mask(below, below);
  const __m256i at = _mm256_add_epi32(_mm256_set1_epi32(first),
                                      _mm256_setr_epi32(0, 64, 128, 192, 256, 320, 384, 448));
  _mm512_storeu_si512(held + listed, _mm512_maskz_compress_epi64(nonzero, below));
  _mm256_storeu_si256((__m256i *)(start + listed), _mm256_maskz_compress_epi32(nonzero, at));
  return listed + __builtin_popcount(nonzero);
}
// A face's bits unlike the query's, those on its strong directions counted STRONG_WEIGHT
// times: one VPOPCNTQ of [unlike, unlike on the strong directions], the second half doubled.
_Static_assert(STRONG_WEIGHT == 3, "the second half is added to itself once");
static inline int weighted_unlike(const uint64_t *code, const count_query *q) {
  const __m512i face = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)code));
  __m512i n = _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(face, q->bits, q->counted, 0x28));
  return (int)_mm512_reduce_add_epi64(_mm512_mask_add_epi64(n, 0xF0, n, n));
}
#else
typedef __m256i V;
#define SIGN_SEARCH fl_sign_search_avx2
#define ZERO() _mm256_setzero_si256()
#define ALL_ONES() _mm256_set1_epi8(-1)
#define LOAD(p) _mm256_load_si256((const V *)(p))
#define XOR _mm256_xor_si256
#define AND _mm256_and_si256
#define OR _mm256_or_si256
#define ANDNOT _mm256_andnot_si256  // ~a & b
#define CSA(high, low, a, b, c)                                                  \
  {                                                                              \
    const V a_ = (a), b_ = (b), c_ = (c), u_ = XOR(a_, b_);                      \
    high = OR(AND(a_, b_), AND(u_, c_));                                         \
    low = XOR(u_, c_);                                                           \
  }
// The same three on AVX2, in scalar code.
typedef struct {
  uint64_t bits[DIRECTIONS / 64], strong[DIRECTIONS / 64];
} count_query;
static inline count_query count_query_of(const sign_query *q) {
  count_query c;
  memcpy(c.bits, q->bits, sizeof c.bits), memcpy(c.strong, q->strong, sizeof c.strong);
  return c;
}
static inline int list_words(V below, int first, uint64_t *held, int32_t *start, int listed) {
  uint64_t word[4];
  _mm256_storeu_si256((V *)word, below);
  for (int w = 0; w < 4; w++) held[listed] = word[w], start[listed] = first + 64 * w,
                              listed += word[w] != 0;
  return listed;
}
// A face's bits unlike the query's, those on its strong directions counted STRONG_WEIGHT times.
static inline int weighted_unlike(const uint64_t *code, const count_query *q) {
  int all = 0, strong = 0;
  for (int k = 0; k < DIRECTIONS / 64; k++) {
    const uint64_t unlike = code[k] ^ q->bits[k];
    all += __builtin_popcountll(unlike);
    strong += __builtin_popcountll(unlike & q->strong[k]);
  }
  return all + (STRONG_WEIGHT - 1) * strong;
}
#endif

#define HALVES (WORD_BYTES / (int)sizeof(V))  // registers a word
#define LIMIT_TOP (FARTHEST + 1)  // above any count: "no floor yet"

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

// No face: a score below any -h, and negatable (sign.py ranks threads' finds by -score).
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

// The faces of a register's width (a block's words from `base`) unlike query q on at most
// q->pass of its STRONG strongest directions, as a mask.
static inline V passed(const char *base, const sign_query *q) {
  const V zero = ZERO(), ones_word = ALL_ONES();
  if (q->pass >= STRONG) return ones_word;
  V ones = zero, twos = zero, fours = zero, eights = zero, p16 = zero, p32 = zero, p64 = zero;
  for (int g = 0; g < STRONG / 16; g += 2) {
    const V a = add16(base, q->at + 16 * g, &ones, &twos, &fours, &eights);
    const V b = add16(base, q->at + 16 * (g + 1), &ones, &twos, &fours, &eights);
    V carry, carry2;
    CSA(carry, p16, p16, a, b);  // then ripple the carry up (count <= 64: nothing past p64)
    carry2 = AND(p32, carry), p32 = XOR(p32, carry);
    p64 = OR(p64, carry2);
  }
  // count < pass + 1, compared from the top plane down
  const V count[7] = {ones, twos, fours, eights, p16, p32, p64};
  const int bound = q->pass + 1;
  V below = zero, equal = ones_word;
  for (int k = 6; k >= 0; k--) {
    if ((bound >> k) & 1) {
      below = OR(below, ANDNOT(count[k], equal));
      equal = AND(equal, count[k]);
    } else {
      equal = ANDNOT(count[k], equal);
    }
  }
  return below;
}

// Offers the faces of blocks from .. to - 1 that pass each query's filter to its candidates.
// A block's filters run for all queries first and its full counts after, so that the counts
// find the block's codes in L1 (~10% faster than each query's count after its filter). The
// faces that pass are listed first, almost without branches, then counted in one loop: a
// loop per query or word ends in a branch the CPU cannot foresee, and those cost more than
// the counts.
static void scan_blocks(const uint8_t *blocks, int64_t from, int64_t to,
                        const sign_query *queries, int nq, candidates *best, int32_t *limit) {
  // the 64-face words holding any face that passed, with where their faces start (query *
  // FACES + face); then those faces, one int each (the same, plus the face's bit)
  const int words = FACES / 64 * nq;
  uint64_t *held = malloc(sizeof(uint64_t) * (words + 8));
  int32_t *start = malloc(sizeof(int32_t) * (words + 8));
  int32_t *face = malloc(sizeof(int32_t) * (FACES * nq + 1));
  count_query *counted = aligned_alloc(64, sizeof(count_query) * nq);
  for (int q = 0; q < nq; q++) counted[q] = count_query_of(queries + q);
  // the lines of the next block a query fetches while it runs on this one: in a batch a 1/nq
  // share of the whole block each (together, all of it); alone (lines > STRONG), its own words
  const int lines = (WORDS + nq - 1) / nq;
  for (int64_t b = from; b < to; b++) {
    const char *block = (const char *)(blocks + b * WORDS * WORD_BYTES);
    const char *next = b + 1 < to ? block + WORDS * WORD_BYTES : block;
    const char *codes = block + CODES * WORD_BYTES;
    int listed = 0, found = 0;
    for (int q = 0; q < nq; q++) {
      // why: the words a query reads jump by its directions, which the prefetchers miss
      if (lines > STRONG) {
        for (int k = 0; k < STRONG; k++) _mm_prefetch(next + queries[q].at[k], _MM_HINT_T0);
        _mm_prefetch(next + LIVE * WORD_BYTES, _MM_HINT_T0);
      } else {
        for (int line = q * lines; line < (q + 1) * lines && line < WORDS; line++)
          _mm_prefetch(next + line * WORD_BYTES, _MM_HINT_T0);
      }
      for (int half = 0; half < HALVES; half++) {
        const V below = AND(passed(block + half * sizeof(V), queries + q),
                            LOAD(block + LIVE * WORD_BYTES + half * sizeof(V)));
        listed = list_words(below, q * FACES + half * (int)sizeof(V) * 8, held, start, listed);
      }
    }
    for (int i = 0; i < listed; i++) {
      uint64_t m = held[i];
      // a word holds one or two faces but for ~1 in 20 at 1% passing (fewer at 0.5%); past
      // its last face an entry is written but not counted
      face[found++] = start[i] | __builtin_ctzll(m), m &= m - 1;
      face[found] = start[i] | __builtin_ctzll(m | 1ULL << 63), found += m != 0, m &= m - 1;
      for (; m; m &= m - 1) face[found++] = start[i] | __builtin_ctzll(m);
    }
    for (int f = 0; f < found; f++) {
      const int q = face[f] / FACES, j = face[f] % FACES;
      const int h = weighted_unlike((const uint64_t *)(codes + j * CODE_BYTES), counted + q);
      if (h < limit[q]) limit[q] = candidates_take(best + q, limit[q], b * FACES + j, h);
    }
  }
  free(held), free(start), free(face), free(counted);
}

// Each of `nq` queries' best `keep` faces (of those there, sign_scan.h) per thread among those
// its filter passes, lowest full count first: out_score/out_row are nq x (threads * keep),
// score -h, unsorted; row -1 (score NO_SCORE) where fewer were seen. `blocks` must be 64-byte
// aligned.
void SIGN_SEARCH(const uint8_t *blocks, int64_t n, const sign_query *queries, int nq, int keep,
                 int threads, int32_t *out_score, int64_t *out_row) {
  const int64_t nblocks = (n + FACES - 1) / FACES;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    candidates *best = malloc(sizeof(candidates) * nq);
    int32_t *limit = malloc(sizeof(int32_t) * nq);  // apart from `best`: read every block
    for (int q = 0; q < nq; q++) limit[q] = LIMIT_TOP, candidates_open(best + q, keep);
    scan_blocks(blocks, nblocks * t / nt, nblocks * (t + 1) / nt, queries, nq, best, limit);
    for (int q = 0; q < nq; q++)
      candidates_close(best + q, limit[q], out_score + ((int64_t)q * nt + t) * keep,
                       out_row + ((int64_t)q * nt + t) * keep);
    free(best), free(limit);
  }
}
