#include "kernels/qconv_depthwise_vnni.h"

#if defined(CPPCONV_HAS_QCONV_DEPTHWISE_VNNI)
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/isa_common.h"
#include "kernels/qconv_common.h"
#include "kernels/qconv_s16.h"

// Output pixels in lanes, 64 of a channel at a time in four vectors of 16 int32.  A kernel
// row's taps are consecutive bytes of the input row, so a pixel's window of four taps is one
// dword, and for stride s one unaligned 64-byte load at column c yields the windows of 16
// pixels 4/s apart (dword i starts at c + 4i): 4/s loads, offset by s, cover 64/s consecutive
// pixels, and vpdpbusd multiplies each window by the row's four weights (a zero weight past
// the kernel's width).  Strides 1, 2 and 4 only, dilation 1 along the row.  The pixels are
// either one output row's, read from x with masked loads (run_rows), or a whole 2-D plane's
// as one long row over a padded copy of the plane (run_flat, see Flat).
//
// vpdpbusd multiplies unsigned by signed bytes: uint8 activations are read as they are, int8
// ones shifted by +128 (xor 0x80), and the centred weights must fit int8.  The accumulator is
// then sum w * x' - x_zero_point' * sum w: the second term goes into the bias once per call,
// and padding (masked-off bytes, rows outside the image) reads x_zero_point', so it cancels as
// the reference's zeros do.  int32 sums wrap modulo 2^32, and the exact result fits int32
// (the Python layer checks it), so the order of the terms changes nothing.  Packing refuses
// weights outside int8 (uint8 weights, int8 weights with a zero point): the plan then runs
// qconv_depthwise_s16.

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

constexpr int64_t kPixels = 64;  // output pixels per block: 4 accumulators of 16 lanes
constexpr int64_t kMaxRows = 64;   // kernel_d * kernel_h, for the row pointers on the stack
constexpr int64_t kMaxTaps = 256;  // kernel_d * kernel_h * kernel_w (channels-last kernel), likewise
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

struct Packing {
  int64_t groups;        // dwords (of 4 taps) per kernel row
  int64_t rows;          // kernel rows: kernel_d * kernel_h
  size_t weights;        // offset of the weight dwords [K][rows][groups]
  size_t sums, bias;     // offsets of sum of the weights [K] and the bias [K] (int32)
  size_t bytes;          // all
};

size_t round64(size_t n) { return (n + 63) / 64 * 64; }

Packing packing_of(const ConvProblem& p) {
  Packing k;
  const size_t K = size_t(p.out_channels);
  k.groups = (p.kernel_w + 3) / 4;
  k.rows = p.kernel_d * p.kernel_h;
  k.weights = 0;
  k.sums = k.weights + K * size_t(k.rows * k.groups) * 4;
  k.bias = k.sums + K * 4;
  k.bytes = round64(k.bias + K * 4);
  return k;
}

size_t packed_bytes(const ConvProblem& p) {
  if (p.groups != p.in_channels || p.out_channels != p.in_channels) return 0;
  return packing_of(p).bytes;
}

// Refuses centred weights beyond int8 (uint8 weights, or int8 ones with a zero point): the plan
// then runs qconv_depthwise_s16 for them.
bool weights_fit_int8(const ConvProblem& p, const int16_t* weight) {
  const int64_t count = p.out_channels * p.kernel_d * p.kernel_h * p.kernel_w;
  for (int64_t i = 0; i < count; ++i)
    if (weight[i] < -128 || weight[i] > 127) return false;
  return true;
}

bool pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  if (!weights_fit_int8(p, weight)) return false;
  const Packing k = packing_of(p);
  unsigned char* base = static_cast<unsigned char*>(packed);
  std::memset(base, 0, k.bytes);
  int8_t* w = reinterpret_cast<int8_t*>(base + k.weights);
  int32_t* sums = reinterpret_cast<int32_t*>(base + k.sums);
  int32_t* b = reinterpret_cast<int32_t*>(base + k.bias);
  for (int64_t c = 0; c < p.out_channels; ++c) {
    int32_t sum = 0;
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int16_t v = weight[(c * k.rows + r) * p.kernel_w + j];
        sum += v;
        w[((c * k.rows + r) * k.groups + j / 4) * 4 + j % 4] = int8_t(v);
      }
    sums[c] = sum;
    b[c] = bias ? bias[c] : 0;
  }
  return true;
}

// Bytes [lo, hi) of a 64-byte load, as a mask.
__mmask64 byte_mask(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0), hi = std::min<int64_t>(hi, 64);
  if (hi <= lo) return 0;
  const uint64_t below_hi = hi == 64 ? ~uint64_t(0) : (uint64_t(1) << hi) - 1;
  return __mmask64(below_hi & ~((uint64_t(1) << lo) - 1));
}

