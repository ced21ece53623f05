// FM-Delta chunk coder; see fmdelta.h for the scheme and docs/codecs in the repository for the wire format.
//
// Payload layout (all integers little-endian, "v" = LEB128 varint):
//   u8 magic 0xFD, u8 version 1, u8 dtype, u8 shift, u8 NB (next bits folded into the token), u8 scale bits (12)
//   v  n (element count)
//   v  nctx (1..255), then nctx-1 varints: gaps between the first exponents of consecutive contexts
//   per context: v used-symbol count, then per used symbol: v gap to the previous symbol, v (frequency - 1);
//                frequencies sum to 1 << scale
//   v  rANS byte count, then 4 u32 final encoder states followed by u16 renormalisation words
//   v  raw byte count, then the raw bits (LSB first)
// and nothing after. The decoder rejects any other byte count, table, or final state.
#include "fmdelta.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

namespace fmd {
namespace {

constexpr uint8_t kMagic = 0xFD;
constexpr uint8_t kVersion = 1;
constexpr int kScale = 12;
constexpr uint32_t kScaleTotal = 1u << kScale;
constexpr uint32_t kRansL = 1u << 16;
constexpr int kMaxCtx = 255;
constexpr int kBlock = 64;  // decoder checks stream bounds once per block of elements

struct DtypeInfo {
    int bytes, bits, ebits, mbits;
};
constexpr DtypeInfo kInfo[N_DTYPES] = {
    {2, 16, 5, 10},  // F16
    {2, 16, 8, 7},   // BF16
    {4, 32, 8, 23},  // F32
    {8, 64, 11, 52}, // F64
    {1, 8, 4, 3},    // F8_E4M3
    {1, 8, 5, 2},    // F8_E5M2
};

inline int clz64(uint64_t v) { return __builtin_clzll(v); }

template <typename T>
inline uint64_t load(const uint8_t* p, size_t i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    return v;
}
template <typename T>
inline void store(uint8_t* p, size_t i, uint64_t v) {
    T t = static_cast<T>(v);
    std::memcpy(p + i * sizeof(T), &t, sizeof(T));
}
inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

// Token geometry for a value width w (bits after the shift).
struct Geometry {
    int w, nb;
    uint64_t mask, sign;
    int ntok;    // magnitude tokens
    int center;  // symbol of d == 0
    int alpha;   // alphabet size (2 * ntok - 1 <= 255)
    explicit Geometry(int w_, int nb_override = -1) : w(w_) {
        nb = nb_override >= 0 ? nb_override : (w > 32 ? 1 : 2);
        if (nb > w) nb = w;
        mask = w == 64 ? ~0ull : ((1ull << w) - 1);
        sign = 1ull << (w - 1);
        ntok = (w + 1 - nb) << nb;
        center = ntok - 1;
        alpha = 2 * ntok - 1;
    }
    // order-preserving map and its inverse (w-bit values)
    inline uint64_t map(uint64_t u) const { return u ^ (((0 - (u >> (w - 1))) & mask) | sign); }
    inline uint64_t unmap(uint64_t m) const { return m ^ (sign | (((m >> (w - 1)) - 1) & mask)); }
};

// ---------------------------------------------------------------------------------------------------------------
// byte output helpers
inline void put_varint(std::vector<uint8_t>& o, uint64_t v) {
    while (v >= 0x80) {
        o.push_back(static_cast<uint8_t>(v | 0x80));
        v >>= 7;
    }
    o.push_back(static_cast<uint8_t>(v));
}

struct Reader {
    const uint8_t* p;
    const uint8_t* end;
    bool ok = true;
    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p >= end) { ok = false; return 0; }
            uint8_t b = *p++;
            v |= static_cast<uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) {
                if (shift == 63 && (b & 0x7e)) { ok = false; return 0; }
                return v;
            }
        }
        ok = false;
        return 0;
    }
    uint8_t byte() {
        if (p >= end) { ok = false; return 0; }
        return *p++;
    }
    const uint8_t* take(uint64_t n) {
        if (static_cast<uint64_t>(end - p) < n) { ok = false; return nullptr; }
        const uint8_t* r = p;
        p += n;
        return r;
    }
};

