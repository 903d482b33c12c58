// conv_transpose2d_phase: transposed convolution by gathering, split by stride phase.
//
// Output column ow (t = ow + pad_left = m * S + r) receives exactly the taps j with
// j * D = r (mod S), from input column iw = m - e_j with e_j = (j * D - r) / S; rows alike.
// So each output phase r is a stride-1 correlation of the input with a sub-kernel, and the
// outputs of one row and phase with consecutive m read consecutive input pixels.  That makes
// a GEMM per (output row, phase, output-channel block): MR consecutive pixels x NR output
// channels of accumulators in registers, summed over (valid taps, input channels of the
// group) with the weights packed as [group][channel block][i][j][c][NR].
//
// The input is first copied into an NHWC buffer with zero columns on both sides (from either
// layout), so the inner loop never checks bounds; rows outside the input are skipped whole.
// Every output is written once (no scatter, no races, no zero-stuffed input).  Compiled once
// per ISA: the vector width follows the ISA's flags.
//
// Depth (3-D) works as the rows do: an output plane od gathers the planes id = (od + pad -
// a * D) / S that divide evenly, so a valid (depth tap, row tap) pair is one row tap of the
// 2-D scheme, kernel row a * kh + i of input row id * in_h + ih.  1-D is height 1.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/conv_transpose2d.h"
#include "kernels/isa_common.h"

#if CPPCONV_SIMD
#include "kernels/simd.h"
// float packs and NCHW stores by in-register transposes (the baseline build moves scalars)
#define CPPCONV_CT_TRANSPOSES 1
#else
#define CPPCONV_CT_TRANSPOSES 0
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

#if CPPCONV_SIMD
constexpr int64_t kMR = simd::kTiles.transposed_pixels;  // most pixels per micro-tile
#else
constexpr int64_t kMR = 6;  // 12 of 16 vector registers accumulate
#endif
template <class T>
constexpr int64_t lanes() {
  return CPPCONV_VEC_BYTES / int64_t(sizeof(T));
}
template <class T>
constexpr int64_t nr() {
  return 2 * lanes<T>();  // output channels per micro-tile: two vectors
}

struct Geometry {
  int64_t group_in, group_out, oc_blocks;
  int64_t edge;    // zero columns left of the input in the padded buffer (max e_j)
  int64_t padded_w;
};

template <class T>
Geometry geometry(const ConvTransposeProblem& p) {
  Geometry g{};
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.oc_blocks = ceil_div(g.group_out, nr<T>());
  g.edge = (p.kernel_w - 1) * p.dilation_w / p.stride_w;
  const int64_t m_max = (p.out_w - 1 + p.pad_left) / p.stride_w;
  g.padded_w = g.edge + std::max(p.in_w, m_max + 1) + kMR;
  return g;
}

template <class T>
size_t packed_bytes(const ConvTransposeProblem& p) {
  const Geometry g = geometry<T>(p);
  return size_t(p.groups * g.oc_blocks * p.kernel_d * p.kernel_h * p.kernel_w * g.group_in * nr<T>()) * sizeof(T);
}

// [group][output-channel block][a][i][j][c][NR], zero past the group's output channels.  One
// (group, block) per unit; each input channel's NR rows of taps (output channel k's kd x kh x kw
// taps are contiguous in the (C, K / groups, kd, kh, kw) weights) are transposed into the block's
// columns: a one-shot call packs every time, and element by element the pack cost more than
// the arithmetic (docs/tuning.md, "Memory traffic").
template <class T>
void pack(const ConvTransposeProblem& p, const void* weight, void* packed, int threads) {
  const Geometry g = geometry<T>(p);
  const T* w = static_cast<const T*>(weight);
  T* out = static_cast<T*>(packed);
  const int64_t NR = nr<T>(), taps = p.kernel_d * p.kernel_h * p.kernel_w, Cg = g.group_in;
  const int64_t units = p.groups * g.oc_blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && units > 1)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t gr = unit / g.oc_blocks, b = unit % g.oc_blocks;
    const int64_t valid = std::min(NR, g.group_out - b * NR);
    T* dst = out + unit * taps * Cg * NR;  // tap t of channel c at dst + (t * Cg + c) * NR
    for (int64_t c = 0; c < Cg; ++c) {
      const T* rows = w + ((gr * Cg + c) * g.group_out + b * NR) * taps;  // row l: output channel b * NR + l
#if CPPCONV_CT_TRANSPOSES
      if constexpr (std::is_same_v<T, float>) {
        constexpr int L = simd::kLanes<float>;
        for (int64_t h = 0; h < NR; h += L)
          simd::planes_to_pixels(rows + h * taps, taps, int(std::clamp<int64_t>(valid - h, 0, L)), taps,
                                 dst + c * NR + h, Cg * NR);
        continue;
      }
#endif
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t l = 0; l < NR; ++l) dst[(t * Cg + c) * NR + l] = l < valid ? rows[l * taps + t] : T(0);
    }
  }
}