// Byte order within each 128-bit lane after packing the four accumulators (a0, a1, a2, a3,
// dwords 4L..4L+3 of each in lane L), into pixel order: J = 4/stride accumulators interleave.
CPPCONV_TARGET_AVX512VNNI __m512i pixel_order(__m512i bytes, int J) {
  if (J == 4) {  // a_j[i] = pixel 4i + j: lane L holds pixels 16L.. as [j][k] -> [k][j]
    const __m512i index = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    return _mm512_shuffle_epi8(bytes, index);
  }
  if (J == 2) {  // a_(2b+j)[i] = pixel 32b + 2i + j: lane L holds 8L.. and 32 + 8L..
    const __m512i index = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15));
    return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_shuffle_epi8(bytes, index));
  }
  // a_b[i] = pixel 16b + i: dword t of the result (pixels 4t..) is lane t % 4's dword t / 4
  return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), bytes);
}

// n bytes from `from` to `to` in 64-byte pieces, the last one masked: the rows copied here are
// short (7 to 112 bytes), where a memcpy call costs more than the copy.
void copy_bytes(uint8_t* to, const uint8_t* from, int64_t n) {
  for (; n >= 64; n -= 64, to += 64, from += 64) _mm512_storeu_si512(to, _mm512_loadu_si512(from));
  const __mmask64 tail = byte_mask(0, n);
  _mm512_mask_storeu_epi8(to, tail, _mm512_maskz_loadu_epi8(tail, from));
}

// What every block of a call reads.
struct Context {
  const QConvCall* call;
  const int32_t* weights;  // [K][rows][groups] dwords of 4 taps
  const int32_t* bias;     // with the zero-point term, by channel
  int64_t rows, groups;
  __m512i zero, flip;  // x_zero_point as x holds it; 0x80 (int8 x is read as x + 128)
};

// 64 consecutive pixels p0.. of a virtual row of channel c: kernel row r's input is row[r]
// (null: all padding), whose column 0 is the row's first valid byte and `width` its valid
// bytes (masked loads) or, unmasked, the caller guarantees every byte read is inside.
template <int S, bool kMasked, bool kSigned>
CPPCONV_TARGET_AVX512VNNI void accumulate(const Context& k, int64_t c, const uint8_t* const* row, int64_t col0,
                                          int64_t width, __m512i (&out)[4]) {
  constexpr int J = 4 / S;
  // Local accumulators: through `out` the compiler stores them back after every vpdpbusd.
  const __m512i bias = _mm512_set1_epi32(k.bias[c]);
  __m512i acc[4] = {bias, bias, bias, bias};
  const int32_t* weights = k.weights + c * k.rows * k.groups;
  for (int64_t g = 0; g < k.groups; ++g) {
    // Accumulator m covers pixels p0 + 16J (m / J) + J i + m % J: its load starts at
    // col0 + 64 (m / J) + S (m % J) + 4 g.
    int64_t col[4];
    __mmask64 mask[4];
    for (int m = 0; m < 4; ++m) {
      col[m] = col0 + 64 * (m / J) + S * (m % J) + 4 * g;
      mask[m] = kMasked ? byte_mask(-col[m], width - col[m]) : ~__mmask64(0);
    }
    for (int64_t r = 0; r < k.rows; ++r) {
      const __m512i w = _mm512_set1_epi32(weights[r * k.groups + g]);
      if (!row[r]) {
        const __m512i v = kSigned ? _mm512_xor_si512(k.zero, k.flip) : k.zero;
        for (int m = 0; m < 4; ++m) acc[m] = _mm512_dpbusd_epi32(acc[m], v, w);
        continue;
      }
      const uintptr_t at = reinterpret_cast<uintptr_t>(row[r]);
      for (int m = 0; m < 4; ++m) {
        // Masked-off bytes are not read (no fault past the row) and hold the zero point.
        const void* from = reinterpret_cast<const void*>(at + col[m]);
        const __m512i v = kMasked ? _mm512_mask_loadu_epi8(k.zero, mask[m], from) : _mm512_loadu_si512(from);
        acc[m] = _mm512_dpbusd_epi32(acc[m], kSigned ? _mm512_xor_si512(v, k.flip) : v, w);
      }
    }
  }
  for (int m = 0; m < 4; ++m) out[m] = acc[m];
}