// 64-bit little-endian bit writer; put() takes up to 56 bits, put_long() up to 64.
struct BitWriter {
    std::vector<uint8_t> buf;
    size_t pos = 0;  // bytes fully written
    uint64_t acc = 0;
    unsigned cnt = 0;
    explicit BitWriter(size_t cap_bytes) : buf(cap_bytes + 16) {}
    inline void put(uint64_t v, unsigned n) {
        acc |= v << cnt;
        cnt += n;
        std::memcpy(buf.data() + pos, &acc, 8);
        pos += cnt >> 3;
        acc >>= (cnt & ~7u);  // cnt <= 63 here
        cnt &= 7;
    }
    inline void put_long(uint64_t v, unsigned n) {
        if (n > 56) {
            put(v & 0xffffffffull, 32);
            put(v >> 32, n - 32);
        } else {
            put(v, n);
        }
    }
    size_t finish() {
        if (cnt) {
            buf[pos] = static_cast<uint8_t>(acc);
            pos++;
        }
        cnt = 0;
        acc = 0;
        return pos;
    }
};

// ---------------------------------------------------------------------------------------------------------------
// model building

double bucket_cost(const uint32_t* h, int alpha) {
    // bits to code the bucket's symbols with its own order-0 model, plus an estimate of its table's size
    uint64_t total = 0;
    int used = 0;
    double s = 0;
    for (int i = 0; i < alpha; i++) {
        if (h[i]) {
            total += h[i];
            used++;
            s += h[i] * std::log2(static_cast<double>(h[i]));
        }
    }
    if (!total) return 0;
    double bits = total * std::log2(static_cast<double>(total)) - s;
    return bits + 8.0 * (1 + 2.6 * used);
}

// Normalises counts to frequencies summing to kScaleTotal, each used symbol getting at least 1.
void normalise(const uint32_t* c, int alpha, uint32_t* f) {
    uint64_t total = 0;
    int best = -1;
    for (int i = 0; i < alpha; i++) {
        total += c[i];
        if (c[i] && (best < 0 || c[i] > c[best])) best = i;
    }
    int64_t sum = 0;
    for (int i = 0; i < alpha; i++) {
        if (!c[i]) {
            f[i] = 0;
            continue;
        }
        uint64_t v = (static_cast<uint64_t>(c[i]) * kScaleTotal + total / 2) / total;
        f[i] = v ? static_cast<uint32_t>(v) : 1;
        sum += f[i];
    }
    int64_t diff = static_cast<int64_t>(kScaleTotal) - sum;
    if (static_cast<int64_t>(f[best]) + diff >= 1) {
        f[best] = static_cast<uint32_t>(f[best] + diff);
        return;
    }
    // rare: many tiny symbols; take one unit at a time from the largest frequencies
    while (sum > static_cast<int64_t>(kScaleTotal)) {
        int m = -1;
        for (int i = 0; i < alpha; i++)
            if (f[i] > 1 && (m < 0 || f[i] > f[m])) m = i;
        f[m]--;
        sum--;
    }
    while (sum < static_cast<int64_t>(kScaleTotal)) {
        f[best]++;
        sum++;
    }
}

struct EncSym {
    uint32_t freq, cum;
};

