#include "kernels/qconv_s16.h"

#if defined(CPPCONV_HAS_QCONV_S16)
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/isa_common.h"
#include "kernels/qconv_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using qconv::store;

constexpr int64_t kPixels = 6;     // output pixels per block: 12 accumulators, 2 weights, 1 broadcast
constexpr int64_t kChannels = qconv::kBlock;  // output channels per block: two vectors of 8 int32

// Sizes of the padded int16 tile and the packed weights.  The tile is one image,
// [d][h][w][group][channel pair][2] with each group's channels padded to an even count, so
// a (channel, next channel) pair of one pixel is one int32 to broadcast.
struct Geometry {
  int64_t groups, group_in, group_out, group_in_padded, pairs, blocks, taps, depth, rows, cols, pixel;
};

Geometry geometry_of(const ConvProblem& p) {
  Geometry g;
  g.groups = p.groups;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.group_in_padded = (g.group_in + 1) / 2 * 2;
  g.pairs = g.group_in_padded / 2;
  g.blocks = (g.group_out + kChannels - 1) / kChannels;
  g.taps = p.kernel_d * p.kernel_h * p.kernel_w;
  g.depth = p.in_d + p.pad_front + p.pad_back;
  g.rows = p.in_h + p.pad_top + p.pad_bottom;
  g.cols = p.in_w + p.pad_left + p.pad_right;
  g.pixel = g.groups * g.group_in_padded;  // int16 values per tile pixel
  return g;
}

size_t weight_values(const Geometry& g) { return size_t(g.groups * g.blocks * g.taps * g.pairs * kChannels * 2); }

bool accepts(const ConvProblem& p) { return qconv::dense_tile_accepts(p, geometry_of(p).pixel); }

// Weights [group][block][tap][pair][16 channels][2], then the bias [group][block][16] (int32).
size_t packed_bytes(const ConvProblem& p) {
  const Geometry g = geometry_of(p);
  return weight_values(g) * sizeof(int16_t) + size_t(g.groups * g.blocks * kChannels) * sizeof(int32_t);
}

bool pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  const Geometry g = geometry_of(p);
  int16_t* w = static_cast<int16_t*>(packed);
  int32_t* b = reinterpret_cast<int32_t*>(w + weight_values(g));
  std::memset(packed, 0, packed_bytes(p));
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t k = 0; k < g.group_out; ++k) {
      const int64_t block = grp * g.blocks + k / kChannels, lane = k % kChannels, out = grp * g.group_out + k;
      b[block * kChannels + lane] = bias ? bias[out] : 0;
      for (int64_t c = 0; c < g.group_in; ++c)
        for (int64_t t = 0; t < g.taps; ++t)
          w[((block * g.taps + t) * g.pairs + c / 2) * kChannels * 2 + lane * 2 + c % 2] =
              weight[(out * g.group_in + c) * g.taps + t];
    }
  return true;
}

// Where a tile pixel keeps its channels: `width` int16 values, channel c of group g at
// g * group_in_padded + c (the depthwise tile: one channel per group, none padded).
struct TileLayout {
  int64_t width, group_in, group_in_padded;
};

// The image's padded tile, x - x_zero_point as int16 (padding and the padded channels are 0).
template <class T>
void copy_tile(const QConvCall& call, const Geometry& g, const TileLayout& t, int64_t n, int16_t* tile, int threads) {
  const ConvProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  const int64_t C = p.in_channels, D = p.in_d, H = p.in_h, W = p.in_w, zero = call.x_zero_point;
  auto slot = [&](int64_t ch) { return ch / t.group_in * t.group_in_padded + ch % t.group_in; };
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t row = 0; row < g.depth * g.rows; ++row) {
    const int64_t d = row / g.rows - p.pad_front, h = row % g.rows - p.pad_top;
    int16_t* out = tile + row * g.cols * t.width;
    std::memset(out, 0, sizeof(int16_t) * size_t(g.cols * t.width));
    if (d < 0 || d >= D || h < 0 || h >= H) continue;
    // Reads run along x's contiguous axis (channels, or the row); the row's tile is in L1.
    if (p.layout == Layout::NHWC) {
      for (int64_t w = 0; w < W; ++w) {
        const T* src = x + (((n * D + d) * H + h) * W + w) * C;
        int16_t* px = out + (w + p.pad_left) * t.width;
        for (int64_t ch0 = 0; ch0 < C; ch0 += t.group_in, px += t.group_in_padded)  // a group at a time
          for (int64_t c = 0; c < t.group_in; ++c) px[c] = int16_t(int32_t(src[ch0 + c]) - zero);
      }
      continue;
    }
    for (int64_t ch = 0; ch < C; ++ch) {
      const T* src = x + (((n * C + ch) * D + d) * H + h) * W;
      int16_t* dst = out + p.pad_left * t.width + slot(ch);
      for (int64_t w = 0; w < W; ++w) dst[w * t.width] = int16_t(int32_t(src[w]) - zero);
    }
  }
}