// The block's 64 results in pixel order: requantized bytes (returned), or int32 / float32
// values into `values`.
template <int S>
CPPCONV_TARGET_AVX512VNNI __m512i finish(const QConvCall& call, int64_t c, const __m512i (&acc)[4], int32_t* values) {
  constexpr int J = 4 / S;
  if (call.output == QOutput::Quantized) {
    const __m512 multiplier = _mm512_set1_ps(call.multiplier[c]);
    // Clamped to the output range first (integer bounds, so clamping commutes with rounding);
    // every rounding (convert, multiply, to integer) is to nearest even by the instruction.
    const __m512 lo = _mm512_set1_ps(float(call.y_min - call.y_zero_point));
    const __m512 hi = _mm512_set1_ps(float(call.y_max - call.y_zero_point));
    const __m512i y_zero = _mm512_set1_epi32(call.y_zero_point);
    __m512i q[4];
    for (int m = 0; m < 4; ++m) {
      const __m512 v = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc[m], kRound), multiplier, kRound);
      q[m] = _mm512_add_epi32(_mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi), kRound), y_zero);
    }
    // In range already, so the saturating packs only narrow.
    const __m512i w01 = _mm512_packs_epi32(q[0], q[1]), w23 = _mm512_packs_epi32(q[2], q[3]);
    return pixel_order(call.y_signed ? _mm512_packs_epi16(w01, w23) : _mm512_packus_epi16(w01, w23), J);
  }
  alignas(64) int32_t lanes[4][16];
  if (call.output == QOutput::Int32) {
    for (int m = 0; m < 4; ++m) _mm512_store_si512(lanes[m], acc[m]);
  } else {
    const __m512 multiplier = _mm512_set1_ps(call.multiplier[c]);
    const __m512 lo = _mm512_set1_ps(call.f_min), hi = _mm512_set1_ps(call.f_max);
    for (int m = 0; m < 4; ++m) {
      const __m512 v = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc[m], kRound), multiplier, kRound);
      _mm512_store_ps(reinterpret_cast<float*>(lanes[m]), _mm512_min_ps(_mm512_max_ps(v, lo), hi));
    }
  }
  for (int m = 0; m < 4; ++m)
    for (int i = 0; i < 16; ++i) values[16 * J * (m / J) + J * i + m % J] = lanes[m][i];
  return _mm512_setzero_si512();
}

// Output rows [oh0, oh1) of plane (n, c, od), each row's blocks straight from x (masked loads
// do the padding).
template <int S>
CPPCONV_TARGET_AVX512VNNI void run_rows(const Context& k, int64_t n, int64_t c, int64_t od, int64_t oh0, int64_t oh1) {
  const QConvCall& call = *k.call;
  const ConvProblem& p = call.p;
  const int64_t H = p.in_h, W = p.in_w, D = p.in_d;
  const uint8_t* plane = static_cast<const uint8_t*>(call.x) + (n * p.in_channels + c) * D * H * W;
  const int64_t out_plane = ((n * p.out_channels + c) * p.out_d + od) * p.out_h;
  const uint8_t* row[kMaxRows];
  alignas(64) int32_t values[kPixels];
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    for (int64_t kd = 0; kd < p.kernel_d; ++kd)
      for (int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const int64_t d = od * p.stride_d + kd * p.dilation_d - p.pad_front;
        const int64_t h = oh * p.stride_h + kh * p.dilation_h - p.pad_top;
        row[kd * p.kernel_h + kh] = d >= 0 && d < D && h >= 0 && h < H ? plane + (d * H + h) * W : nullptr;
      }
    for (int64_t p0 = 0; p0 < p.out_w; p0 += kPixels) {
      __m512i acc[4];
      if (call.x_signed) accumulate<S, true, true>(k, c, row, S * p0 - p.pad_left, W, acc);
      else accumulate<S, true, false>(k, c, row, S * p0 - p.pad_left, W, acc);
      const __m512i bytes = finish<S>(call, c, acc, values);
      const int64_t count = std::min(kPixels, p.out_w - p0), at = (out_plane + oh) * p.out_w + p0;
      if (call.output == QOutput::Quantized)
        _mm512_mask_storeu_epi8(static_cast<uint8_t*>(call.y) + at, byte_mask(0, count), bytes);
      else std::memcpy(static_cast<int32_t*>(call.y) + at, values, size_t(count) * 4);  // int32 and float32 alike
    }
  }
}

// Planes whose rows are narrower than a block: the plane copied into `padded` with its padding
// (rows of pitch P = padded width), so that output pixel (oh, ow) is pixel q = oh P + ow of one
// long virtual row (stride S across rows and along them), its kernel row r at r dilation_h P;
// the blocks cover every q, the P - out_w past each row's end are computed and dropped.
struct Flat {
  int64_t pitch, rows, bytes;  // padded plane: pitch x rows, then slack for the last blocks
  int64_t pixels;              // virtual pixels: (out_h - 1) pitch + out_w
};

