// Lossy codec kernels; see lossy.h. The kernels live in lossy_core.inc, compiled twice (baseline and x86-64-v3)
// and chosen once per process by what the CPU has, as the FM-Delta coder does.
#include "lossy.h"
#include "isa.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the lossy kernels need a little-endian host");

namespace lossy {
namespace {

namespace generic {
#include "lossy_core.inc"
}  // namespace generic

#ifdef DV_HAVE_V3
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,lzcnt,popcnt")
namespace v3 {
#include "lossy_core.inc"
}  // namespace v3
#pragma GCC pop_options
#endif

// The x86-64-v3 clone is used when the CPU has it, unless LOSSY_GENERIC=1.
bool use_v3() {
    static const bool ok = isa_v3_usable("LOSSY_GENERIC");
    return ok;
}

}  // namespace

#ifdef DV_HAVE_V3
#define DISPATCH(call) (use_v3() ? v3::call : generic::call)
#else
#define DISPATCH(call) (generic::call)
#endif

const char* isa_name() noexcept { return use_v3() ? "x86-64-v3" : "baseline"; }

size_t packed_size(size_t count, int width) noexcept { return (count * static_cast<size_t>(width) + 7) / 8; }

void pack_bits(const uint32_t* values, size_t count, int width, uint8_t* out) noexcept {
    DISPATCH(pack_bits(values, count, width, out));
}

void unpack_bits(const uint8_t* packed, size_t count, int width, uint32_t* out) noexcept {
    DISPATCH(unpack_bits(packed, count, width, out));
}

void rtn_encode(const float* x, size_t count, size_t unit, int bits, uint8_t* payload, float* restored) noexcept {
    DISPATCH(rtn_encode(x, count, unit, bits, payload, restored));
}

void rtn_decode(const uint8_t* payload, size_t count, size_t unit, int bits, float* out) noexcept {
    DISPATCH(rtn_decode(payload, count, unit, bits, out));
}

void hyper_encode(const float* x, size_t count, const HyperSide& side, uint8_t* packed, float* restored) noexcept {
    DISPATCH(hyper_encode(x, count, side, packed, restored));
}

int hyper_decode(const uint8_t* packed, size_t count, const HyperSide& side, float* out) noexcept {
    return DISPATCH(hyper_decode(packed, count, side, out));
}

void nearest_lattice(const double* ux, const double* uy, size_t count, double l, uint32_t n, int64_t* out) noexcept {
    DISPATCH(nearest_lattice(ux, uy, count, l, n, out));
}

int hyper_stats(const float* x, size_t count, double coverage, double* cx, double* cy, double* radius,
                double* quantile) noexcept {
    return DISPATCH(hyper_stats(x, count, coverage, cx, cy, radius, quantile));
}

void error_sums(const float* restored, const float* weights, size_t count, double* sq_error, double* abs_error,
                double* sq_weight) noexcept {
    DISPATCH(error_sums(restored, weights, count, sq_error, abs_error, sq_weight));
}

}  // namespace lossy