// NCHW float output rows go through a per-thread buffer [ow][NR] and in-register transposes
// (stored one value at a time, each pixel's NR outputs went to NR planes).
template <class T>
int64_t row_buffer_elems(const ConvTransposeProblem& p) {
  return CPPCONV_CT_TRANSPOSES && std::is_same_v<T, float> && p.layout == Layout::NCHW ? p.out_w * nr<T>() : 0;
}

struct Tap {
  int64_t index, shift;  // kernel index and e (input = m - e)
};

// The padded NHWC input, then each thread's row buffer; the column taps and each thread's row taps.
template <class T>
size_t workspace_bytes(const ConvTransposeProblem& p, int threads) {
  const Geometry g = geometry<T>(p);
  return size_t(p.batch * p.in_d * p.in_h * g.padded_w * p.in_channels + threads * row_buffer_elems<T>(p)) * sizeof(T) +
         size_t(threads * p.kernel_d * p.kernel_h + p.kernel_w) * sizeof(Tap);
}

template <class T>
struct TileArgs {
  const Tap* row_taps;
  int64_t row_count;
  const Tap* col_taps;
  int64_t col_count;
  const T* x;  // padded input at the tile's first pixel (m0), row shift 0, column shift 0
  const T* w;  // the channel block's packed weights
  int64_t row_stride, pixel_stride, group_in, kernel_w;
};

// MR pixels x NR channels of one output row and phase, summed over the valid taps and the
// group's input channels; the result goes to tile[MR][NR].
template <class T, int MR>
void micro_tile(const TileArgs<T>& a, typename VecOf<T>::type b0, typename VecOf<T>::type b1, T* tile) {
  using V = typename VecOf<T>::type;
  constexpr int64_t VL = lanes<T>(), NR = nr<T>();
  V acc[MR][2];
  for (int q = 0; q < MR; ++q) {
    acc[q][0] = b0;
    acc[q][1] = b1;
  }
  const int64_t C = a.pixel_stride, Cg = a.group_in;
  for (int64_t rt = 0; rt < a.row_count; ++rt) {
    const T* xr = a.x + a.row_taps[rt].shift * a.row_stride;
    for (int64_t ct = 0; ct < a.col_count; ++ct) {
      const T* xb = xr - a.col_taps[ct].shift * C;
      const T* wb = a.w + (a.row_taps[rt].index * a.kernel_w + a.col_taps[ct].index) * Cg * NR;
      for (int64_t c = 0; c < Cg; ++c) {
        V w0, w1;
        std::memcpy(&w0, wb + c * NR, sizeof(V));
        std::memcpy(&w1, wb + c * NR + VL, sizeof(V));
        for (int q = 0; q < MR; ++q) {
          const T xv = xb[q * C + c];
          acc[q][0] += xv * w0;
          acc[q][1] += xv * w1;
        }
      }
    }
  }
  std::memcpy(tile, acc, sizeof(acc));
}