Flat flat_of(const ConvProblem& p) {
  Flat f;
  f.pitch = p.in_w + p.pad_left + p.pad_right;
  f.rows = p.in_h + p.pad_top + p.pad_bottom;
  f.pixels = (p.out_h - 1) * f.pitch + p.out_w;
  const int64_t blocks = (f.pixels + kPixels - 1) / kPixels;
  // The last load of the last block: S (blocks 64 - 1) + kernel rows' offset + 64 + 4 groups.
  f.bytes = std::max(f.pitch * f.rows, p.stride_w * blocks * kPixels + (p.kernel_h - 1) * p.dilation_h * f.pitch + 64 +
                                           4 * ((p.kernel_w + 3) / 4)) +
            64;
  return f;
}

// Whether a plane is done flat: where it has the geometry (2-D, the same stride across and
// along rows), at stride 1 (fewer blocks than rows' worth, no masks, no per-row set-up: 1.7x on
// 144 x 56 x 56), and for rows that would leave half a block's lanes idle.  At stride 2 the
// flat row computes and drops the skipped input rows' half, about what the masked rows cost.
bool use_flat(const ConvProblem& p) {
  return p.kernel_d == 1 && p.in_d == 1 && p.out_d == 1 && p.stride_h == p.stride_w &&
         (p.stride_w == 1 || p.out_w <= kPixels / 2);
}

// Depthwise, zero padding, strides 1, 2 and 4 along rows (dilation 1 there); a flat plane's
// padded copy in proportion to the plane's input and output, so that a padding which dwarfs the
// plane runs its live taps instead (LiveTaps, conv.h).  Not the s16 kernel's 16-lane tile
// bound: that one refused a single-channel 512 x 512 image, which then ran the reference.
bool accepts(const ConvProblem& p) {
  if (p.layout != Layout::NCHW || p.dilation_w != 1) return false;
  if (p.stride_w != 1 && p.stride_w != 2 && p.stride_w != 4) return false;
  if (p.kernel_d * p.kernel_h > kMaxRows) return false;
  if (p.pad_mode != PadMode::Zeros || p.batch < 1 || p.in_channels < 1) return false;
  if (p.groups != p.in_channels || p.out_channels != p.in_channels) return false;
  if (!use_flat(p)) return true;  // (rows read x in place: work in proportion to the output)
  const double planes = double(p.in_h) * double(p.in_w) + double(p.out_h) * double(p.out_w);
  return double(flat_of(p).bytes) <= 4.0 * planes + 4096.0;
}

// A thread's padded plane filled with the zero point, once per call: the planes copied in
// later write the same interior bytes, so the padding and the slack stay as set here.
void fill_padded(const Context& k, const Flat& f, uint8_t* padded) {
  for (int64_t i = 0; i < f.bytes; i += 64) _mm512_store_si512(padded + i, k.zero);  // (its size rounded up to 64)
}

template <int S>
CPPCONV_TARGET_AVX512VNNI void run_flat(const Context& k, const Flat& f, int64_t n, int64_t c, uint8_t* padded,
                                        int32_t* out) {
  const QConvCall& call = *k.call;
  const ConvProblem& p = call.p;
  const int64_t H = p.in_h, W = p.in_w;
  const uint8_t* plane = static_cast<const uint8_t*>(call.x) + (n * p.in_channels + c) * H * W;
  // Whole 64-byte stores (a masked store is slow on Zen 4): the bytes past a row's end are the
  // zero point, and land in its right padding and the next row, copied next.
  for (int64_t h = 0; h < H; ++h) {
    uint8_t* to = padded + (h + p.pad_top) * f.pitch + p.pad_left;
    const uint8_t* from = plane + h * W;
    for (int64_t j = 0; j < W; j += 64)
      _mm512_storeu_si512(to + j, _mm512_mask_loadu_epi8(k.zero, byte_mask(0, W - j), from + j));
  }
  const uint8_t* row[kMaxRows];
  for (int64_t r = 0; r < p.kernel_h; ++r) row[r] = padded + r * p.dilation_h * f.pitch;
  const bool quantized = call.output == QOutput::Quantized;
  uint8_t* bytes_out = reinterpret_cast<uint8_t*>(out);
  for (int64_t q0 = 0; q0 < f.pixels; q0 += kPixels) {
    __m512i acc[4];
    if (call.x_signed) accumulate<S, false, true>(k, c, row, S * q0, f.bytes, acc);
    else accumulate<S, false, false>(k, c, row, S * q0, f.bytes, acc);
    const __m512i bytes = finish<S>(call, c, acc, out + q0);
    if (quantized) _mm512_storeu_si512(bytes_out + q0, bytes);
  }
  const int64_t at = (n * p.out_channels + c) * p.out_h * p.out_w;
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    uint8_t* y = static_cast<uint8_t*>(call.y) + at + oh * p.out_w;
    if (quantized && p.out_w <= 64 && oh * p.out_w + 64 <= p.out_h * p.out_w)  // (past the row: later rows')
      _mm512_storeu_si512(y, _mm512_loadu_si512(bytes_out + oh * f.pitch));
    else if (quantized) copy_bytes(y, bytes_out + oh * f.pitch, p.out_w);
    else std::memcpy(static_cast<int32_t*>(call.y) + at + oh * p.out_w, out + oh * f.pitch, size_t(p.out_w) * 4);
  }
}