template <typename T>
int encode_impl(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, bool use_context, bool allow_shift,
                std::vector<uint8_t>& out) {
    const DtypeInfo& di = kInfo[dtype];
    const int nexp = 1 << di.ebits;
    const uint64_t emask = static_cast<uint64_t>(nexp - 1);

    // 1. shift: low mantissa bits zero in every base and fine-tuned value
    int shift = 0;
    if (allow_shift && n) {
        uint64_t acc = 0;
        for (size_t i = 0; i < n; i++) acc |= load<T>(ft, i) | load<T>(base, i);
        uint64_t m = acc & ((1ull << di.mbits) - 1);
        shift = m ? __builtin_ctzll(m) : di.mbits;
    }
    const Geometry g(di.bits - shift);

    // 2. exponent histogram -> initial contexts (each with at least minc elements, at most kMaxCtx)
    std::vector<uint32_t> ecount(nexp, 0);
    std::vector<uint8_t> emap(nexp, 0);
    std::vector<int> starts;  // first exponent of each context
    starts.push_back(0);
    if (use_context) {
        for (size_t i = 0; i < n; i++) ecount[(load<T>(base, i) >> di.mbits) & emask]++;
        uint64_t minc = std::max<uint64_t>(32, (n + 199) / 200);
        uint64_t cur = 0;
        for (int e = 0; e < nexp; e++) {
            if (cur >= minc && ecount[e]) {
                starts.push_back(e);
                cur = 0;
            }
            cur += ecount[e];
        }
        if (cur < minc && starts.size() > 1) starts.pop_back();
    }
    int nctx = static_cast<int>(starts.size());
    for (int c = 0; c < nctx; c++) {
        int end = c + 1 < nctx ? starts[c + 1] : nexp;
        for (int e = starts[c]; e < end; e++) emap[e] = static_cast<uint8_t>(c);
    }

    // 3. symbols, contexts, raw bits, histograms
    std::vector<uint8_t> sym(n), ctx(n);
    std::vector<uint32_t> hist(static_cast<size_t>(nctx) * 256, 0);
    size_t raw_cap = (n * static_cast<size_t>(g.w) + 7) / 8;
    BitWriter bw(raw_cap);
    const int nb = g.nb;
    const uint64_t nbit = 1ull << nb;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = load<T>(base, i);
        uint64_t f = load<T>(ft, i);
        uint8_t c = emap[(b >> di.mbits) & emask];
        uint64_t p = g.map(b >> shift), r = g.map(f >> shift);
        uint64_t neg = r < p;
        uint64_t ad = neg ? p - r : r - p;
        unsigned nraw = static_cast<unsigned>(63 - clz64(ad | nbit) - nb);
        uint64_t tok = (static_cast<uint64_t>(nraw) << nb) + (ad >> nraw);
        int s = g.center + static_cast<int>((tok ^ (0 - neg)) + neg);
        sym[i] = static_cast<uint8_t>(s);
        ctx[i] = c;
        hist[static_cast<size_t>(c) * 256 + s]++;
        bw.put_long(ad & ((1ull << nraw) - 1), nraw);
    }
    size_t raw_len = bw.finish();

    // 4. merge adjacent contexts while that lowers the estimated cost
    std::vector<int> alive(nctx);
    for (int c = 0; c < nctx; c++) alive[c] = c;
    if (nctx > 1) {
        std::vector<double> cost(nctx);
        for (int c = 0; c < nctx; c++) cost[c] = bucket_cost(&hist[static_cast<size_t>(c) * 256], g.alpha);
        std::vector<uint32_t> tmp(256);
        auto merged_cost = [&](int a, int b) {
            for (int s = 0; s < g.alpha; s++) tmp[s] = hist[static_cast<size_t>(a) * 256 + s] + hist[static_cast<size_t>(b) * 256 + s];
            return bucket_cost(tmp.data(), g.alpha);
        };
        // gain[j] = saving of merging alive[j] and alive[j+1]
        std::vector<double> gain(nctx - 1);
        for (int j = 0; j + 1 < nctx; j++) gain[j] = cost[alive[j]] + cost[alive[j + 1]] - merged_cost(alive[j], alive[j + 1]);
        while (alive.size() > 1) {
            int bj = 0;
            for (int j = 1; j < static_cast<int>(gain.size()); j++)
                if (gain[j] > gain[bj]) bj = j;
            if (gain[bj] <= 0) break;
            int a = alive[bj], b = alive[bj + 1];
            for (int s = 0; s < g.alpha; s++) hist[static_cast<size_t>(a) * 256 + s] += hist[static_cast<size_t>(b) * 256 + s];
            cost[a] = bucket_cost(&hist[static_cast<size_t>(a) * 256], g.alpha);
            alive.erase(alive.begin() + bj + 1);
            gain.erase(gain.begin() + bj);
            if (bj > 0) gain[bj - 1] = cost[alive[bj - 1]] + cost[a] - merged_cost(alive[bj - 1], a);
            if (bj < static_cast<int>(gain.size())) gain[bj] = cost[a] + cost[alive[bj + 1]] - merged_cost(a, alive[bj + 1]);
        }
    }
    const int fctx = static_cast<int>(alive.size());
    std::vector<uint8_t> remap(nctx, 0);
    {
        int k = 0;
        for (int c = 0; c < nctx; c++) {
            if (k + 1 < fctx && alive[k + 1] == c) k++;
            remap[c] = static_cast<uint8_t>(k);
        }
    }

    // 5. header and tables
    out.clear();
    out.reserve(64 + raw_len + n / 2);
    out.push_back(kMagic);
    out.push_back(kVersion);
    out.push_back(static_cast<uint8_t>(dtype));
    out.push_back(static_cast<uint8_t>(shift));
    out.push_back(static_cast<uint8_t>(g.nb));
    out.push_back(static_cast<uint8_t>(kScale));
    put_varint(out, n);
    put_varint(out, static_cast<uint64_t>(fctx));
    for (int k = 1; k < fctx; k++) put_varint(out, static_cast<uint64_t>(starts[alive[k]] - starts[alive[k - 1]] - 1));
    std::vector<EncSym> etab(static_cast<size_t>(fctx) * 256);
    std::vector<uint32_t> freq(256);
    for (int k = 0; k < fctx; k++) {
        const uint32_t* h = &hist[static_cast<size_t>(alive[k]) * 256];
        int used = 0;
        for (int s = 0; s < g.alpha; s++) used += h[s] != 0;
        if (!used) {  // context without elements (only when n == 0): one dummy symbol
            put_varint(out, 1);
            put_varint(out, static_cast<uint64_t>(g.center));
            put_varint(out, kScaleTotal - 1);
            continue;
        }
        normalise(h, g.alpha, freq.data());
        put_varint(out, static_cast<uint64_t>(used));
        int prev = -1;
        uint32_t cum = 0;
        for (int s = 0; s < g.alpha; s++) {
            if (!freq[s]) continue;
            put_varint(out, static_cast<uint64_t>(s - prev - 1));
            put_varint(out, freq[s] - 1);
            etab[static_cast<size_t>(k) * 256 + s] = {freq[s], cum};
            cum += freq[s];
            prev = s;
        }
    }

    // 6. rANS, 4 interleaved states, coded backwards
    std::vector<uint16_t> words(n + 8);
    size_t wp = words.size();
    uint32_t x[4] = {kRansL, kRansL, kRansL, kRansL};
    for (size_t i = n; i-- > 0;) {
        const EncSym& e = etab[static_cast<size_t>(remap[ctx[i]]) * 256 + sym[i]];
        uint32_t& xs = x[i & 3];
        if (static_cast<uint64_t>(xs) >= (static_cast<uint64_t>(e.freq) << 20)) {
            words[--wp] = static_cast<uint16_t>(xs);
            xs >>= 16;
        }
        xs = ((xs / e.freq) << kScale) + (xs % e.freq) + e.cum;
    }
    size_t nwords = words.size() - wp;
    put_varint(out, 16 + 2 * nwords);
    for (int j = 0; j < 4; j++)
        for (int b = 0; b < 4; b++) out.push_back(static_cast<uint8_t>(x[j] >> (8 * b)));
    size_t at = out.size();
    out.resize(at + 2 * nwords);
    for (size_t k = 0; k < nwords; k++) {
        uint16_t v = words[wp + k];
        out[at + 2 * k] = static_cast<uint8_t>(v);
        out[at + 2 * k + 1] = static_cast<uint8_t>(v >> 8);
    }
    put_varint(out, raw_len);
    out.insert(out.end(), bw.buf.begin(), bw.buf.begin() + raw_len);
    return FMD_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// decoding