template <class T>
void run_phase(const ConvTransposeCall& call) {
  using V = typename VecOf<T>::type;
  constexpr int64_t VL = lanes<T>(), NR = nr<T>(), MR = kMR;
  const ConvTransposeProblem& p = call.p;
  const Geometry g = geometry<T>(p);
  const int64_t C = p.in_channels, Cg = g.group_in, ID = p.in_d, IH = p.in_h, IW = p.in_w, E = g.edge;
  const int64_t PW = g.padded_w;
  const int64_t SD = p.stride_d, SH = p.stride_h, SW = p.stride_w, KD = p.kernel_d, KH = p.kernel_h, KW = p.kernel_w;
  const T* x = static_cast<const T*>(call.x);
  const T* wp = static_cast<const T*>(call.packed);
  const T* bias = static_cast<const T*>(call.bias);
  T* y = static_cast<T*>(call.y);
  const bool nhwc = p.layout == Layout::NHWC;

  // Taps of each column phase r = (ow + pad_left) mod S.
  std::vector<std::vector<Tap>> col_taps(static_cast<size_t>(SW));
  for (int64_t j = 0; j < KW; ++j) {
    const int64_t o = j * p.dilation_w;
    col_taps[size_t(o % SW)].push_back({j, o / SW});
  }

  // The input as NHWC with E zero columns on the left and zeros past the right edge.
  const int threads = call.num_threads;
  const int64_t xpad_elems = p.batch * ID * IH * PW * C, row_elems = row_buffer_elems<T>(p);
  T* xpad = scratch<T>(size_t(xpad_elems + threads * row_elems));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < p.batch * ID * IH; ++row) {
    const int64_t n = row / (ID * IH), id = row / IH % ID, ih = row % IH;
    T* d = xpad + row * PW * C;
    std::memset(d, 0, sizeof(T) * size_t(E * C));
    std::memset(d + (E + IW) * C, 0, sizeof(T) * size_t((PW - E - IW) * C));
    const T* s = x + n * call.x_stride.n + id * call.x_stride_d + ih * call.x_stride.h;
    if (nhwc) {
      for (int64_t iw = 0; iw < IW; ++iw)
        std::memcpy(d + (E + iw) * C, s + iw * call.x_stride.w, sizeof(T) * size_t(C));
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T* sc = s + c * call.x_stride.c;
        T* dc = d + E * C + c;
        for (int64_t iw = 0; iw < IW; ++iw) dc[iw * C] = sc[iw];
      }
    }
  }

  const int64_t items = p.groups * g.oc_blocks * p.batch * p.out_d * p.out_h;
  // Each thread's valid (depth, row) taps of its current item (at most KD * KH), allocated
  // here: no allocation may fail inside the region (see scratch_bytes).
  std::vector<Tap> thread_row_taps(size_t(threads * KD * KH));
  parallel_region(threads, [&] {
    DenormalGuard denormals;
    Tap* row_taps = thread_row_taps.data() + thread_id() * KD * KH;
    int64_t row_count = 0;
    alignas(64) T bias_block[NR];
    alignas(64) T tile[MR * NR];
    T* row_buf = xpad + xpad_elems + thread_id() * row_elems;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      int64_t rest = item;
      const int64_t oh = rest % p.out_h;
      rest /= p.out_h;
      const int64_t od = rest % p.out_d;
      rest /= p.out_d;
      const int64_t n = rest % p.batch;
      rest /= p.batch;
      const int64_t ob = rest % g.oc_blocks;
      const int64_t gr = rest / g.oc_blocks;
      const int64_t k0 = gr * g.group_out + ob * NR;
      const int64_t kcount = std::min(NR, g.group_out - ob * NR);
      for (int64_t l = 0; l < NR; ++l) bias_block[l] = (bias && l < kcount) ? bias[k0 + l] : T(0);
      V b0, b1;
      std::memcpy(&b0, bias_block, sizeof(V));
      std::memcpy(&b1, bias_block + VL, sizeof(V));

      // Valid row taps: (oh + pad_top - i * D) = ih * S with 0 <= ih < IH; depth alike.
      row_count = 0;
      const int64_t td = od + p.pad_front, th = oh + p.pad_top;
      for (int64_t a = 0; a < KD; ++a) {
        const int64_t od_src = td - a * p.dilation_d;
        if (od_src < 0) break;
        if (od_src % SD != 0 || od_src / SD >= ID) continue;
        for (int64_t i = 0; i < KH; ++i) {
          const int64_t o = th - i * p.dilation_h;
          if (o < 0) break;
          if (o % SH == 0 && o / SH < IH) row_taps[row_count++] = {a * KH + i, od_src / SD * IH + o / SH};
        }
      }
      const T* xn = xpad + n * ID * IH * PW * C + gr * Cg;
      const T* wblock = wp + (gr * g.oc_blocks + ob) * KD * KH * KW * Cg * NR;

      for (int64_t r = 0; r < SW; ++r) {
        // Outputs ow = m * SW + r - pad_left inside [0, OW).
        const int64_t m_lo = p.pad_left > r ? ceil_div(p.pad_left - r, SW) : 0;
        const int64_t last = p.out_w - 1 + p.pad_left - r;
        if (last < 0) continue;
        const int64_t m_hi = last / SW + 1;
        const std::vector<Tap>& ctaps = col_taps[size_t(r)];
        // Balanced micro-tiles: 14 pixels run as 7 + 7, not 8 + 6 or 6 + 6 + 2.
        const int64_t count = m_hi - m_lo;
        if (count <= 0) continue;
        const int64_t tiles = ceil_div(count, MR);
        const int64_t mr = ceil_div(count, tiles);
        for (int64_t m0 = m_lo; m0 < m_hi; m0 += mr) {
          const int64_t pix = std::min(mr, m_hi - m0);
          const TileArgs<T> args{
              row_taps, row_count, ctaps.data(), int64_t(ctaps.size()), xn + (m0 + E) * C, wblock, PW * C, C, Cg, KW};
          switch (mr) {
            case 1: micro_tile<T, 1>(args, b0, b1, tile); break;
            case 2: micro_tile<T, 2>(args, b0, b1, tile); break;
            case 3: micro_tile<T, 3>(args, b0, b1, tile); break;
            case 4: micro_tile<T, 4>(args, b0, b1, tile); break;
            case 5: micro_tile<T, 5>(args, b0, b1, tile); break;
            case 6: micro_tile<T, 6>(args, b0, b1, tile); break;
            case 7:
              if constexpr (kMR >= 7) micro_tile<T, std::min<int64_t>(7, kMR)>(args, b0, b1, tile);
              break;
            case 8:
              if constexpr (kMR >= 8) micro_tile<T, std::min<int64_t>(8, kMR)>(args, b0, b1, tile);
              break;
            default: break;
          }
          for (int64_t q = 0; q < pix; ++q) {
            T* t = tile + q * NR;
            activate_row(t, kcount, fused_activation(p));
            const int64_t ow = (m0 + q) * SW + r - p.pad_left;
            T* yo = y + n * call.y_stride.n + od * call.y_stride_d + oh * call.y_stride.h + ow * call.y_stride.w +
                    k0 * call.y_stride.c;
            if (nhwc) {
              std::memcpy(yo, t, sizeof(T) * size_t(kcount));
            } else if (row_elems > 0) {
              std::memcpy(row_buf + ow * NR, t, sizeof(T) * size_t(NR));
            } else {
              for (int64_t l = 0; l < kcount; ++l) yo[l * call.y_stride.c] = t[l];
            }
          }
        }
      }
#if CPPCONV_CT_TRANSPOSES
      if constexpr (std::is_same_v<T, float>) {
        if (row_elems > 0) {  // every phase has filled the row: [ow][NR] into NR planes
          constexpr int L = simd::kLanes<float>;
          T* yrow = y + n * call.y_stride.n + od * call.y_stride_d + oh * call.y_stride.h + k0 * call.y_stride.c;
          for (int64_t h = 0; h < kcount; h += L)
            simd::pixels_to_planes(row_buf + h, NR, int(std::min<int64_t>(L, kcount - h)), p.out_w,
                                   yrow + h * call.y_stride.c, call.y_stride.c);
        }
      }
#endif
    }
  });
}