template <int S>
void run_strided(const QConvCall& call, const Context& k) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  const int64_t planes = p.batch * p.out_channels * p.out_d;
  if (use_flat(p)) {
    const Flat f = flat_of(p);
    // Each thread's padded plane and output plane (int32 values, or bytes), allocated before the
    // parallel region: a failed allocation throws on the caller's thread.
    const size_t out_bytes = size_t(f.pixels + kPixels) * 4, stride = round64(size_t(f.bytes)) + round64(out_bytes);
    std::vector<unsigned char> scratch(stride * size_t(threads) + 64);
    unsigned char* base = reinterpret_cast<unsigned char*>(round64(reinterpret_cast<uintptr_t>(scratch.data())));
    parallel_region(threads, [&] {
      unsigned char* mine = base + stride * size_t(thread_id());
      fill_padded(k, f, mine);
#pragma omp for schedule(static)
      for (int64_t plane = 0; plane < planes; ++plane)
        run_flat<S>(k, f, plane / p.out_channels, plane % p.out_channels, mine,
                    reinterpret_cast<int32_t*>(mine + round64(size_t(f.bytes))));
    });
    return;
  }
  // Bands of rows: whole planes where there are enough of them to share out.
  const int64_t bands = std::min(p.out_h, std::max<int64_t>(1, (4 * threads + planes - 1) / planes));
  const int64_t band_rows = (p.out_h + bands - 1) / bands;
  parallel_region(threads, [&] {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < planes * bands; ++item) {
      const int64_t plane = item / bands, band = item % bands;
      const int64_t od = plane % p.out_d, c = plane / p.out_d % p.out_channels, n = plane / (p.out_d * p.out_channels);
      run_rows<S>(k, n, c, od, band * band_rows, std::min(p.out_h, (band + 1) * band_rows));
    }
  });
}

void run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const Packing packing = packing_of(p);
  const unsigned char* packed = static_cast<const unsigned char*>(call.packed);
  // The zero point as the kernel reads x (int8 shifted to uint8), and its term in the bias,
  // modulo 2^32.
  const int32_t zero = call.x_signed ? call.x_zero_point + 128 : call.x_zero_point;
  const int32_t* sums = reinterpret_cast<const int32_t*>(packed + packing.sums);
  const int32_t* bias = reinterpret_cast<const int32_t*>(packed + packing.bias);
  std::vector<int32_t> folded(size_t(p.out_channels));
  for (int64_t c = 0; c < p.out_channels; ++c)
    folded[size_t(c)] = int32_t(uint32_t(bias[c]) - uint32_t(zero) * uint32_t(sums[c]));
  Context k;
  k.call = &call;
  k.weights = reinterpret_cast<const int32_t*>(packed + packing.weights);
  k.bias = folded.data();
  k.rows = packing.rows, k.groups = packing.groups;
  k.zero = _mm512_set1_epi8(char(call.x_zero_point));  // the byte x holds
  k.flip = _mm512_set1_epi8(char(0x80));
  if (p.stride_w == 1) run_strided<1>(call, k);
  else if (p.stride_w == 2) run_strided<2>(call, k);
  else run_strided<4>(call, k);
}

// ---- Channels-last (NHWC): 64 channels in lanes, one output pixel at a time.  Four taps'
// 64-byte loads are interleaved into dwords by byte and word unpacks (within 128-bit lanes), so
// vector k holds channels 16L + 4k + i (lane L, dword i) with their four taps; the weights are
// packed in that order, [block of 64][group of 4 taps][k][64 bytes], and after
// requantization the saturating packs of the four vectors put the channels back in order.  A
// tap in the padding reads the zero point; the taps past the last of a group have weight 0.

struct ChannelPacking {
  int64_t taps, tap_groups, blocks;
  size_t weights, sums, bias, bytes;
};