struct SymInfo {
    uint8_t nraw, neg;
    uint8_t lead;
};

struct Header {
    int dtype, shift, nb, scale;
    uint64_t n;
};

bool read_header(Reader& rd, Header& h) {
    if (rd.byte() != kMagic || rd.byte() != kVersion) return false;
    h.dtype = rd.byte();
    h.shift = rd.byte();
    h.nb = rd.byte();
    h.scale = rd.byte();
    h.n = rd.varint();
    return rd.ok;
}

template <typename T, bool Safe>
struct DecodeState {
    const uint8_t* wp;
    const uint8_t* wend;
    const uint8_t* raw;
    uint64_t raw_bits;  // bits available
    uint64_t rpos = 0;
    bool bad = false;

    inline uint32_t word() {
        if (Safe && wend - wp < 2) {
            bad = true;
            return 0;
        }
        uint32_t v = static_cast<uint32_t>(wp[0]) | (static_cast<uint32_t>(wp[1]) << 8);
        wp += 2;
        return v;
    }
    inline uint64_t bits(unsigned n) {
        if (Safe) {
            if (raw_bits - std::min(raw_bits, rpos) < n) {
                bad = true;
                rpos = raw_bits;
                return 0;
            }
            uint64_t v = 0;
            for (unsigned k = 0; k < n; k++, rpos++) v |= static_cast<uint64_t>((raw[rpos >> 3] >> (rpos & 7)) & 1) << k;
            return v;
        }
        if (n > 56) {
            uint64_t lo = (load64(raw + (rpos >> 3)) >> (rpos & 7)) & 0xffffffffull;
            rpos += 32;
            uint64_t hi = (load64(raw + (rpos >> 3)) >> (rpos & 7)) & ((1ull << (n - 32)) - 1);
            rpos += n - 32;
            return lo | (hi << 32);
        }
        uint64_t v = (load64(raw + (rpos >> 3)) >> (rpos & 7)) & ((1ull << n) - 1);
        rpos += n;
        return v;
    }
};