// The padded copy of x is as wide as the kernel's reach (its left edge), which a large dilation
// makes far wider than the input: it must stay in proportion to the call (see
// copies_in_proportion), or the reference takes the problem.
template <class T>
bool phase_accepts(const ConvTransposeProblem& p) {
  const double rows = double(p.batch) * double(p.in_d) * double(p.in_h);
  const double inputs = rows * double(p.in_channels) * double(p.in_w);
  const double macs =
      inputs * double(p.out_channels / p.groups) * double(p.kernel_d) * double(p.kernel_h) * double(p.kernel_w);
  const double outputs = double(p.batch) * double(p.out_channels) * double(p.out_d) * double(p.out_h) * double(p.out_w);
  const double copied = rows * double(geometry<T>(p).padded_w) * double(p.in_channels);
  return copies_in_proportion(copied, macs, inputs + outputs);
}

}  // namespace

const ConvTransposeAlgorithm conv_transpose2d_phase_f32 = {"conv_transpose2d_phase_f32__" CPPCONV_ISA_NAME,
                                                           DType::Float32,
                                                           phase_accepts<float>,
                                                           packed_bytes<float>,
                                                           pack<float>,
                                                           workspace_bytes<float>,
                                                           run_phase<float>};
const ConvTransposeAlgorithm conv_transpose2d_phase_f64 = {"conv_transpose2d_phase_f64__" CPPCONV_ISA_NAME,
                                                           DType::Float64,
                                                           phase_accepts<double>,
                                                           packed_bytes<double>,
                                                           pack<double>,
                                                           workspace_bytes<double>,
                                                           run_phase<double>};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
