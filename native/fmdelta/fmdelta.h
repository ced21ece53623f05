// FM-Delta chunk coder: lossless coding of a fine-tuned float tensor chunk against its base.
//
// Per element the base and fine-tuned bits go through FM-Delta's order-preserving map (sign set -> invert all
// bits, else set the sign bit), their difference d is split into a token (sign, floor(log2|d|), the NB bits after
// the leading one) and raw low bits. Tokens are coded with a static per-chunk model conditioned on the base value's
// exponent (adjacent exponents merged by a cost rule) by a 4-way interleaved 32-bit rANS coder; raw bits are packed
// separately. Mantissa low bits that are zero in base and fine-tune alike are shifted out first.
//
// Every function is thread-safe, allocates with new/std::vector only, never throws across the C++ boundary and
// never reads or writes outside the buffers it is given (the decoder validates every count against the buffer end).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fmd {

enum Status : int {
    FMD_OK = 0,
    FMD_ERR_CORRUPT = 1,   // payload inconsistent with itself or with the expected dtype/element count
    FMD_ERR_ARG = 2,       // bad argument (unknown dtype, ...)
    FMD_ERR_NOMEM = 3,     // allocation failed
};

// Float dtype codes (shared with the Cython face).
enum Dtype : int { F16 = 0, BF16 = 1, F32 = 2, F64 = 3, F8_E4M3 = 4, F8_E5M2 = 5, N_DTYPES = 6 };

// Returns the element size in bytes of a dtype code, or 0 if unknown.
int dtype_size(int dtype);

// Encodes n elements of `ft` against `base` (both little-endian, n * dtype_size(dtype) bytes) into a payload.
// use_context: condition on the base exponent; allow_shift: shift out common zero mantissa bits. base == nullptr
// selects the no-base fields mode (the exponent coded with the previous element's as context, the sign and top 7
// mantissa bits with the element's exponent as context, the rest raw; every float dtype). The payload lives in
// a buffer of the calling thread: *payload and *length stay valid until that thread calls encode_chunk or
// decode_chunk again (a fresh buffer per chunk would cost a page fault per 4 KB).
int encode_chunk(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, bool use_context,
                 bool allow_shift, const uint8_t** payload, size_t* length) noexcept;

// Decodes `payload` (len bytes) into `out` (n elements) using `base` (n elements; nullptr for no-base payloads --
// fields mode, or the older exponent mode --, which are rejected when a base is given and vice versa).
int decode_chunk(const uint8_t* payload, size_t len, const uint8_t* base, size_t n, int dtype,
                 uint8_t* out) noexcept;

// Which build of the core runs on this CPU: "x86-64-v3" or "baseline".
const char* isa_name() noexcept;

// Reads the shift (zero mantissa bits removed) from a payload header; -1 if the header is unreadable.
int payload_shift(const uint8_t* payload, size_t len) noexcept;

// Reference FM-Delta statistics: histogram of the original symbols (2*bits+1 entries written to hist, which must
// hold 129) and the total number of raw bits, over n elements, no context, no shift.
int reference_stats(const uint8_t* ft, const uint8_t* base, size_t n, int dtype, uint64_t* hist,
                    uint64_t* raw_bits) noexcept;

}  // namespace fmd
