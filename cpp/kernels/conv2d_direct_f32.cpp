// conv2d_direct_f32: the blocked direct convolution engine for float32 (AVX2 and AVX-512).
//
// Output-stationary register blocking: a microkernel holds MR output pixels of one output row
// times NR output channels (NV vectors) in registers, loops over kernel taps and input
// channels, broadcasting one input value per pixel against NV weight vectors, and stores each
// output once with bias and activation fused.
//
// Memory layout choices, and why:
//  - Weights are packed once per plan to [group][k block][tap][c][NR], so the microkernel reads
//    them as consecutive aligned vectors (zero-padded past the last output channel).
//  - The padded input rows that a block of output rows needs are copied into a tile laid out
//    [tile row][c][stride phase][q], where padded column x = q * stride_w + phase.  For one tap
//    and channel the MR pixels of a block then sit at consecutive addresses, so every broadcast
//    has a constant displacement, and the hot loop has no bounds checks (padding, whatever its
//    mode, was resolved while copying).  From NCHW this is a row copy; from NHWC a transpose.
//  - The tile of a row block is shared by the thread team (filled cooperatively, then
//    computed over output-channel blocks x output rows), so it is copied once, not per thread.
//  - NHWC output is stored straight from the registers; NCHW output goes through a per-thread
//    row buffer [ow][NR] that is transposed into the output rows.
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/conv2d_direct_f32.h"
#include "kernels/isa_common.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kVL = 16;  // floats per vector
constexpr int kNV = 2;   // vectors of output channels per block
constexpr int kMR = 12;  // output pixels per block: 24 accumulators of 32 registers
using Vec = __m512;
static inline Vec vzero() { return _mm512_setzero_ps(); }
static inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
static inline Vec vset1(float v) { return _mm512_set1_ps(v); }
static inline Vec vleaky(Vec v) {
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(0.01f));
}
static inline Vec vload_partial(const float* p, int n) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
}
static inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
static inline void vstore_partial(float* p, Vec v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
}
#else
constexpr int kVL = 8;
constexpr int kNV = 2;
constexpr int kMR = 6;  // 12 accumulators of 16 registers
using Vec = __m256;
static inline Vec vzero() { return _mm256_setzero_ps(); }
static inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
static inline Vec vset1(float v) { return _mm256_set1_ps(v); }
static inline Vec vleaky(Vec v) {
  const Vec neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(0.01f)), neg);
}
static inline __m256i partial_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline Vec vload_partial(const float* p, int n) { return _mm256_maskload_ps(p, partial_mask(n)); }
static inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
static inline void vstore_partial(float* p, Vec v, int n) { _mm256_maskstore_ps(p, partial_mask(n), v); }
#endif

constexpr int kNR = kVL * kNV;  // output channels per block

// max(v, 0) and min(max(v, 0), 6) with NaN kept: max_ps/min_ps return the second operand
// when either is NaN, so the vector under test goes second.
static inline Vec vrelu(Vec v) { return vmax(vzero(), v); }
static inline Vec vrelu6(Vec v) { return vmin(vset1(6.0f), vmax(vzero(), v)); }

static inline Vec apply_simple_activation(Vec v, Activation a) {
  switch (a) {
    case Activation::Relu: return vrelu(v);
    case Activation::Relu6: return vrelu6(v);
    case Activation::LeakyRelu: return vleaky(v);
    default: return v;  // None, and the transcendental ones applied after the store
  }
}

static inline bool is_simple(Activation a) {
  return a == Activation::None || a == Activation::Relu || a == Activation::Relu6 || a == Activation::LeakyRelu;
}

struct DirectPlan {
  int64_t group_in, group_out, k_blocks;
  int64_t taps;
  int64_t phase_w;     // q entries per stride phase
  int64_t chan_pitch;  // floats per (tile row, channel): stride_w * phase_w
  int64_t rows_per_block, row_blocks, tile_rows;
  int64_t tile_elems;
  int64_t ow_blocks;
};