// NP pixels x 16 channels: acc += sum over taps and channel pairs of (x pair) . (w pair).
template <int NP>
void accumulate(const int16_t* x, int64_t pixel_step, const int64_t* tap_offset, int64_t taps, int64_t pairs,
                const int16_t* w, __m256i (&out)[kPixels][2]) {
  // Local accumulators: written through `out` inside the loop, they would be stored back to
  // memory after every multiply-add (the compiler cannot rule out aliasing with the loads).
  __m256i acc[NP][2];
  for (int q = 0; q < NP; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_si256();
  for (int64_t t = 0; t < taps; ++t) {
    const int16_t* xt = x + tap_offset[t];
    const int16_t* wt = w + t * pairs * kChannels * 2;
    for (int64_t pr = 0; pr < pairs; ++pr) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + pr * 32));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + pr * 32 + 16));
#pragma GCC unroll 6
      for (int q = 0; q < NP; ++q) {
        int32_t pair;
        std::memcpy(&pair, xt + q * pixel_step + 2 * pr, sizeof(pair));
        const __m256i b = _mm256_set1_epi32(pair);
        acc[q][0] = _mm256_add_epi32(acc[q][0], _mm256_madd_epi16(b, w0));
        acc[q][1] = _mm256_add_epi32(acc[q][1], _mm256_madd_epi16(b, w1));
      }
    }
  }
  for (int q = 0; q < NP; ++q) out[q][0] = acc[q][0], out[q][1] = acc[q][1];
}

using Accumulate = void (*)(const int16_t*, int64_t, const int64_t*, int64_t, int64_t, const int16_t*,
                            __m256i (&)[kPixels][2]);
constexpr Accumulate kAccumulate[kPixels + 1] = {nullptr,       accumulate<1>, accumulate<2>, accumulate<3>,
                                                 accumulate<4>, accumulate<5>, accumulate<6>};

// Image n's tile copied for for_each_image.
auto tile_copier(const QConvCall& call, const Geometry& g, const TileLayout& layout, int16_t* tile) {
  return [&call, g, layout, tile](int64_t n, int threads) {
    if (call.x_signed) copy_tile<int8_t>(call, g, layout, n, tile, threads);
    else copy_tile<uint8_t>(call, g, layout, n, tile, threads);
  };
}

