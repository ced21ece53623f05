// FM-Delta chunk coder; see fmdelta.h for the scheme. The hot templates live in fmdelta_core.inc.
//
// Payload layout (all integers little-endian, "v" = LEB128 varint):
//   u8 magic 0xFD, u8 version 1, u8 mode (0 = against a base, 1 = no base: symbol = exponent field, raw = sign
//   and mantissa (read only), 2 = no base, fields: see below), u8 dtype, u8 shift, u8 NB (next bits folded into
//   the token; in mode 2 the mantissa bits K coded beside the sign), u8 scale bits (12)
//   v  n (element count)
//   mode 2 only: for F64, v lo (the first exponent of the 254-wide window); then two models as below (stream A: rows = the
//   previous element's exponent symbol, symbols = exponent symbols; stream B: rows = the element's exponent symbol,
//   symbols = sign << K | top K mantissa bits) and, when mantissa bits remain below those K, two more (stream C:
//   rows = the exponent symbol, symbols = the next min(8, rest) bits; stream D: rows = stream C's symbol, symbols =
//   the next min(8, rest - 8) bits); one rANS section holding the streams interleaved element by element (A0 B0 A1
//   B1 ..., or A0 B0 C0 D0 A1 ...), and the raw section (per element: an escaped F64 exponent, then the mantissa
//   bits below those coded)
//   v  nctx (1..255), then nctx-1 varints: gaps between the first exponents of consecutive contexts
//   per context: v used-symbol count, then per used symbol: v gap to the previous symbol, v (frequency - 1);
//                frequencies sum to 1 << scale
//   v  rANS byte count, then 4 u32 final encoder states followed by u16 renormalisation words
//   v  raw byte count, then the raw bits (LSB first)
// and nothing after. The decoder rejects any other byte count, table, or final state.
#include "fmdelta.h"
#include "isa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

// Tensors, words and raw bits are little-endian and are read and written with plain loads and stores.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the FM-Delta coder needs a little-endian host");

namespace fmd {
namespace {

constexpr uint8_t kMagic = 0xFD;
constexpr uint8_t kVersion = 1;
constexpr uint8_t kModeDelta = 0;     // against a base
constexpr uint8_t kModeExponent = 1;  // no base: exponent coded, sign and mantissa raw (decoded, no longer written)
constexpr uint8_t kModeFields = 2;    // no base: exponent | previous exponent, sign and top mantissa | exponent
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

// Normalises counts to frequencies summing to kScaleTotal, each used symbol getting at least 1: proportional
// rounding, then the remaining difference is settled one unit at a time where it costs the fewest bits.
void normalise(const uint32_t* c, int alpha, uint32_t* f) {
    uint64_t total = 0;
    for (int i = 0; i < alpha; i++) total += c[i];
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
    if (sum == static_cast<int64_t>(kScaleTotal)) return;
    const bool up = sum < static_cast<int64_t>(kScaleTotal);
    // bits added by moving f[i] one unit in the needed direction (negative when raising it); only the moved
    // symbol's cost changes, so each step is one scan for the minimum and one log2
    double cost[256];
    auto cost_of = [&](int i) {
        if (!c[i] || (!up && f[i] <= 1)) return 1e300;
        return up ? -static_cast<double>(c[i]) * std::log2((f[i] + 1.0) / f[i])
                  : static_cast<double>(c[i]) * std::log2(f[i] / (f[i] - 1.0));
    };
    for (int i = 0; i < alpha; i++) cost[i] = cost_of(i);
    while (sum != static_cast<int64_t>(kScaleTotal)) {
        int best = 0;
        for (int i = 1; i < alpha; i++)
            if (cost[i] < cost[best]) best = i;
        if (cost[best] >= 1e300) break;  // cannot happen: at most 255 symbols share 4096 slots
        f[best] += up ? 1 : -1;
        sum += up ? 1 : -1;
        cost[best] = cost_of(best);
    }
}

// One symbol of the encoder's model. x / freq == high 64 bits of x * rcp for x < 2^32 (rcp = ceil(2^64 / freq));
// freq 1 has no such rcp, so it uses 2^64 - 1 (quotient x - 1) and a bias raised by (1 << scale) - 1 to make up.
struct EncSym {       // 16 bytes
    uint64_t rcp;
    uint32_t xmax;    // (freq << 20) - 1: renormalise when x > xmax
    uint16_t bias;    // start of the symbol's slot range (+ (1 << scale) - 1 when freq is 1)
    uint16_t cmpl;    // (1 << scale) - freq
};
inline EncSym enc_sym(uint32_t freq, uint32_t cum, uint32_t total) {
    if (freq == 1)
        return {~0ull, (1u << 20) - 1, static_cast<uint16_t>(cum + total - 1), static_cast<uint16_t>(total - 1)};
    return {(~0ull / freq) + 1, (freq << 20) - 1, static_cast<uint16_t>(cum), static_cast<uint16_t>(total - freq)};
}

// ---------------------------------------------------------------------------------------------------------------
// decoding

// What a decoded symbol means: `nraw` raw bits follow, and the signed difference is add + (bits ^ flip) (flip = ~0
// below the centre: that is -((lead << nraw) | bits) in two's complement, with add = 1 - lead << nraw).
struct DecSym {  // 16 bytes
    uint64_t add;
    uint32_t nraw;
    uint32_t flip;  // 0 or ~0, sign-extended for 64-bit values
    inline uint64_t diff(uint64_t bits) const {
        return add + (bits ^ static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(flip))));
    }
};

