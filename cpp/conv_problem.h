// Plain descriptions of a convolution call, shared by the driver and every per-ISA kernel.
// Only data lives here (no inline functions): this header is included by sources that are
// compiled once per ISA with different flags, and shared inline code there would break the
// one-definition rule.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cppconv {

// Padded sizes, paddings and kernel reaches must stay below this: sums of three of them then
// still fit int64.  The bindings refuse larger ones with ValueError.
constexpr int64_t kMaxIndexExtent = int64_t(1) << 61;

// BFloat16: bfloat16 operands whose products are summed in float32 (the bias float32 too).
enum class DType : int { Float32 = 0, Float64 = 1, BFloat16 = 2 };
// What the driver needs to know of each data type, by DType code: a new type is one more row
// (and its kernels' entries in the algorithm lists).
struct DTypeInfo {
  const char* name;   // NumPy's (ml_dtypes' for bfloat16)
  size_t size;        // bytes per element
  size_t bias_size;   // bytes per bias element: the accumulator's type
};
constexpr DTypeInfo kDTypes[] = {{"float32", 4, 4}, {"float64", 8, 8}, {"bfloat16", 2, 4}};
// Channels-first or channels-last, whatever the rank: NCHW stands for NCW and NCDHW too.
enum class Layout : int { NCHW = 0, NHWC = 1 };
// PyTorch's padding modes, and NumPy's and SciPy's "symmetric": Reflect mirrors about the edge
// value (d c b | a b c d), Symmetric repeats it (c b a | a b c d).
enum class PadMode : int { Zeros = 0, Reflect = 1, Replicate = 2, Circular = 3, Symmetric = 4 };
enum class Activation : int {
  None = 0,
  Relu = 1,
  Relu6 = 2,
  LeakyRelu = 3,
  Sigmoid = 4,
  Tanh = 5,
  Silu = 6,
  HardSigmoid = 7,
  HardSwish = 8
};
// leaky_relu's slope below zero when the activation is named alone: PyTorch's and ONNX's
// default (exported to Python as _native.DEFAULT_NEGATIVE_SLOPE).
inline constexpr double kDefaultNegativeSlope = 0.01;
// An activation with its parameter, as a kernel applies it to the outputs it stores.
struct FusedActivation {
  Activation kind = Activation::None;
  double negative_slope = kDefaultNegativeSlope;  // leaky_relu's (PyTorch's negative_slope, ONNX's alpha)
};
// How far a float32 result may stray from the exact one, as PyTorch's float32 precision modes
// name it.  Highest: within the direct sum's rounding, 1e-5 * sum |w| |x| per output.  High:
// algorithms that mix a neighbourhood's values (Winograd) may run; their bound scales with
// that neighbourhood instead (README, "Guarantees").  Ordered from strict to loose.
enum class Precision : int { Highest = 0, High = 1 };

// Everything that fixes the arithmetic of one convolution, of spatial rank 1, 2 or 3.  Sizes
// are in elements.  The spatial axes are (d, h, w); a rank-2 problem has depth 1 (in_d,
// kernel_d, out_d 1, no depth padding) and a rank-1 problem also height 1, so a 1-D or 2-D
// problem is the 3-D one with unit axes.  The per-ISA kernels take problems of depth 1 (the
// driver, conv.cpp, lowers deeper ones onto them) unless they say they take the depth
// (ConvAlgorithm::takes_depth: channels-last depthwise in place), and the reference takes every rank.
struct ConvProblem {
  int rank = 2;  // as the caller sees it (shapes, names, messages); the arithmetic is 3-D
  int64_t batch = 0, in_channels = 0, in_d = 1, in_h = 0, in_w = 0;
  int64_t out_channels = 0, kernel_d = 1, kernel_h = 0, kernel_w = 0;  // weight is (K, C/groups, kd, kh, kw)
  int64_t out_d = 1, out_h = 0, out_w = 0;
  int64_t stride_d = 1, stride_h = 1, stride_w = 1, dilation_d = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_front = 0, pad_back = 0, pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t groups = 1;
  DType dtype = DType::Float32;
  Layout layout = Layout::NCHW;  // of both input and output
  PadMode pad_mode = PadMode::Zeros;
  Activation activation = Activation::None;
  double negative_slope = kDefaultNegativeSlope;  // leaky_relu's (see FusedActivation)
  Precision precision = Precision::Highest;  // the loosest error bound this call accepts
  // Whether these weights serve many calls (a layer) or this one call alone: an algorithm that
  // repacks weights is only worth it where the packing pays for itself.
  bool weights_reused = false;
  // BFloat16 problems: x, or y, is a float32 array rather than a bfloat16 one (a float32
  // layer's compute_dtype="bfloat16": x's values are rounded to bfloat16 as they are read,
  // the result is kept in float32).
  bool x_float32 = false, y_float32 = false;
  // A gathered depth problem read in place (see ConvCall::depth_src): kd, the depth taps whose
  // slices make up each group's input channels; 0 for an ordinary problem.
  int64_t depth_taps = 0;
};

// Element strides of a 4-D tensor, in logical (n, c, h, w) order whatever the memory layout.
// (A kernel's problem has depth 1: see ConvProblem.)
struct Strides4 {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// One call, ready for a kernel: pointers, strides and the padding resolved into index maps.
struct ConvCall {
  ConvProblem p;
  const void* x = nullptr;         // input, strides x_stride
  const void* weight = nullptr;    // (K, C/groups, kd, kh, kw), C-contiguous
  const void* packed = nullptr;    // the algorithm's packed weights, or nullptr if it packs none
  const void* bias = nullptr;      // (K,) or nullptr
  void* y = nullptr;               // output, strides y_stride
  // A tensor of y's type, shape and strides added to each output before the activation (a
  // residual connection), or nullptr.  It never overlaps y: the kernels store partial sums in
  // y before they add it.  Only algorithms with adds_residual take one (ConvAlgorithm).
  const void* residual = nullptr;
  Strides4 x_stride, y_stride;
  // From one depth slice to the next (a deep problem's x and y: the reference's, and those of
  // the algorithms that take the depth, ConvAlgorithm::takes_depth).
  int64_t x_depth_stride = 0, y_depth_stride = 0;
  // Padded coordinate (0 = first padded row/column) -> source row/column, or -1 for a zero.
  // Sizes in_h + pad_top + pad_bottom and in_w + pad_left + pad_right.  They encode the
  // padding mode, so kernels never branch on it.  (Null for the reference, which works the
  // sources out itself.)
  const int64_t* row_src = nullptr;
  const int64_t* col_src = nullptr;
  // p.depth_taps = kd > 0: batch item n's input channel c * kd + a of group g is channel
  // g * group_in / kd + c of the depth slice at x + depth_src[n * kd + a] (elements; -1: zero
  // padding), through x_stride's c, h and w.  The depth padding is resolved here as the other
  // axes' is in row_src and col_src.
  const int64_t* depth_src = nullptr;
  int num_threads = 1;
};

}  // namespace cppconv