void run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const Geometry g = geometry_of(p);
  const int16_t* weights = static_cast<const int16_t*>(call.packed);
  const int32_t* bias = reinterpret_cast<const int32_t*>(weights + weight_values(g));
  // Allocated before any parallel region: a failed allocation throws on the caller's thread.
  std::vector<int16_t> tile(size_t(g.depth * g.rows * g.cols * g.pixel));
  const std::vector<int64_t> tap_offset = qconv::tap_offsets(p, g.rows, g.cols, g.pixel);
  const std::vector<float> multiplier = qconv::block_multipliers(call, g.groups, g.blocks);
  const int64_t items = p.out_d * p.out_h * g.groups * g.blocks;
  const auto copy = tile_copier(call, g, {g.pixel, g.group_in, g.group_in_padded}, tile.data());
  qconv::for_each_image(call, items, copy, [&](int64_t n, int64_t item) {
    const int64_t block = item % (g.groups * g.blocks), row = item / (g.groups * g.blocks);
    const int64_t grp = block / g.blocks, od = row / p.out_h, oh = row % p.out_h;
    const int16_t* x_row =
        tile.data() + ((od * p.stride_d * g.rows + oh * p.stride_h) * g.cols) * g.pixel + grp * g.group_in_padded;
    const int16_t* w = weights + block * g.taps * g.pairs * kChannels * 2;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + block * kChannels));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + block * kChannels + 8));
    const int64_t k_in_group = (block % g.blocks) * kChannels;
    const int64_t k0 = grp * g.group_out + k_in_group, count = std::min(kChannels, g.group_out - k_in_group);
    __m256i acc[kPixels][2];
    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += kPixels) {
      const int64_t np = std::min(kPixels, p.out_w - ow0);
      kAccumulate[np](x_row + ow0 * p.stride_w * g.pixel, p.stride_w * g.pixel, tap_offset.data(), g.taps, g.pairs, w,
                      acc);
      for (int64_t q = 0; q < np; ++q)
        store(call, _mm256_add_epi32(acc[q][0], b0), _mm256_add_epi32(acc[q][1], b1),
              multiplier.data() + block * kChannels, n, row * p.out_w + ow0 + q, k0, count);
    }
  });
}

// ---- Depthwise (one input and one output channel per group): channels in lanes.  The tile is
// [d][h][w][channel], channels padded to a multiple of 16.  Taps go in pairs: the two taps'
// inputs interleaved by unpacklo/hi (channels 0-3 and 8-11, then 4-7 and 12-15) meet the
// weights packed in that order, [block][tap pair][2][16] int16, in vpmaddwd (exact: |x|,
// |w| <= 255); the channels are put back in order once per output.  An odd last tap pairs
// with a zero weight.

constexpr int64_t kDepthwisePixels = 4;

bool depthwise_accepts(const ConvProblem& p) {
  if (p.pad_mode != PadMode::Zeros || p.batch < 1 || p.in_channels < 1) return false;
  if (p.groups != p.in_channels || p.out_channels != p.in_channels) return false;
  const Geometry g = geometry_of(p);
  const double tile = double(g.depth) * double(g.rows) * double(g.cols) * double(g.blocks * kChannels);
  const double input = double(p.in_d) * double(p.in_h) * double(p.in_w) * double(p.in_channels);
  return tile <= 4.0 * input + double(1 << 20);
}

int64_t depthwise_blocks(const ConvProblem& p) { return (p.out_channels + kChannels - 1) / kChannels; }

int64_t tap_pairs(const ConvProblem& p) { return (p.kernel_d * p.kernel_h * p.kernel_w + 1) / 2; }

size_t depthwise_packed_bytes(const ConvProblem& p) {
  const int64_t blocks = depthwise_blocks(p);
  return size_t(blocks * tap_pairs(p) * 2 * kChannels) * sizeof(int16_t) + size_t(blocks * kChannels) * sizeof(int32_t);
}

bool depthwise_pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w, pairs = tap_pairs(p), blocks = depthwise_blocks(p);
  int16_t* w = static_cast<int16_t*>(packed);
  int32_t* b = reinterpret_cast<int32_t*>(w + blocks * pairs * 2 * kChannels);
  std::memset(packed, 0, depthwise_packed_bytes(p));
  for (int64_t k = 0; k < p.out_channels; ++k) {
    b[k] = bias ? bias[k] : 0;
    const int64_t block = k / kChannels, lane = k % kChannels, half = lane / 8, r = lane % 8;
    for (int64_t t = 0; t < taps; ++t)
      w[((block * pairs + t / 2) * 2 + r / 4) * kChannels + half * 8 + 2 * (r % 4) + t % 2] = weight[k * taps + t];
  }
  return true;
}