ChannelPacking channel_packing_of(const ConvProblem& p) {
  ChannelPacking k;
  const size_t K = size_t(p.out_channels);
  k.taps = p.kernel_d * p.kernel_h * p.kernel_w;
  k.tap_groups = (k.taps + 3) / 4;
  k.blocks = (p.out_channels + 63) / 64;
  k.weights = 0;
  k.sums = k.weights + size_t(k.blocks * k.tap_groups) * 256;
  k.bias = k.sums + K * 4;
  k.bytes = round64(k.bias + K * 4);
  return k;
}

// Where channel c of a 64-channel block sits in the interleaved order (dword index 0..63).
int64_t interleaved(int64_t c) { return (c % 16 / 4) * 16 + (c / 16) * 4 + c % 4; }

bool channel_accepts(const ConvProblem& p) {
  if (p.kernel_d * p.kernel_h > kMaxRows || p.kernel_d * p.kernel_h * p.kernel_w > kMaxTaps) return false;
  return p.layout == Layout::NHWC && qconv_depthwise_s16_4x16.accepts(p);
}

size_t channel_packed_bytes(const ConvProblem& p) {
  if (p.groups != p.in_channels || p.out_channels != p.in_channels) return 0;
  return channel_packing_of(p).bytes;
}

bool channel_pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  if (!weights_fit_int8(p, weight)) return false;
  const ChannelPacking k = channel_packing_of(p);
  unsigned char* base = static_cast<unsigned char*>(packed);
  std::memset(base, 0, k.bytes);
  int8_t* w = reinterpret_cast<int8_t*>(base + k.weights);
  int32_t* sums = reinterpret_cast<int32_t*>(base + k.sums);
  int32_t* b = reinterpret_cast<int32_t*>(base + k.bias);
  for (int64_t c = 0; c < p.out_channels; ++c) {
    int32_t sum = 0;
    const int64_t block = c / 64, slot = interleaved(c % 64);
    for (int64_t t = 0; t < k.taps; ++t) {
      const int16_t v = weight[c * k.taps + t];
      sum += v;
      w[((block * k.tap_groups + t / 4) * 64 + slot) * 4 + t % 4] = int8_t(v);
    }
    sums[c] = sum;
    b[c] = bias ? bias[c] : 0;
  }
  return true;
}