DirectPlan make_plan(const Conv2dProblem& p) {
  DirectPlan d{};
  d.group_in = p.in_channels / p.groups;
  d.group_out = p.out_channels / p.groups;
  d.k_blocks = ceil_div(d.group_out, kNR);
  d.taps = p.kernel_h * p.kernel_w;
  const int64_t padded_w = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  d.phase_w = ceil_div(padded_w, p.stride_w);
  d.chan_pitch = p.stride_w * d.phase_w;
  auto tile_rows_for = [&](int64_t r) { return (r - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1; };
  // The tile should sit in L2 with room for the weights streaming past it.
  const int64_t budget = (384 << 10) / int64_t(sizeof(float));
  int64_t rows = p.out_h;
  while (rows > 1 && tile_rows_for(rows) * d.group_in * d.chan_pitch > budget) rows = (rows + 1) / 2;
  d.rows_per_block = rows;
  d.row_blocks = ceil_div(p.out_h, rows);
  d.tile_rows = tile_rows_for(rows);
  d.tile_elems = d.tile_rows * d.group_in * d.chan_pitch;
  d.ow_blocks = ceil_div(p.out_w, kMR);
  return d;
}

// Packed weights: [g][k block][tap][c][kNR], zero past the group's last output channel.
size_t direct_packed_bytes(const Conv2dProblem& p) {
  const int64_t gi = p.in_channels / p.groups, go = p.out_channels / p.groups;
  return size_t(p.groups * ceil_div(go, kNR) * p.kernel_h * p.kernel_w * gi * kNR) * sizeof(float);
}

void direct_pack(const Conv2dProblem& p, const void* weight, void* packed) {
  const float* w = static_cast<const float*>(weight);
  float* dst = static_cast<float*>(packed);
  const int64_t gi = p.in_channels / p.groups, go = p.out_channels / p.groups;
  const int64_t taps = p.kernel_h * p.kernel_w, kb_count = ceil_div(go, kNR);
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t kb = 0; kb < kb_count; ++kb)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < gi; ++c)
          for (int64_t kk = 0; kk < kNR; ++kk) {
            const int64_t k = kb * kNR + kk;
            *dst++ = k < go ? w[((g * go + k) * gi + c) * taps + t] : 0.0f;
          }
}

// The register-blocked microkernel: MR pixels x kNR channels.
//   x:      tile address of pixel 0, tap offset 0, channel 0; pixel m is at +m
//   tap_off[t]: offset of tap t in the tile;  chan_pitch: from one channel to the next
//   w:      packed weights of this k block, [tap][c][kNR]
//   out:    pixel m's kNR outputs at out + m * out_pixel_stride (kvalid of them are stored)
template <int MR>
void microkernel(const float* x, const int64_t* tap_off, int64_t taps, int64_t channels, int64_t chan_pitch,
                 const float* w, const float* bias, int kvalid, Activation act, float* out,
                 int64_t out_pixel_stride) {
  Vec acc[MR][kNV];
  for (int v = 0; v < kNV; ++v) {
    const int n = kvalid - v * kVL;
    const Vec b = !bias || n <= 0 ? vzero() : (n >= kVL ? vload(bias + v * kVL) : vload_partial(bias + v * kVL, n));
    for (int m = 0; m < MR; ++m) acc[m][v] = b;
  }
  for (int64_t t = 0; t < taps; ++t) {
    const float* xc = x + tap_off[t];
    const float* wc = w + t * channels * kNR;
    for (int64_t c = 0; c < channels; ++c) {
      Vec wv[kNV];
      for (int v = 0; v < kNV; ++v) wv[v] = vload(wc + v * kVL);
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
        const Vec a = vbroadcast(xc + m);
        for (int v = 0; v < kNV; ++v) acc[m][v] = vfma(a, wv[v], acc[m][v]);
      }
      xc += chan_pitch;
      wc += kNR;
    }
  }
  for (int m = 0; m < MR; ++m) {
    float* o = out + m * out_pixel_stride;
    for (int v = 0; v < kNV; ++v) {
      const Vec r = apply_simple_activation(acc[m][v], act);
      const int n = kvalid - v * kVL;
      if (n >= kVL) vstore(o + v * kVL, r);
      else if (n > 0) vstore_partial(o + v * kVL, r, n);
    }
  }
}

using MicrokernelFn = void (*)(const float*, const int64_t*, int64_t, int64_t, int64_t, const float*,
                               const float*, int, Activation, float*, int64_t);

template <int... M>
constexpr std::array<MicrokernelFn, sizeof...(M)> microkernel_table(std::integer_sequence<int, M...>) {
  return {&microkernel<M + 1>...};
}
// kMicrokernels[mr - 1] handles mr pixels.
constexpr auto kMicrokernels = microkernel_table(std::make_integer_sequence<int, kMR>{});

// Copies padded rows [row0, row0 + rows) of the group's channels [c0, c0 + channels) into the
// tile; work is split into (row, channel) units so a thread team can share it.
void fill_tile_unit(const ConvCall& call, const DirectPlan& d, int64_t n, int64_t c0, int64_t row0, int64_t unit,
                    float* tile) {
  const Conv2dProblem& p = call.p;
  const int64_t r = unit / d.group_in, c = unit % d.group_in;
  float* dst = tile + (r * d.group_in + c) * d.chan_pitch;
  const int64_t src_row = call.row_src[row0 + r];
  if (src_row < 0) {
    std::memset(dst, 0, sizeof(float) * d.chan_pitch);
    return;
  }
  const float* xr = static_cast<const float*>(call.x) + n * call.x_stride.n + (c0 + c) * call.x_stride.c +
                    src_row * call.x_stride.h;
  const int64_t sw = p.stride_w, cols = p.in_w + p.pad_left + p.pad_right, xs = call.x_stride.w;
  for (int64_t ph = 0; ph < sw; ++ph) {
    float* dq = dst + ph * d.phase_w;
    for (int64_t q = 0; q < d.phase_w; ++q) {
      const int64_t col = q * sw + ph;
      const int64_t src = col < cols ? call.col_src[col] : -1;
      dq[q] = src < 0 ? 0.0f : xr[src * xs];
    }
  }
}