template <typename T, bool Safe>
inline void decode_run(DecodeState<T, Safe>& st, uint32_t* x, size_t i0, size_t i1, const uint8_t* base,
                       uint8_t* out, const Geometry& g, int shift, int mbits, uint64_t emask, const uint8_t* emap,
                       const uint32_t* dtab, const SymInfo* info) {
    for (size_t i = i0; i < i1; i++) {
        uint64_t b = load<T>(base, i);
        const uint32_t* tab = dtab + (static_cast<size_t>(emap[(b >> mbits) & emask]) << kScale);
        uint32_t& xs = x[i & 3];
        uint32_t e = tab[xs & (kScaleTotal - 1)];
        uint32_t s = e >> 24;
        xs = ((e & 0xfff) + 1) * (xs >> kScale) + ((e >> 12) & 0xfff);
        if (xs < kRansL) xs = (xs << 16) | st.word();
        const SymInfo si = info[s];
        uint64_t ad = (static_cast<uint64_t>(si.lead) << si.nraw) | st.bits(si.nraw);
        uint64_t neg = si.neg;
        uint64_t p = g.map(b >> shift);
        uint64_t r = (p + ((ad ^ (0 - neg)) + neg)) & g.mask;
        store<T>(out, i, g.unmap(r) << shift);
    }
}

