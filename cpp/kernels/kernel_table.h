// The per-ISA function table.  Each ISA build of cpp/kernels/*.cpp defines
// cppconv::<isa>::kernel_table(); cpp/dispatch.cpp picks one at start-up.
#pragma once
#include "conv_problem.h"
#include "conv_transpose_problem.h"
#include "pool_problem.h"
#include "qconv_problem.h"

namespace cppconv {

// CPU extensions beyond an ISA table's own that one algorithm needs (a bit mask): a kernel for
// one extension is one entry of its ISA's list, skipped where the CPU (or CPPCONV_MAX_ISA)
// lacks it, rather than a new ISA level with a whole table (cpp/dispatch.h).
enum CpuFeature : unsigned {
  kCpuAvx512Vnni = 1u << 0,  // vpdpbusd: u8 x s8 dot products of 4 into int32
  kCpuAvx512Bf16 = 1u << 1,  // vdpbf16ps: bf16 pairs into float32
  kCpuAmxInt8 = 1u << 2,     // AMX tiles, int8 (the OS granted the tile state)
  kCpuAmxBf16 = 1u << 3,     // AMX tiles, bf16
};

// Whether this build holds AMX kernels: x86-64 Linux, the one OS whose tile state dispatch.cpp
// asks for, with a compiler that knows the AMX intrinsics (GCC 11, clang 12).  (Elsewhere they
// could never run; and GCC's tile loads on 64-bit Windows pass the stride as a 32-bit long, which
// MinGW's assembler refuses.)
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define CPPCONV_AMX_COMPILES 1
#endif

// One convolution algorithm of one ISA, named <op>_<params>__<isa>_<tile> (XNNPACK style).
// The dispatcher tries a table's algorithms in order; the first whose accepts() is true runs
// (oneDNN style), and the portable reference in cpp/reference.cpp ends every list.
struct ConvAlgorithm {
  const char* name;
  DType dtype;
  bool (*accepts)(const ConvProblem& p);
  // Packed weights depend only on (K, C, kh, kw, groups, dtype): bytes needed, 0 for none.
  size_t (*packed_bytes)(const ConvProblem& p);
  void (*pack)(const ConvProblem& p, const void* weight, void* packed, int threads);
  // Scratch memory the algorithm allocates for one call with `threads` threads.
  size_t (*workspace_bytes)(const ConvProblem& p, int threads);
  void (*run)(const ConvCall& call);
  // The strictest precision mode whose error bound this algorithm meets for every input; it
  // runs only for calls that accept that mode (or a looser one).
  Precision accuracy = Precision::Highest;
  unsigned features = 0;  // CpuFeature bits it needs beyond the table's ISA
  // Whether run() takes ConvCall::residual (the driver adds it after the others' stores).
  bool adds_residual = false;
  // Whether run() takes problems with depth_taps, reading x through ConvCall::depth_src (the
  // driver copies the depth slices together for the others).
  bool reads_depth_taps = false;
  // Whether accepts() and run() take problems with a depth axis (has_depth), read through
  // ConvCall's depth strides; the others are given depth 1 only (the driver lowers the rest).
  bool takes_depth = false;
  // The weights back from what pack() wrote for p, bit for bit, or nullptr where the packed form
  // does not hold them as they are (transformed, rounded): a layer's plan then needs no copy of
  // its weights beside the packed ones (PlanWeights).
  void (*unpack)(const ConvProblem& p, const void* packed, void* weight) = nullptr;
};

// Whether p has a depth axis (depth, kernel depth, output depth or depth padding); a 2-D or
// 1-D problem has none.  (cpp/conv.cpp)
bool has_depth(const ConvProblem& p);

// One pooling algorithm (max and avg, regular and adaptive as its accepts() says).
struct PoolAlgorithm {
  const char* name;
  DType dtype;
  bool (*accepts)(const Pool2dProblem& p);
  void (*run)(const PoolCall& call);
  unsigned features = 0;  // as ConvAlgorithm's
};

// One transposed-convolution algorithm; packing as for ConvAlgorithm, with the weight in
// PyTorch's (C, K/groups, kd, kh, kw) order.
struct ConvTransposeAlgorithm {
  const char* name;
  DType dtype;
  bool (*accepts)(const ConvTransposeProblem& p);
  size_t (*packed_bytes)(const ConvTransposeProblem& p);
  void (*pack)(const ConvTransposeProblem& p, const void* weight, void* packed, int threads);
  size_t (*workspace_bytes)(const ConvTransposeProblem& p, int threads);
  void (*run)(const ConvTransposeCall& call);
  unsigned features = 0;  // as ConvAlgorithm's
};

// One quantized-convolution algorithm (cpp/qconv.cpp).  Packed weights are made from the
// centred int16 weights (QConvCall::weight) once per plan; the result is exact, so every
// algorithm gives the reference's bits.  pack() returns false where the algorithm cannot run
// these weights (int8 products need every centred weight within int8); the plan then never
// chooses it.
struct QConvAlgorithm {
  const char* name;
  bool (*accepts)(const ConvProblem& p);
  size_t (*packed_bytes)(const ConvProblem& p);
  bool (*pack)(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed);
  void (*run)(const QConvCall& call);
  unsigned features = 0;  // as ConvAlgorithm's
};

// One run of an 8-bit quantization pass (cpp/elementwise.cpp cuts the passes into runs and
// threads; kernels/quantize8.cpp computes them).  Parameters are one scale and zero point for
// the whole run, or one per value where `across` (the axis innermost).  rounding_held: the
// caller holds the rounding mode at nearest-even, so the kernels may round by adding and
// subtracting 1.5 * 2^mantissa bits; otherwise they round by floor.
enum class Int8Kind : int { U8 = 0, S8 = 1, S32 = 2 };
struct QuantizeRun {  // y = saturate(rne(x / scale) + zero) in [lo, hi], x float32 or float64
  const void* x;
  bool x_double;
  void* y;
  Int8Kind y_kind;  // U8 or S8
  int64_t n;
  const float* scale;
  const int32_t* zero;
  bool across;
  int32_t lo, hi;
  bool rounding_held;
};
struct DequantizeRun {  // y = float32(x - zero) * scale
  const void* x;
  Int8Kind x_kind;
  float* y;
  int64_t n;
  const float* scale;
  const int32_t* zero;
  bool across;
};
struct QuantizedAddRun {  // y = quantize(max(dequantize(a) + dequantize(b), floor))
  const void* a;
  const void* b;
  Int8Kind in_kind;  // of a and b: U8 or S8
  void* y;
  Int8Kind y_kind;
  int64_t n;
  float a_scale, b_scale, y_scale, floor;
  int32_t a_zero, b_zero, y_zero, lo, hi;
  bool rounding_held;
};

// Lists of pointers, not of copies: a copy of an algorithm defined in another source file is
// made by a static initializer, which runs when the module loads on every CPU, and the
// compiler vectorises it with this ISA's instructions (an AVX-512 copy of a 64-byte entry
// killed the import on an AVX2 machine).  Addresses are constants, set at link time.
struct KernelTable {
  const char* isa_name;
  const ConvAlgorithm* const* conv;  // in order of preference
  int conv_count;
  const PoolAlgorithm* const* pool;  // in order of preference; cpp/reference.cpp's ends the list
  int pool_count;
  const ConvTransposeAlgorithm* const* conv_transpose;  // likewise
  int conv_transpose_count;
  const QConvAlgorithm* const* qconv;  // likewise; cpp/qconv.cpp's reference ends the list
  int qconv_count;
  // The ISA's float32 multiply-add limit, measured (kernels/fma_peak.cpp).
  double (*fma_peak_gflops)(int threads, double seconds);
  // to[n][j][i] = from[n][i][j] for `batch` float32 matrices of rows x cols, in SIMD blocks
  // (kernels/transpose_f32.cpp); null where the ISA has no SIMD backend.
  void (*transpose_f32)(const float* from, int64_t batch, int64_t rows, int64_t cols, float* to, int threads);
  // One block of it with the rows' strides given, on the calling thread; null likewise.
  void (*transpose_f32_strided)(const float* from, int64_t rows, int64_t cols, int64_t from_stride, float* to,
                                int64_t to_stride);
  // Output pixels of the float32 ChannelVec block (simd/tiles.h), 0 without a SIMD backend: the
  // lowerings that depend on how many pixels' broadcasts one block reads ask it.
  int channelvec_pixels;
  // The 8-bit quantization passes' runs (kernels/quantize8.cpp), on the calling thread.
  void (*quantize)(const QuantizeRun& run);
  void (*dequantize)(const DequantizeRun& run);
  void (*quantized_add)(const QuantizedAddRun& run);
  // y[i] = table[x[i]] over n bytes (kernels/quantize8.cpp), on the calling thread.
  void (*lookup_bytes)(const uint8_t* x, const uint8_t* table, int64_t n, uint8_t* y);
};

#define CPPCONV_DECLARE_ISA_TABLE(ns) \
  namespace ns {                      \
  const KernelTable& kernel_table();  \
  }

#ifdef CPPCONV_HAVE_baseline
CPPCONV_DECLARE_ISA_TABLE(baseline)
#endif
#ifdef CPPCONV_HAVE_avx2
CPPCONV_DECLARE_ISA_TABLE(avx2)
#endif
#ifdef CPPCONV_HAVE_avx512
CPPCONV_DECLARE_ISA_TABLE(avx512)
#endif
#ifdef CPPCONV_HAVE_neon
CPPCONV_DECLARE_ISA_TABLE(neon)
#endif
#ifdef CPPCONV_ISA_NS
CPPCONV_DECLARE_ISA_TABLE(CPPCONV_ISA_NS)
#endif

}  // namespace cppconv
