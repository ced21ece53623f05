// Run-time choice between the baseline build of a core and its x86-64-v3 clone (compiled with
// `#pragma GCC target("avx2,bmi,bmi2,lzcnt,popcnt")`), shared by the native codecs.
#pragma once

#include <cstdlib>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DV_HAVE_V3 1
#endif

// True when the CPU runs x86-64-v3 code and the environment variable `generic_env` is not "1" (tests cover both
// builds that way). Callers cache the answer in a function-local static.
inline bool isa_v3_usable(const char* generic_env) {
#ifdef DV_HAVE_V3
    const char* generic = std::getenv(generic_env);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
           __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("lzcnt") && !(generic && generic[0] == '1');
#else
    (void)generic_env;
    return false;
#endif
}