// Output rows [row0, row1) (over out_d x out_h) of image n, channel block `block`.
template <bool kSigned>
CPPCONV_TARGET_AVX512VNNI void run_channel_rows(const QConvCall& call, const ChannelPacking& k,
                                                const int32_t* bias_slots, const float* multiplier_slots, int64_t n,
                                                int64_t block, int64_t row0, int64_t row1) {
  const ConvProblem& p = call.p;
  const int64_t C = p.in_channels, D = p.in_d, H = p.in_h, W = p.in_w, c0 = block * 64;
  const int64_t count = std::min<int64_t>(64, C - c0);
  const __mmask64 lanes = byte_mask(0, count);
  const uint8_t* x = static_cast<const uint8_t*>(call.x) + n * D * H * W * C + c0;
  const __m512i zero = _mm512_set1_epi8(char(call.x_zero_point)), flip = _mm512_set1_epi8(char(0x80));
  const int8_t* weights = reinterpret_cast<const int8_t*>(static_cast<const unsigned char*>(call.packed) + k.weights) +
                          block * k.tap_groups * 256;
  __m512i bias[4], multiplier[4];
  for (int v = 0; v < 4; ++v) {
    bias[v] = _mm512_loadu_si512(bias_slots + block * 64 + 16 * v);
    multiplier[v] = _mm512_castps_si512(_mm512_loadu_ps(multiplier_slots + block * 64 + 16 * v));
  }
  const __m512 lo =
      _mm512_set1_ps(call.output == QOutput::Quantized ? float(call.y_min - call.y_zero_point) : call.f_min);
  const __m512 hi =
      _mm512_set1_ps(call.output == QOutput::Quantized ? float(call.y_max - call.y_zero_point) : call.f_max);
  const __m512i y_zero = _mm512_set1_epi32(call.y_zero_point);
  const int64_t plane_out = p.out_d * p.out_h * p.out_w;
  const int64_t rows = p.kernel_d * p.kernel_h;
  const uint8_t* row_at[kMaxRows];  // each kernel row's input row, null in the padding
  const uint8_t* tap_at[kMaxTaps];  // each tap's input pixel, null in the padding
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t od = row / p.out_h, oh = row % p.out_h;
    for (int64_t a = 0; a < p.kernel_d; ++a)
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t d = od * p.stride_d + a * p.dilation_d - p.pad_front;
        const int64_t h = oh * p.stride_h + i * p.dilation_h - p.pad_top;
        row_at[a * p.kernel_h + i] = d >= 0 && d < D && h >= 0 && h < H ? x + (d * H + h) * W * C : nullptr;
      }
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      for (int64_t r = 0, t = 0; r < rows; ++r)
        for (int64_t j = 0; j < p.kernel_w; ++j, ++t) {
          const int64_t w = ow * p.stride_w + j * p.dilation_w - p.pad_left;
          tap_at[t] = row_at[r] && w >= 0 && w < W ? row_at[r] + w * C : nullptr;
        }
      __m512i acc[4] = {bias[0], bias[1], bias[2], bias[3]};
      for (int64_t g = 0; g < k.tap_groups; ++g) {
        __m512i tap[4];
        for (int u = 0; u < 4; ++u) {
          const int64_t t = 4 * g + u;
          if (t >= k.taps) {
            tap[u] = tap[0];  // weight 0
            continue;
          }
          const __m512i v = tap_at[t] ? _mm512_mask_loadu_epi8(zero, lanes, tap_at[t]) : zero;
          tap[u] = kSigned ? _mm512_xor_si512(v, flip) : v;
        }
        const __m512i ab_lo = _mm512_unpacklo_epi8(tap[0], tap[1]), ab_hi = _mm512_unpackhi_epi8(tap[0], tap[1]);
        const __m512i cd_lo = _mm512_unpacklo_epi8(tap[2], tap[3]), cd_hi = _mm512_unpackhi_epi8(tap[2], tap[3]);
        const int8_t* wg = weights + g * 256;
        acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_unpacklo_epi16(ab_lo, cd_lo), _mm512_loadu_si512(wg));
        acc[1] = _mm512_dpbusd_epi32(acc[1], _mm512_unpackhi_epi16(ab_lo, cd_lo), _mm512_loadu_si512(wg + 64));
        acc[2] = _mm512_dpbusd_epi32(acc[2], _mm512_unpacklo_epi16(ab_hi, cd_hi), _mm512_loadu_si512(wg + 128));
        acc[3] = _mm512_dpbusd_epi32(acc[3], _mm512_unpackhi_epi16(ab_hi, cd_hi), _mm512_loadu_si512(wg + 192));
      }
      const int64_t at = (n * plane_out + row * p.out_w + ow) * C + c0;
      if (call.output == QOutput::Quantized) {
        __m512i q[4];
        for (int v = 0; v < 4; ++v) {
          const __m512 f =
              _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc[v], kRound), _mm512_castsi512_ps(multiplier[v]), kRound);
          q[v] = _mm512_add_epi32(_mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(f, lo), hi), kRound), y_zero);
        }
        // The packs undo the interleaving: lane L gets channels 16L.. in order (values in range).
        const __m512i w01 = _mm512_packs_epi32(q[0], q[1]), w23 = _mm512_packs_epi32(q[2], q[3]);
        const __m512i bytes = call.y_signed ? _mm512_packs_epi16(w01, w23) : _mm512_packus_epi16(w01, w23);
        _mm512_mask_storeu_epi8(static_cast<uint8_t*>(call.y) + at, lanes, bytes);
        continue;
      }
      alignas(64) int32_t slots[64];
      for (int v = 0; v < 4; ++v) {
        if (call.output == QOutput::Int32) {
          _mm512_store_si512(slots + 16 * v, acc[v]);
        } else {
          const __m512 f =
              _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc[v], kRound), _mm512_castsi512_ps(multiplier[v]), kRound);
          _mm512_store_ps(reinterpret_cast<float*>(slots) + 16 * v, _mm512_min_ps(_mm512_max_ps(f, lo), hi));
        }
      }
      int32_t* y = static_cast<int32_t*>(call.y) + at;  // int32 and float32 alike
      for (int64_t c = 0; c < count; ++c) y[c] = slots[interleaved(c)];
    }
  }
}