template <typename T>
int decode_impl(Reader& rd, const Header& h, const uint8_t* base, uint8_t* out) {
    const DtypeInfo& di = kInfo[h.dtype];
    const size_t n = static_cast<size_t>(h.n);
    const int nexp = 1 << di.ebits;
    const uint64_t emask = static_cast<uint64_t>(nexp - 1);
    if (h.shift < 0 || h.shift > di.mbits || h.scale != kScale) return FMD_ERR_CORRUPT;
    const Geometry g(di.bits - h.shift);
    if (h.nb != g.nb) return FMD_ERR_CORRUPT;

    uint64_t nctx = rd.varint();
    if (!rd.ok || nctx < 1 || nctx > kMaxCtx || nctx > static_cast<uint64_t>(nexp)) return FMD_ERR_CORRUPT;
    std::vector<uint8_t> emap(nexp, 0);
    {
        std::vector<uint64_t> starts(nctx + 1, 0);
        for (uint64_t c = 1; c < nctx; c++) {
            uint64_t gap = rd.varint();
            if (!rd.ok || gap >= static_cast<uint64_t>(nexp)) return FMD_ERR_CORRUPT;
            starts[c] = starts[c - 1] + gap + 1;
            if (starts[c] >= static_cast<uint64_t>(nexp)) return FMD_ERR_CORRUPT;
        }
        starts[nctx] = static_cast<uint64_t>(nexp);
        for (uint64_t c = 0; c < nctx; c++)
            for (uint64_t e = starts[c]; e < starts[c + 1]; e++) emap[e] = static_cast<uint8_t>(c);
    }
    std::vector<uint32_t> dtab(static_cast<size_t>(nctx) << kScale);
    for (uint64_t c = 0; c < nctx; c++) {
        uint64_t used = rd.varint();
        if (!rd.ok || used < 1 || used > static_cast<uint64_t>(g.alpha)) return FMD_ERR_CORRUPT;
        int64_t prev = -1;
        uint32_t cum = 0;
        uint32_t* t = &dtab[static_cast<size_t>(c) << kScale];
        for (uint64_t k = 0; k < used; k++) {
            uint64_t gap = rd.varint();
            uint64_t fm1 = rd.varint();
            if (!rd.ok || gap >= static_cast<uint64_t>(g.alpha) || fm1 >= kScaleTotal) return FMD_ERR_CORRUPT;
            int64_t s = prev + 1 + static_cast<int64_t>(gap);
            uint32_t f = static_cast<uint32_t>(fm1) + 1;
            if (s >= g.alpha || cum + f > kScaleTotal) return FMD_ERR_CORRUPT;
            for (uint32_t j = 0; j < f; j++) t[cum + j] = (f - 1) | (j << 12) | (static_cast<uint32_t>(s) << 24);
            cum += f;
            prev = s;
        }
        if (cum != kScaleTotal) return FMD_ERR_CORRUPT;
    }
    SymInfo info[256];
    for (int s = 0; s < 256; s++) {
        int tok = s < g.center ? g.center - s : s - g.center;
        int nraw = (tok >> g.nb) - 1;
        if (nraw < 0) nraw = 0;
        info[s].neg = s < g.center;
        info[s].nraw = static_cast<uint8_t>(s < g.alpha ? nraw : 0);
        info[s].lead = static_cast<uint8_t>(s < g.alpha ? tok - (nraw << g.nb) : 0);
    }

    uint64_t rans_len = rd.varint();
    if (!rd.ok || rans_len < 16 || (rans_len & 1)) return FMD_ERR_CORRUPT;
    const uint8_t* rans = rd.take(rans_len);
    uint64_t raw_len = rd.ok ? rd.varint() : 0;
    const uint8_t* raw = rd.ok ? rd.take(raw_len) : nullptr;
    if (!rd.ok || rd.p != rd.end) return FMD_ERR_CORRUPT;
    // a raw section longer than the widest possible raw bits is corrupt (also bounds raw_len * 8)
    if (raw_len > (static_cast<uint64_t>(n) * 64 + 7) / 8) return FMD_ERR_CORRUPT;

    uint32_t x[4];
    for (int j = 0; j < 4; j++) {
        x[j] = static_cast<uint32_t>(rans[4 * j]) | (static_cast<uint32_t>(rans[4 * j + 1]) << 8) |
               (static_cast<uint32_t>(rans[4 * j + 2]) << 16) | (static_cast<uint32_t>(rans[4 * j + 3]) << 24);
    }
    DecodeState<T, false> fast{rans + 16, rans + rans_len, raw, raw_len * 8};
    DecodeState<T, true> safe{rans + 16, rans + rans_len, raw, raw_len * 8};
    const size_t max_raw_block = static_cast<size_t>(kBlock) * 64 / 8 + 8;
    size_t i = 0;
    while (i < n) {
        size_t i1 = std::min(n, i + kBlock);
        bool words_ok = static_cast<size_t>(fast.wend - fast.wp) >= 2 * kBlock;
        bool raw_ok = (fast.rpos >> 3) + max_raw_block <= raw_len;
        if (words_ok && raw_ok) {
            decode_run<T, false>(fast, x, i, i1, base, out, g, h.shift, di.mbits, emask, emap.data(), dtab.data(), info);
        } else {
            safe.wp = fast.wp;
            safe.rpos = fast.rpos;
            decode_run<T, true>(safe, x, i, i1, base, out, g, h.shift, di.mbits, emask, emap.data(), dtab.data(), info);
            if (safe.bad) return FMD_ERR_CORRUPT;
            fast.wp = safe.wp;
            fast.rpos = safe.rpos;
        }
        i = i1;
    }
    if (fast.wp != fast.wend) return FMD_ERR_CORRUPT;
    if ((fast.rpos + 7) / 8 != raw_len) return FMD_ERR_CORRUPT;
    for (int j = 0; j < 4; j++)
        if (x[j] != kRansL) return FMD_ERR_CORRUPT;
    return FMD_OK;
}

