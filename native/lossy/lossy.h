// Hot loops of the lossy weight codecs (codecs/rtn.py, codecs/hyper.py, codecs/_lossy.py) on contiguous float32
// blocks: quantise + bit-pack in one pass (also writing the values the decoder will produce, so the encoder
// measures its error without decoding), unpack + dequantise in one pass, and the per-tensor statistics.
//
// Index packing (the wire format of both codecs): for a width w = 8 B + r (1..32 bits), first B byte planes of
// `count` bytes each (low byte first), then the r high bits of every value as one LSB-first bit stream; in all
// exactly ceil(count * w / 8) bytes.
//
// The decoders reproduce the reference arithmetic of the format bit for bit (float64 for hyper, float32 for rtn,
// no fused multiply-add), so artifacts written by earlier versions decode to the same values. Every function is
// thread-safe, never throws and never reads or writes outside the buffers it is given (sizes are checked by the
// Cython face before the call).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lossy {

enum Status : int { LOSSY_OK = 0, LOSSY_ERR_CORRUPT = 1, LOSSY_ERR_NOMEM = 3 };

size_t packed_size(size_t count, int width) noexcept;
void pack_bits(const uint32_t* values, size_t count, int width, uint8_t* out) noexcept;
void unpack_bits(const uint8_t* packed, size_t count, int width, uint32_t* out) noexcept;

// rtn: per unit of `unit` consecutive values (the last may be shorter): lo = min, step = float((double(max) -
// lo) / (2^bits - 1)), q = clamp(rint((x - lo) / step)) (step 0 divides by 1), x' = lo + q * step.
// payload: units float32 steps, units float32 minimums, then the q's packed at `bits` (8 * units +
// packed_size(count, bits) bytes). restored: the count values x'.
void rtn_encode(const float* x, size_t count, size_t unit, int bits, uint8_t* payload, float* restored) noexcept;
void rtn_decode(const uint8_t* payload, size_t count, size_t unit, int bits, float* out) noexcept;

// hyper (U = 2): the codebook is `points` ((n + 1) x 2 float64, local coordinates in [0, l]^2) and `grow` the
// rings' factors r_j / (l / 2) (rings + 1 float64, grow[0] = 1). Pairs (x[2i], x[2i+1]) (an odd last value is
// paired with cy); index = theta + (n + 1) * ring, packed at `width` bits. lattice: theta is found in closed form
// (the sheared lattice of codecs/hyper.py), else by exhaustive search of `points` (first on ties).
struct HyperSide {
    double l, cx, cy, radius;
    uint32_t n;
    int rings;
    bool lattice;
    const double* points;
    const double* grow;
    int width;
};
void hyper_encode(const float* x, size_t count, const HyperSide& side, uint8_t* packed, float* restored) noexcept;
// LOSSY_ERR_CORRUPT when an index is >= (n + 1) * (rings + 1).
int hyper_decode(const uint8_t* packed, size_t count, const HyperSide& side, float* out) noexcept;
// Index of the nearest lattice codeword to each (ux[i], uy[i]) in [0, l]^2.
void nearest_lattice(const double* ux, const double* uy, size_t count, double l, uint32_t n, int64_t* out) noexcept;

// Per-tensor statistics of the pairs: centroid, largest distance from it, and (coverage > 0) the coverage-quantile
// of the pairs' infinity-norm distance from it (linear interpolation, as numpy.quantile).
int hyper_stats(const float* x, size_t count, double coverage, double* cx, double* cy, double* radius,
                double* quantile) noexcept;

// sum (r - w)^2, sum |r - w|, sum w^2 in float64.
void error_sums(const float* restored, const float* weights, size_t count, double* sq_error, double* abs_error,
                double* sq_weight) noexcept;

// Which build of the kernels runs on this CPU: "x86-64-v3" or "baseline" (LOSSY_GENERIC=1 forces the latter).
const char* isa_name() noexcept;

}  // namespace lossy