void run_direct(const ConvCall& call) {
  const Conv2dProblem& p = call.p;
  const DirectPlan d = make_plan(p);
  const float* packed = static_cast<const float*>(call.packed);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const bool nchw = p.layout == Layout::NCHW;
  const int threads = call.num_threads;

  std::vector<int64_t> tap_off(size_t(d.taps));
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t col = j * p.dilation_w;
      tap_off[size_t(i * p.kernel_w + j)] =
          i * p.dilation_h * d.group_in * d.chan_pitch + (col % p.stride_w) * d.phase_w + col / p.stride_w;
    }
  std::vector<float> tile(size_t(d.tile_elems));
  // NCHW: one output row of one k block, [ow][kNR], per thread.
  const int64_t row_buf_elems = nchw ? p.out_w * kNR : 0;
  std::vector<float> row_bufs(size_t(row_buf_elems * threads));
  const int64_t packed_group = d.k_blocks * d.taps * d.group_in * kNR;

#pragma omp parallel num_threads(threads)
  {
    DenormalGuard denormals;
    float* row_buf = row_bufs.data() + row_buf_elems * thread_id();
    for (int64_t n = 0; n < p.batch; ++n)
      for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t rb = 0; rb < d.row_blocks; ++rb) {
          const int64_t oh0 = rb * d.rows_per_block;
          const int64_t rows = std::min(d.rows_per_block, p.out_h - oh0);
          const int64_t tile_rows = (rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
#pragma omp for schedule(static)
          for (int64_t unit = 0; unit < tile_rows * d.group_in; ++unit)
            fill_tile_unit(call, d, n, g * d.group_in, oh0 * p.stride_h, unit, tile.data());

#pragma omp for schedule(static)
          for (int64_t item = 0; item < d.k_blocks * rows; ++item) {
            const int64_t kb = item / rows, r = item % rows;
            const int64_t k0 = g * d.group_out + kb * kNR;
            const int kvalid = int(std::min<int64_t>(kNR, (g + 1) * d.group_out - k0));
            const float* wk = packed + g * packed_group + kb * d.taps * d.group_in * kNR;
            const float* bk = bias ? bias + k0 : nullptr;
            const int64_t oh = oh0 + r;
            const float* xrow = tile.data() + r * p.stride_h * d.group_in * d.chan_pitch;
            float* out_row;
            int64_t out_pixel_stride;
            if (nchw) {
              out_row = row_buf;
              out_pixel_stride = kNR;
            } else {
              out_row = y + n * call.y_stride.n + oh * call.y_stride.h + k0;
              out_pixel_stride = call.y_stride.w;
            }
            // Balanced pixel blocks: 14 pixels run as 7 + 7, not 12 + 2.
            const int64_t base = p.out_w / d.ow_blocks, extra = p.out_w % d.ow_blocks;
            int64_t ow = 0;
            for (int64_t b = 0; b < d.ow_blocks; ++b) {
              const int64_t mr = base + (b < extra ? 1 : 0);
              kMicrokernels[size_t(mr - 1)](xrow + ow, tap_off.data(), d.taps, d.group_in, d.chan_pitch, wk, bk,
                                            kvalid, p.activation, out_row + ow * out_pixel_stride,
                                            out_pixel_stride);
              ow += mr;
            }
            if (nchw) {
              for (int kk = 0; kk < kvalid; ++kk) {
                float* yr = y + n * call.y_stride.n + (k0 + kk) * call.y_stride.c + oh * call.y_stride.h;
                for (int64_t o = 0; o < p.out_w; ++o) yr[o] = row_buf[o * kNR + kk];
                if (!is_simple(p.activation)) activate_row(yr, p.out_w, p.activation);
              }
            } else if (!is_simple(p.activation)) {
              for (int64_t o = 0; o < p.out_w; ++o) activate_row(out_row + o * out_pixel_stride, kvalid, p.activation);
            }
          }
        }
  }
}

bool direct_accepts(const Conv2dProblem& p) {
  const int64_t go = p.out_channels / p.groups;
  // Blocks of kNR output channels: worth it when a group fills at least half a block.
  return p.dtype == DType::Float32 && 2 * go >= kNR;
}

size_t direct_workspace(const Conv2dProblem& p, int threads) {
  const DirectPlan d = make_plan(p);
  const int64_t row_buf = p.layout == Layout::NCHW ? p.out_w * kNR * threads : 0;
  return size_t(d.tile_elems + row_buf) * sizeof(float) + size_t(d.taps) * sizeof(int64_t);
}

}  // namespace

const ConvAlgorithm conv2d_direct_f32 = {
#if defined(__AVX512F__)
    "conv2d_direct_f32__" CPPCONV_ISA_NAME "_12x32",
#else
    "conv2d_direct_f32__" CPPCONV_ISA_NAME "_6x16",
#endif
    DType::Float32, direct_accepts, direct_packed_bytes, direct_pack, direct_workspace, run_direct};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // __AVX512F__ || __AVX2__