// NP pixels x 16 channels of a depthwise row: out = bias + sum over taps of x * w (int32).
template <int NP>
void depthwise_accumulate(const int16_t* x, int64_t pixel_step, const int64_t* tap_offset, int64_t taps,
                          const int16_t* w, __m256i b0, __m256i b1, __m256i (&out)[kPixels][2]) {
  __m256i acc[NP][2];  // local, as in accumulate(); channels (0-3, 8-11) and (4-7, 12-15)
  for (int q = 0; q < NP; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_si256();
  for (int64_t t = 0; t < taps; t += 2) {
    const __m256i w_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + t * kChannels));
    const __m256i w_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + t * kChannels + kChannels));
    const int16_t* x0 = x + tap_offset[t];
    const int16_t* x1 = x + tap_offset[t + 1 < taps ? t + 1 : t];  // its weight is 0 past the last tap
    for (int q = 0; q < NP; ++q) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0 + q * pixel_step));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1 + q * pixel_step));
      acc[q][0] = _mm256_add_epi32(acc[q][0], _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w_lo));
      acc[q][1] = _mm256_add_epi32(acc[q][1], _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w_hi));
    }
  }
  for (int q = 0; q < NP; ++q) {
    out[q][0] = _mm256_add_epi32(_mm256_permute2x128_si256(acc[q][0], acc[q][1], 0x20), b0);
    out[q][1] = _mm256_add_epi32(_mm256_permute2x128_si256(acc[q][0], acc[q][1], 0x31), b1);
  }
}

using DepthwiseAccumulate = void (*)(const int16_t*, int64_t, const int64_t*, int64_t, const int16_t*, __m256i, __m256i,
                                     __m256i (&)[kPixels][2]);
constexpr DepthwiseAccumulate kDepthwiseAccumulate[kDepthwisePixels + 1] = {
    nullptr, depthwise_accumulate<1>, depthwise_accumulate<2>, depthwise_accumulate<3>, depthwise_accumulate<4>};

void depthwise_run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const Geometry g = geometry_of(p);
  const int64_t blocks = depthwise_blocks(p), width = blocks * kChannels;
  const int64_t block_values = tap_pairs(p) * 2 * kChannels;  // one block's packed weights
  const int16_t* weights = static_cast<const int16_t*>(call.packed);
  const int32_t* bias = reinterpret_cast<const int32_t*>(weights + blocks * block_values);
  std::vector<int16_t> tile(size_t(g.depth * g.rows * g.cols * width));
  const std::vector<int64_t> tap_offset = qconv::tap_offsets(p, g.rows, g.cols, width);
  std::vector<float> multiplier(size_t(width), 0.0f);
  if (call.output != QOutput::Int32) std::copy(call.multiplier, call.multiplier + p.out_channels, multiplier.begin());
  const int64_t items = p.out_d * p.out_h * blocks;
  qconv::for_each_image(call, items, tile_copier(call, g, {width, 1, 1}, tile.data()), [&](int64_t n, int64_t item) {
    const int64_t block = item % blocks, row = item / blocks, od = row / p.out_h, oh = row % p.out_h;
    const int16_t* x_row =
        tile.data() + ((od * p.stride_d * g.rows + oh * p.stride_h) * g.cols) * width + block * kChannels;
    const int16_t* w = weights + block * block_values;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + block * kChannels));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + block * kChannels + 8));
    const int64_t k0 = block * kChannels, count = std::min(kChannels, p.out_channels - k0);
    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += kDepthwisePixels) {
      const int64_t np = std::min(kDepthwisePixels, p.out_w - ow0);
      __m256i acc[kPixels][2];
      kDepthwiseAccumulate[np](x_row + ow0 * p.stride_w * width, p.stride_w * width, tap_offset.data(), g.taps, w, b0,
                               b1, acc);
      for (int64_t q = 0; q < np; ++q)
        store(call, acc[q][0], acc[q][1], multiplier.data() + k0, n, row * p.out_w + ow0 + q, k0, count);
    }
  });
}
}  // namespace

const QConvAlgorithm qconv_s16_6x16 = {"qconv_s16__" CPPCONV_ISA_NAME "_6x16", accepts, packed_bytes, pack, run};
const QConvAlgorithm qconv_depthwise_s16_4x16 = {"qconv_depthwise_s16__" CPPCONV_ISA_NAME "_4x16", depthwise_accepts,
                                                 depthwise_packed_bytes, depthwise_pack, depthwise_run};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