// Per-thread scratch buffers reused across chunks (no zero fill, no page faults per chunk); released at the start
// of a call when the last one left them large.
struct Scratch {
    std::vector<uint8_t> payload;  // the last encoded payload (encode_chunk hands it out)
    std::vector<uint16_t> keys;    // per element: model row (base exponent) << 8 | symbol
    std::vector<uint8_t> raw;
    std::vector<uint16_t> words;
    std::vector<uint32_t> hist, freq, ffreq[3];  // decoder tables (see Layout); ffreq, fsym: streams B, C, D of mode 2
    std::vector<uint8_t> symbol, fsym[3];
    std::vector<EncSym> etab;    // by key, filled for the rows in use
    void trim() {
        constexpr size_t kKeep = static_cast<size_t>(96) << 20;
        size_t held = payload.capacity() + 2 * keys.capacity() + raw.capacity() + 2 * words.capacity() +
                      4 * (freq.capacity() + ffreq[0].capacity() + ffreq[1].capacity() + ffreq[2].capacity()) +
                      symbol.capacity() + fsym[0].capacity() + fsym[1].capacity() + fsym[2].capacity();
        if (held > kKeep) *this = Scratch();
    }
};
inline Scratch& scratch() {
    thread_local Scratch s;
    return s;
}
template <class V>
inline void ensure(V& v, size_t n) {
    if (v.size() < n) v.resize(n);
}

struct Header {
    int mode, dtype, shift, nb, scale;
    uint64_t n;
};

bool read_header(Reader& rd, Header& h) {
    if (rd.byte() != kMagic || rd.byte() != kVersion) return false;
    h.mode = rd.byte();
    h.dtype = rd.byte();
    h.shift = rd.byte();
    h.nb = rd.byte();
    h.scale = rd.byte();
    h.n = rd.varint();
    return rd.ok;
}

namespace generic {
#include "fmdelta_core.inc"
}  // namespace generic

#ifdef DV_HAVE_V3
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,lzcnt,popcnt")
namespace v3 {
#include "fmdelta_core.inc"
}  // namespace v3
#pragma GCC pop_options
#endif

// The x86-64-v3 clone is used when the CPU has it, unless FMDELTA_GENERIC=1.
bool use_v3() {
    static const bool ok = isa_v3_usable("FMDELTA_GENERIC");
    return ok;
}
}  // namespace

const char* isa_name() noexcept { return use_v3() ? "x86-64-v3" : "baseline"; }

int dtype_size(int dtype) { return dtype >= 0 && dtype < N_DTYPES ? kInfo[dtype].bytes : 0; }

int encode_chunk(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, bool use_context, bool allow_shift,
                 const uint8_t** payload, size_t* length) noexcept {
    if (dtype < 0 || dtype >= N_DTYPES) return FMD_ERR_ARG;
    try {
        scratch().trim();
        std::vector<uint8_t>& out = scratch().payload;
        int rc;
#ifdef DV_HAVE_V3
        if (use_v3())
            rc = v3::encode_any(ft, base, n, dtype, use_context, allow_shift, out);
        else
#endif
            rc = generic::encode_any(ft, base, n, dtype, use_context, allow_shift, out);
        *payload = out.data();
        *length = out.size();
        return rc;
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
        scratch().trim();
#ifdef DV_HAVE_V3
        if (use_v3()) return v3::decode_any(rd, h, base, out);
#endif
        return generic::decode_any(rd, h, base, out);
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
    std::memset(hist, 0, sizeof(uint64_t) * (2 * kInfo[dtype].bits + 1));
#ifdef DV_HAVE_V3
    if (use_v3()) {
        v3::ref_stats_any(ft, base, n, dtype, hist, raw_bits);
        return FMD_OK;
    }
#endif
    generic::ref_stats_any(ft, base, n, dtype, hist, raw_bits);
    return FMD_OK;
}

}  // namespace fmd