template <typename T>
void ref_stats_impl(const uint8_t* ft, const uint8_t* base, size_t n, int bits, uint64_t* hist, uint64_t* raw) {
    const Geometry g(bits, 0);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t p = g.map(load<T>(base, i)), r = g.map(load<T>(ft, i));
        uint64_t neg = r < p;
        uint64_t ad = neg ? p - r : r - p;
        unsigned nraw = static_cast<unsigned>(63 - clz64(ad | 1));
        uint64_t tok = ad ? nraw + 1 : 0;
        hist[g.center + static_cast<int64_t>((tok ^ (0 - neg)) + neg)]++;
        total += nraw;
    }
    *raw = total;
}

}  // namespace

int dtype_size(int dtype) { return dtype >= 0 && dtype < N_DTYPES ? kInfo[dtype].bytes : 0; }

int encode_chunk(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, bool use_context, bool allow_shift,
                 std::vector<uint8_t>& out) noexcept {
    if (dtype < 0 || dtype >= N_DTYPES) return FMD_ERR_ARG;
    try {
        switch (kInfo[dtype].bytes) {
            case 1: return encode_impl<uint8_t>(ft, base, n, dtype, use_context, allow_shift, out);
            case 2: return encode_impl<uint16_t>(ft, base, n, dtype, use_context, allow_shift, out);
            case 4: return encode_impl<uint32_t>(ft, base, n, dtype, use_context, allow_shift, out);
            default: return encode_impl<uint64_t>(ft, base, n, dtype, use_context, allow_shift, out);
        }
    } catch (const std::bad_alloc&) {
        return FMD_ERR_NOMEM;
    } catch (...) {
        return FMD_ERR_ARG;
    }
}

int decode_chunk(const uint8_t* payload, size_t len, const uint8_t* base, size_t n, int dtype,
                 uint8_t* out) noexcept {
    if (dtype < 0 || dtype >= N_DTYPES) return FMD_ERR_ARG;
    try {
        Reader rd{payload, payload + len};
        Header h;
        if (!read_header(rd, h) || h.dtype != dtype || h.n != n) return FMD_ERR_CORRUPT;
        switch (kInfo[dtype].bytes) {
            case 1: return decode_impl<uint8_t>(rd, h, base, out);
            case 2: return decode_impl<uint16_t>(rd, h, base, out);
            case 4: return decode_impl<uint32_t>(rd, h, base, out);
            default: return decode_impl<uint64_t>(rd, h, base, out);
        }
    } catch (const std::bad_alloc&) {
        return FMD_ERR_NOMEM;
    } catch (...) {
        return FMD_ERR_CORRUPT;
    }
}

int payload_shift(const uint8_t* payload, size_t len) noexcept {
    Reader rd{payload, payload + len};
    Header h;
    if (!read_header(rd, h)) return -1;
    return h.shift;
}

int reference_stats(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, uint64_t* hist,
                    uint64_t* raw_bits) noexcept {
    if (dtype < 0 || dtype >= N_DTYPES) return FMD_ERR_ARG;
    const DtypeInfo& di = kInfo[dtype];
    std::memset(hist, 0, sizeof(uint64_t) * (2 * di.bits + 1));
    switch (di.bytes) {
        case 1: ref_stats_impl<uint8_t>(ft, base, n, di.bits, hist, raw_bits); break;
        case 2: ref_stats_impl<uint16_t>(ft, base, n, di.bits, hist, raw_bits); break;
        case 4: ref_stats_impl<uint32_t>(ft, base, n, di.bits, hist, raw_bits); break;
        default: ref_stats_impl<uint64_t>(ft, base, n, di.bits, hist, raw_bits); break;
    }
    return FMD_OK;
}

}  // namespace fmd