void channel_run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const ChannelPacking k = channel_packing_of(p);
  const unsigned char* packed = static_cast<const unsigned char*>(call.packed);
  // The bias with the zero point's term (modulo 2^32) and the multipliers, in the interleaved
  // order, whole blocks.
  const int32_t zero = call.x_signed ? call.x_zero_point + 128 : call.x_zero_point;
  const int32_t* sums = reinterpret_cast<const int32_t*>(packed + k.sums);
  const int32_t* bias = reinterpret_cast<const int32_t*>(packed + k.bias);
  std::vector<int32_t> bias_slots(size_t(k.blocks * 64), 0);
  std::vector<float> multiplier_slots(size_t(k.blocks * 64), 0.0f);
  for (int64_t c = 0; c < p.out_channels; ++c) {
    const size_t slot = size_t(c / 64 * 64 + interleaved(c % 64));
    bias_slots[slot] = int32_t(uint32_t(bias[c]) - uint32_t(zero) * uint32_t(sums[c]));
    if (call.output != QOutput::Int32) multiplier_slots[slot] = call.multiplier[c];
  }
  const int64_t rows = p.out_d * p.out_h, items = p.batch * rows * k.blocks;
  parallel_region(call.num_threads, [&] {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t block = item % k.blocks, row = item / k.blocks % rows, n = item / (k.blocks * rows);
      if (call.x_signed)
        run_channel_rows<true>(call, k, bias_slots.data(), multiplier_slots.data(), n, block, row, row + 1);
      else run_channel_rows<false>(call, k, bias_slots.data(), multiplier_slots.data(), n, block, row, row + 1);
    }
  });
}

// ---- Channels-first images of small planes: the row kernel's fixed cost a plane (a copy, a
// block, the rows' stores) outweighs its pixels, where the channels kernel's cost is per pixel.
// x is transposed to channels-last, the channels kernel runs, its result is transposed back.
constexpr int64_t kSmallInPlane = 256, kSmallOutPlane = 64;  // (docs/tuning.md, "int8 gaps")

ConvProblem channels_last(const ConvProblem& p) {
  ConvProblem q = p;
  q.layout = Layout::NHWC;
  return q;
}

bool transposed_accepts(const ConvProblem& p) {
  if (p.layout != Layout::NCHW || p.in_channels < 64) return false;
  if (p.in_d * p.in_h * p.in_w > kSmallInPlane || p.out_d * p.out_h * p.out_w > kSmallOutPlane) return false;
  return channel_accepts(channels_last(p));
}

size_t transposed_packed_bytes(const ConvProblem& p) { return channel_packed_bytes(channels_last(p)); }

bool transposed_pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  return channel_pack(channels_last(p), weight, bias, packed);
}

void transposed_run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const int64_t C = p.in_channels, in_plane = p.in_d * p.in_h * p.in_w, out_plane = p.out_d * p.out_h * p.out_w;
  const int64_t value = call.output == QOutput::Quantized ? 1 : 4;  // bytes an output value
  std::vector<uint8_t> x_last(size_t(p.batch * in_plane * C));
  std::vector<uint8_t> y_last(size_t(p.batch * out_plane * C * value));
  for (int64_t n = 0; n < p.batch; ++n)
    qconv::transpose_bytes(static_cast<const uint8_t*>(call.x) + n * C * in_plane, C, in_plane,
                           x_last.data() + n * in_plane * C);
  QConvCall last = call;
  last.p = channels_last(p);
  last.x = x_last.data();
  last.y = y_last.data();
  // One image of a small plane is too little work to wake another thread for (docs/tuning.md,
  // "Small depthwise planes channels-last"), so an image a thread at most.
  last.num_threads = int(std::min<int64_t>(call.num_threads, p.batch));
  channel_run(last);
  uint8_t* y = static_cast<uint8_t*>(call.y);
  for (int64_t n = 0; n < p.batch; ++n) {
    const uint8_t* from = y_last.data() + n * out_plane * C * value;
    uint8_t* to = y + n * C * out_plane * value;
    if (value == 1) {
      qconv::transpose_bytes(from, out_plane, C, to);
      continue;
    }
    for (int64_t i = 0; i < out_plane; ++i)  // (int32 and float32 results: 4 bytes a value)
      for (int64_t c = 0; c < C; ++c) std::memcpy(to + (c * out_plane + i) * 4, from + (i * C + c) * 4, 4);
  }
}

}  // namespace

const QConvAlgorithm qconv_depthwise_transposed_vnni_1x64 = {"qconv_depthwise_transposed_vnni__" CPPCONV_ISA_NAME
                                                             "_1x64",
                                                             transposed_accepts,
                                                             transposed_packed_bytes,
                                                             transposed_pack,
                                                             transposed_run,
                                                             kCpuAvx512Vnni};
const QConvAlgorithm qconv_depthwise_rows_vnni_1x64 = {
    "qconv_depthwise_rows_vnni__" CPPCONV_ISA_NAME "_1x64", accepts, packed_bytes, pack, run, kCpuAvx512Vnni};
const QConvAlgorithm qconv_depthwise_channels_vnni_1x64 = {"qconv_depthwise_channels_vnni__" CPPCONV_ISA_NAME "_1x64",
                                                           channel_accepts,
                                                           channel_packed_bytes,
                                                           channel_pack,
                                                           channel_run,
                                                           kCpuAvx512Vnni};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
