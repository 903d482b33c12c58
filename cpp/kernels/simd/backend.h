// Which vector backend an ISA build of the kernels compiles: the one place that reads the
// compiler's ISA macros.  Each backend header (f32-<isa>.h) defines the same vocabulary (see
// simd.h) and its ISA's register blocking (struct Tiles); the kernel sources are written once
// against them.  Without a backend (the baseline builds) only the portable kernels exist.
#pragma once

#if defined(__AVX512F__)
#define CPPCONV_SIMD_HEADER "kernels/simd/f32-avx512.h"
#define CPPCONV_VEC_BYTES 64
#define CPPCONV_SIMD_REGISTER "+v"  // (inline-assembly constraint of a vector register)
// Masks are bit masks, one bit a lane, of 16 lanes (the flat 3x3 depthwise kernel builds them
// by bits).
#define CPPCONV_SIMD_LANE_BIT_MASKS 1
// vload_bf16 / vstore_bf16 (bfloat16 bits widened to, and rounded from, float32 vectors; the
// rounding needs AVX512-BF16 at run time).
#define CPPCONV_SIMD_BF16 1
#elif defined(__AVX2__)
#define CPPCONV_SIMD_HEADER "kernels/simd/f32-avx2.h"
#define CPPCONV_VEC_BYTES 32
#define CPPCONV_SIMD_REGISTER "+v"
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__GNUC__)
// (GCC's and clang's NEON types have lane-wise operators, which the kernels use; MSVC's do not.)
#define CPPCONV_SIMD_HEADER "kernels/simd/f32-neon.h"
#define CPPCONV_VEC_BYTES 16
#define CPPCONV_SIMD_REGISTER "+w"
#elif defined(__AVX__)
#define CPPCONV_VEC_BYTES 32
#else
#define CPPCONV_VEC_BYTES 16
#endif

// Whether this build has the SIMD kernels (direct, depthwise, Winograd, SIMD pooling and the
// transposed convolution's transposes).
#if !defined(CPPCONV_SIMD_LANE_BIT_MASKS)
#define CPPCONV_SIMD_LANE_BIT_MASKS 0
#endif
#if !defined(CPPCONV_SIMD_BF16)
#define CPPCONV_SIMD_BF16 0
#endif
#if defined(CPPCONV_SIMD_HEADER)
#define CPPCONV_SIMD 1
#else
#define CPPCONV_SIMD 0
#endif
