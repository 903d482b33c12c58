// cppconv's kernel tests, without Python: every convolution, pooling and transposed-convolution
// algorithm of every ISA this CPU runs, forced on problems around its register tiles and vector
// widths (as XNNPACK tests each microkernel), against the reference; and 1-D and 3-D problems
// through ConvPlan::run's lowerings under each ISA.  Prints the cases each algorithm ran and
// exits 1 on any mismatch, or when an algorithm ran fewer than kMinCases of them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bf16.h"
#include "conv.h"
#include "conv_transpose.h"
#include "conv_transpose_reference.h"
#include "dispatch.h"
#include "pool.h"
#include "pool_reference.h"
#include "qconv.h"
#include "reference.h"

using namespace cppconv;

namespace {

// Each algorithm must meet the sweep this often: a change to its accepts() that leaves it
// untested is a failure, not a silent gap.
constexpr int kMinCases = 3;
constexpr int kThreads = 2;  // a cap: small problems still run on one

// ------------------------------------------------------------------------------------------
// Reporting and data

int g_failures = 0;
std::map<std::string, int> g_cases;  // accepted cases per algorithm (and per lowering)

void fail(const std::string& what) {
  if (g_failures < 40) std::fprintf(stderr, "FAIL %s\n", what.c_str());
  ++g_failures;
}

std::mt19937_64 g_rng(20261205);

int64_t uniform(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g_rng); }
template <class T>
T pick(const std::vector<T>& v) {
  return v[size_t(uniform(0, int64_t(v.size()) - 1))];
}
bool chance(double p) { return std::bernoulli_distribution(p)(g_rng); }

double rounded_to_bf16(double v) { return bf16_to_float(float_to_bf16(float(v))); }

// Values in [-1, 1], rounded to the dtype so that the float64 oracle sees exactly the kernel's
// inputs.
std::vector<double> random_values(size_t n, DType dtype) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (double& e : v) {
    e = u(g_rng);
    if (dtype == DType::Float32) e = double(float(e));
    if (dtype == DType::BFloat16) e = rounded_to_bf16(e);
  }
  return v;
}

std::vector<unsigned char> to_bytes(const std::vector<double>& v, DType dtype) {
  std::vector<unsigned char> out(v.size() * kDTypes[int(dtype)].size);
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::BFloat16) {
      const uint16_t h = float_to_bf16(float(v[i]));
      std::memcpy(out.data() + 2 * i, &h, 2);
    } else if (dtype == DType::Float32) {
      const float f = float(v[i]);
      std::memcpy(out.data() + 4 * i, &f, 4);
    } else {
      std::memcpy(out.data() + 8 * i, &v[i], 8);
    }
  }
  return out;
}

std::vector<double> from_bytes(const std::vector<unsigned char>& b, DType dtype) {
  const size_t size = kDTypes[int(dtype)].size, n = b.size() / size;
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::BFloat16) {
      uint16_t h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      v[i] = bf16_to_float(h);
    } else if (dtype == DType::Float32) {
      float f;
      std::memcpy(&f, b.data() + 4 * i, 4);
      v[i] = f;
    } else {
      std::memcpy(&v[i], b.data() + 8 * i, 8);
    }
  }
  return v;
}

std::vector<double> absolute(std::vector<double> v) {
  for (double& e : v) e = std::fabs(e);
  return v;
}

// |y - ref| <= rtol * bound + 4 units in the last place of ref, y finite.  The ulps are the
// activation's own evaluation in the output's dtype: a float32 sigmoid of a tiny sum is 0.5 to
// 1-2 ulps, far past rtol * bound.  A bfloat16 output adds its own rounding, 2^-8 of the value
// it rounds.  Empty when it holds, else the first miss.
std::string mismatch(const std::vector<double>& y, const std::vector<double>& ref, const std::vector<double>& bound,
                     double rtol, DType dtype) {
  const double eps = 4 * (dtype == DType::Float64 ? 0x1p-52 : 0x1p-23),
               rounding = dtype == DType::BFloat16 ? 0x1p-8 : 0;
  int bad = 0;
  std::string first;
  for (size_t i = 0; i < y.size(); ++i) {
    const double err = std::fabs(y[i] - ref[i]), tol = (1 + rounding) * (rtol * bound[i] + eps * std::fabs(ref[i])) +
                                                       rounding * std::fabs(ref[i]) + 1e-30;
    if (!(err <= tol)) {
      if (bad++ == 0) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "output %zu: got %.9g, want %.9g (error %.3g, allowed %.3g)", i, y[i], ref[i],
                      err, tol);
        first = buf;
      }
    }
  }
  if (bad) first += " [" + std::to_string(bad) + " of " + std::to_string(y.size()) + " outputs off]";
  return first;
}

const char* layout_name(Layout l) { return l == Layout::NCHW ? "channels-first" : "channels-last"; }
const char* mode_name(PadMode m) {
  static const char* names[] = {"zeros", "reflect", "replicate", "circular", "symmetric"};
  return names[int(m)];
}
const char* dtype_name(DType d) { return kDTypes[int(d)].name; }

// The fields convolution and transposed-convolution problems share (same names), for messages.
template <class Problem>
std::string geometry(const Problem& p) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "N=%lld C=%lld in=%lldx%lldx%lld K=%lld kernel=%lldx%lldx%lld stride=%lldx%lldx%lld "
                "dilation=%lldx%lldx%lld pad=(%lld,%lld,%lld,%lld,%lld,%lld) groups=%lld out=%lldx%lldx%lld %s %s "
                "activation=%d slope=%g",
                (long long)p.batch, (long long)p.in_channels, (long long)p.in_d, (long long)p.in_h, (long long)p.in_w,
                (long long)p.out_channels, (long long)p.kernel_d, (long long)p.kernel_h, (long long)p.kernel_w,
                (long long)p.stride_d, (long long)p.stride_h, (long long)p.stride_w, (long long)p.dilation_d,
                (long long)p.dilation_h, (long long)p.dilation_w, (long long)p.pad_front, (long long)p.pad_back,
                (long long)p.pad_top, (long long)p.pad_bottom, (long long)p.pad_left, (long long)p.pad_right,
                (long long)p.groups, (long long)p.out_d, (long long)p.out_h, (long long)p.out_w, layout_name(p.layout),
                dtype_name(p.dtype), int(p.activation), p.negative_slope);
  return buf;
}

std::string describe(const ConvProblem& p) {
  return "conv" + std::to_string(p.rank) + "d " + geometry(p) + " padding_mode=" + mode_name(p.pad_mode) +
         " precision=" + (p.precision == Precision::High ? "high" : "highest") +
         " reused=" + std::to_string(int(p.weights_reused));
}

// ------------------------------------------------------------------------------------------
// Convolution

// One axis of a problem with `out` outputs: its input size and 'same'-like symmetric padding
// (none where the input would be empty), as tests/test_conv2d.py's _geometry_case.
struct Axis {
  int64_t in, kernel, stride, dilation, before, after;
};
Axis axis_for(int64_t out, int64_t kernel, int64_t stride, int64_t dilation, bool pad) {
  int64_t before = pad ? (kernel - 1) * dilation / 2 : 0;
  int64_t in = (out - 1) * stride + dilation * (kernel - 1) + 1 - 2 * before;
  if (in < 1) {
    before = 0;
    in = (out - 1) * stride + dilation * (kernel - 1) + 1;
  }
  return {in, kernel, stride, dilation, before, before};
}

struct ConvGeometry {
  int rank = 2;
  int64_t N = 1, C = 1, K = 1, groups = 1;
  Axis d{1, 1, 1, 1, 0, 0}, h{1, 1, 1, 1, 0, 0}, w{1, 1, 1, 1, 0, 0};
  PadMode mode = PadMode::Zeros;
  Layout layout = Layout::NCHW;
  Activation activation = Activation::None;
  double negative_slope = kDefaultNegativeSlope;
  DType dtype = DType::Float32;
  Precision precision = Precision::Highest;
  bool bias = true, reused = false;
};

// A mode PyTorch accepts for this padding (reflect: below the size; circular: at most it;
// symmetric, NumPy's, takes any).
PadMode valid_mode(PadMode m, const Axis& a) {
  const int64_t most = std::max(a.before, a.after);
  if ((m == PadMode::Reflect && most >= a.in) || (m == PadMode::Circular && most > a.in)) return PadMode::Replicate;
  return m;
}

ConvProblem make_problem(const ConvGeometry& g) {
  ConvProblem p;
  p.rank = g.rank;
  p.batch = g.N;
  p.in_channels = g.C;
  p.out_channels = g.K;
  p.groups = g.groups;
  p.in_d = g.d.in, p.kernel_d = g.d.kernel, p.stride_d = g.d.stride, p.dilation_d = g.d.dilation;
  p.pad_front = g.d.before, p.pad_back = g.d.after;
  p.in_h = g.h.in, p.kernel_h = g.h.kernel, p.stride_h = g.h.stride, p.dilation_h = g.h.dilation;
  p.pad_top = g.h.before, p.pad_bottom = g.h.after;
  p.in_w = g.w.in, p.kernel_w = g.w.kernel, p.stride_w = g.w.stride, p.dilation_w = g.w.dilation;
  p.pad_left = g.w.before, p.pad_right = g.w.after;
  p.out_d = conv_output_size(p.in_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back);
  p.out_h = conv_output_size(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom);
  p.out_w = conv_output_size(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right);
  p.pad_mode = valid_mode(valid_mode(valid_mode(g.mode, g.d), g.h), g.w);
  p.layout = g.layout;
  p.activation = g.activation;
  p.negative_slope = g.negative_slope;
  p.dtype = g.dtype;
  p.precision = g.precision;
  p.weights_reused = g.reused;
  return p;
}

int64_t conv_inputs(const ConvProblem& p) { return p.batch * p.in_channels * p.in_d * p.in_h * p.in_w; }
int64_t conv_outputs(const ConvProblem& p) { return p.batch * p.out_channels * p.out_d * p.out_h * p.out_w; }
int64_t conv_weights(const ConvProblem& p) {
  return p.out_channels * (p.in_channels / p.groups) * p.kernel_d * p.kernel_h * p.kernel_w;
}

// A problem with its data, and the oracle: the float64 reference on the same values, and the
// bound sum |w| |x| + |b| of each output (that reference on absolute values).
struct ConvCase {
  ConvProblem p;
  std::vector<double> x, w, b;  // b empty: no bias
  std::vector<unsigned char> xb, wb, bb;
  std::vector<double> ref, bound, patch_bound;
};

std::vector<double> run_conv(const ConvProblem& p, const std::vector<unsigned char>& x,
                             const std::vector<unsigned char>& w, const std::vector<unsigned char>& b,
                             const ConvAlgorithm* forced, int threads) {
  ConvPlan plan(p.dtype, w.data(), b.empty() ? nullptr : b.data(), p.out_channels, p.in_channels / p.groups, p.kernel_d,
                p.kernel_h, p.kernel_w, /*copy=*/false, p.weights_reused);
  const DType out = p.y_float32 ? DType::Float32 : p.dtype;
  std::vector<unsigned char> y(size_t(conv_outputs(p)) * kDTypes[int(out)].size);
  plan.run(p, x.data(), y.data(), forced, threads);
  return from_bytes(y, out);
}

ConvCase make_conv_case(const ConvProblem& p, bool bias) {
  ConvCase c;
  c.p = p;
  ConvProblem q = p;
  // A BFloat16 problem's bias is float32; its x float32 where p.x_float32 says, the kernel
  // rounding it to the bfloat16 values the oracle sees.
  const bool bf16 = p.dtype == DType::BFloat16;
  c.x = random_values(size_t(conv_inputs(p)), p.x_float32 ? DType::Float32 : p.dtype);
  c.w = random_values(size_t(conv_weights(p)), p.dtype);
  if (bias) c.b = random_values(size_t(p.out_channels), bf16 ? DType::Float32 : p.dtype);
  c.xb = to_bytes(c.x, p.x_float32 ? DType::Float32 : p.dtype), c.wb = to_bytes(c.w, p.dtype);
  c.bb = to_bytes(c.b, bf16 ? DType::Float32 : p.dtype);
  if (p.x_float32)
    for (double& v : c.x) v = rounded_to_bf16(v);
  q.x_float32 = q.y_float32 = false;
  q.dtype = DType::Float64;
  c.ref = run_conv(q, to_bytes(c.x, q.dtype), to_bytes(c.w, q.dtype), to_bytes(c.b, q.dtype), &conv_reference_f64, 1);
  q.activation = Activation::None;
  c.bound = run_conv(q, to_bytes(absolute(c.x), q.dtype), to_bytes(absolute(c.w), q.dtype),
                     to_bytes(absolute(c.b), q.dtype), &conv_reference_f64, 1);
  return c;
}

// README, "Guarantees", precision "high": Winograd's y[k] stays within 1e-5 (sum over c of
// max |w[k, c]| * sum |x[c]| over the 4x4 patch of the 2x2 tile holding the output) + |b[k]|,
// tiles of one dilation phase, d apart, in cells of 2d x 2d outputs from the top left.  A deep
// problem's lowerings give the kernel input slice a of channel c as a channel of its own (or
// the slices as images), so each depth tap counts as a channel with its own max |w|.
std::vector<double> winograd_patch_bound(const ConvCase& c) {
  const ConvProblem& p = c.p;
  const int64_t Cg = p.in_channels / p.groups, Kg = p.out_channels / p.groups;
  const int64_t kd = p.kernel_d, taps = p.kernel_h * p.kernel_w;
  const int64_t D = p.in_d, H = p.in_h, W = p.in_w, C = p.in_channels, K = p.out_channels;
  const auto patch = [](int64_t o, int64_t d, int64_t size, int64_t first_out[4]) {
    const int64_t first = (o / (2 * d)) * 2 * d + o % d;
    int n = 0;
    for (int i = 0; i < 4; ++i)
      if (first + d * i < size) first_out[n++] = first + d * i;
    return n;
  };
  const auto x_at = [&](int64_t n, int64_t ch, int64_t s, int64_t h, int64_t w) {
    return p.layout == Layout::NCHW ? c.x[size_t((((n * C + ch) * D + s) * H + h) * W + w)]
                                    : c.x[size_t((((n * D + s) * H + h) * W + w) * C + ch)];
  };
  std::vector<double> bound(size_t(conv_outputs(p)));
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t od = 0; od < p.out_d; ++od)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            int64_t rows[4], cols[4];
            const int nr = patch(oh, p.dilation_h, H + p.pad_top + p.pad_bottom, rows);
            const int nc = patch(ow, p.dilation_w, W + p.pad_left + p.pad_right, cols);
            double sum = c.b.empty() ? 0.0 : std::fabs(c.b[size_t(k)]);
            for (int64_t cg = 0; cg < Cg; ++cg)
              for (int64_t a = 0; a < kd; ++a) {
                const int64_t ch = (k / Kg) * Cg + cg;
                const int64_t s = padded_source(od * p.stride_d + a * p.dilation_d, D, p.pad_front, p.pad_mode);
                if (s < 0) continue;
                double wmax = 0, xs = 0;
                for (int64_t t = 0; t < taps; ++t)
                  wmax = std::max(wmax, std::fabs(c.w[size_t(((k * Cg + cg) * kd + a) * taps + t)]));
                for (int i = 0; i < nr; ++i) {
                  const int64_t h = padded_source(rows[i], H, p.pad_top, p.pad_mode);
                  for (int j = 0; j < nc; ++j) {
                    const int64_t w = padded_source(cols[j], W, p.pad_left, p.pad_mode);
                    if (h >= 0 && w >= 0) xs += std::fabs(x_at(n, ch, s, h, w));
                  }
                }
                sum += wmax * xs;
              }
            const int64_t plane = p.out_d * p.out_h * p.out_w, pixel = (od * p.out_h + oh) * p.out_w + ow;
            bound[size_t(p.layout == Layout::NCHW ? (n * K + k) * plane + pixel : (n * plane + pixel) * K + k)] = sum;
          }
  return bound;
}

double rtol_for(DType d) { return d == DType::Float64 ? 1e-12 : 1e-5; }

// The residual post-op through `forced`: y = act((conv + bias) + r) for an r of y's shape,
// against the same algorithm without the activation, then the add and the activation in T (the
// unfused steps).  Exact for the activations whose formula is one comparison or product; the
// others within 4 ulps of their input and output (the kernels' and the reference's formulas of
// them differ that much; hardsigmoid's v/6 + 1/2 cancels near 0).
template <class T>
void check_residual(const ConvCase& c, const ConvAlgorithm* forced, const std::string& label) {
  const ConvProblem& p = c.p;
  const size_t n = size_t(conv_outputs(p));
  const std::vector<unsigned char> rb = to_bytes(random_values(n, p.dtype), p.dtype);
  const T* r = reinterpret_cast<const T*>(rb.data());
  ConvPlan plan(p.dtype, c.wb.data(), c.bb.empty() ? nullptr : c.bb.data(), p.out_channels, p.in_channels / p.groups,
                p.kernel_d, p.kernel_h, p.kernel_w, /*copy=*/false, p.weights_reused);
  std::vector<T> fused(n), plain(n);
  ConvProblem q = p;
  q.activation = Activation::None;
  plan.run(p, c.xb.data(), fused.data(), forced, kThreads, rb.data());
  plan.run(q, c.xb.data(), plain.data(), forced, kThreads);
  const bool exact = p.activation == Activation::None || p.activation == Activation::Relu ||
                     p.activation == Activation::Relu6 || p.activation == Activation::LeakyRelu;
  const double ulp = std::is_same_v<T, float> ? 0x1p-23 : 0x1p-52;
  for (size_t i = 0; i < n; ++i) {
    const T sum = T(plain[i] + r[i]);
    const T want = T(activate_reference(sum, p.activation, p.negative_slope));
    const double tol = 4 * ulp * (std::fabs(double(want)) + std::fabs(double(sum))) + 1e-30;
    const bool same = exact ? (fused[i] == want || (fused[i] != fused[i] && want != want))
                            : std::fabs(double(fused[i]) - double(want)) <= tol;
    if (!same) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "residual: output %zu: got %.9g, want %.9g", i, double(fused[i]), double(want));
      fail(label + ": " + buf + " on " + describe(p));
      return;
    }
  }
}

// Runs c through `forced` (nullptr: the active ISA's choice) and checks it; false when the
// algorithm declines the problem.
bool check_conv(ConvCase& c, const ConvAlgorithm* forced, const std::string& label) {
  std::vector<double> y;
  try {
    y = run_conv(c.p, c.xb, c.wb, c.bb, forced, kThreads);
  } catch (const std::invalid_argument& e) {
    if (forced && std::strstr(e.what(), "does not accept")) return false;
    fail(label + ": threw " + e.what() + " on " + describe(c.p));
    return true;
  } catch (const std::exception& e) {
    fail(label + ": threw " + e.what() + " on " + describe(c.p));
    return true;
  }
  const bool winograd = forced && forced->accuracy == Precision::High;
  if (winograd && c.patch_bound.empty()) c.patch_bound = winograd_patch_bound(c);
  const DType out = c.p.y_float32 ? DType::Float32 : c.p.dtype;
  const std::string why = mismatch(y, c.ref, winograd ? c.patch_bound : c.bound, rtol_for(c.p.dtype), out);
  if (!why.empty()) fail(label + ": " + why + " on " + describe(c.p));
  // Half the float cases again with a residual (see check_residual).
  if (c.p.dtype == DType::Float32 && chance(0.5)) check_residual<float>(c, forced, label);
  if (c.p.dtype == DType::Float64 && chance(0.5)) check_residual<double>(c, forced, label);
  return true;
}

// Every conv algorithm of c's dtype (every ISA, and the float32 reference against the float64
// one) that accepts c.
void check_every_conv_algorithm(ConvCase& c) {
  for (const ConvAlgorithm* a : all_conv_algorithms()) {
    if (a->dtype != c.p.dtype || a == &conv_reference_f64) continue;
    if (check_conv(c, a, a->name)) ++g_cases[a->name];
  }
}

// The register tiles named in the algorithms' names (<op>_<dtype>__<isa>_<a>x<b>: a output
// pixels or rows by b output channels), with the dtype they serve.
struct Tile {
  int64_t a, b;
  DType dtype;
  bool depthwise, winograd;
};
std::vector<Tile> named_tiles() {
  std::vector<Tile> tiles;
  for (const ConvAlgorithm* alg : all_conv_algorithms()) {
    const std::string name = alg->name;
    if (name.find("_amx_taps_") != std::string::npos) continue;  // few input channels: its own sweep
    const size_t at = name.rfind('_');
    const std::string last = name.substr(at + 1);
    const size_t x = last.find('x');
    if (x == std::string::npos || x == 0 || last.find_first_not_of("0123456789x") != std::string::npos) continue;
    tiles.push_back({std::stoll(last.substr(0, x)), std::stoll(last.substr(x + 1)), alg->dtype,
                     name.find("depthwise") != std::string::npos, name.find("winograd") != std::string::npos});
  }
  return tiles;
}

const std::vector<Activation> kActivations = {
    Activation::None,    Activation::None, Activation::Relu, Activation::Relu6,       Activation::LeakyRelu,
    Activation::Sigmoid, Activation::Tanh, Activation::Silu, Activation::HardSigmoid, Activation::HardSwish};
// leaky_relu's slopes: PyTorch's default, ONNX's, and ones that flip or grow the negatives.
const std::vector<double> kSlopes = {0.01, 0.2, -0.5, 1.5};
const std::vector<PadMode> kModes = {PadMode::Zeros,     PadMode::Zeros,    PadMode::Reflect,
                                     PadMode::Replicate, PadMode::Circular, PadMode::Symmetric};

// Output widths 1..2 * tile + 1: all of them for small tiles, a sample with the edges
// (1, tile - 1, tile, tile + 1, 2 tile, 2 tile + 1) for wide ones.
std::vector<int64_t> widths_around(int64_t tile) {
  std::vector<int64_t> w;
  if (tile <= 12) {
    for (int64_t i = 1; i <= 2 * tile + 1; ++i) w.push_back(i);
  } else {
    for (int64_t i : {int64_t(1), int64_t(2), tile - 1, tile, tile + 1, 2 * tile - 1, 2 * tile, 2 * tile + 1})
      w.push_back(i);
    for (int i = 0; i < 6; ++i) w.push_back(uniform(3, 2 * tile));
  }
  return w;
}

// A random 2-D geometry: kernel 1/3/5/7 (and 1xn, nx1), strides 1-3, dilation 1-2, padding
// modes, both layouts, activations, bias or not.
ConvGeometry random_geometry(int64_t OW, int64_t C, int64_t K, int64_t groups, DType dtype) {
  ConvGeometry g;
  g.N = chance(0.25) ? 2 : 1;
  g.C = C, g.K = K, g.groups = groups;
  const int64_t kernels[][2] = {{1, 1}, {3, 3}, {3, 3}, {5, 5}, {7, 7}, {1, 3}, {3, 1}, {1, 5}, {2, 2}};
  const auto& k = kernels[uniform(0, 8)];
  const int64_t sh = chance(0.7) ? 1 : uniform(2, 3), sw = chance(0.7) ? 1 : uniform(2, 3);
  const int64_t dh = chance(0.85) ? 1 : 2, dw = chance(0.85) ? 1 : 2;
  const bool pad = chance(0.6);
  g.h = axis_for(uniform(1, 3), k[0], sh, dh, pad);
  g.w = axis_for(OW, k[1], sw, dw, pad);
  if (pad && chance(0.2)) ++g.w.after;  // asymmetric
  g.mode = pad ? pick(kModes) : PadMode::Zeros;
  g.layout = chance(0.5) ? Layout::NCHW : Layout::NHWC;
  g.activation = pick(kActivations);
  g.negative_slope = pick(kSlopes);
  g.dtype = dtype;
  g.bias = chance(0.8);
  g.reused = chance(0.5);
  return g;
}

void run_case(const ConvGeometry& g) {
  ConvProblem p = make_problem(g);
  if (p.out_h < 1 || p.out_w < 1 || p.out_d < 1) return;
  if (p.dtype == DType::BFloat16) {  // float32 x or y: a float32 layer's compute_dtype="bfloat16"
    p.x_float32 = chance(0.25);
    p.y_float32 = chance(0.25);
  }
  ConvCase c = make_conv_case(p, g.bias);
  check_every_conv_algorithm(c);
}

void conv2d_sweep() {
  const std::vector<int64_t> channels = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33};
  for (const Tile& t : named_tiles()) {
    if (t.winograd) continue;  // below: 3x3 only, in 2x2 tiles
    // Two draws per width: each tile meets both layouts and several kernels at most widths.
    for (int64_t OW : widths_around(t.a))
      for (int draw = 0; draw < 2; ++draw) {
        int64_t C = pick(channels),
                K = std::max<int64_t>(1, pick(std::vector<int64_t>{t.b - 1, t.b, t.b + 1, 2 * t.b + 1, t.b / 2, 1, 3}));
        int64_t groups = 1;
        if (t.depthwise || chance(0.1)) {
          groups = C, K = C * (chance(0.2) ? 2 : 1);  // depthwise, sometimes with a multiplier
        } else if (chance(0.1) && C % 2 == 0) {
          groups = 2, K = 2 * std::max<int64_t>(1, K / 2);
        }
        run_case(random_geometry(OW, C, K, groups, t.dtype));
      }
  }
  // 1x1 kernels read in place (no padding; stride 1, or 2 for NHWC), where the wide ChannelVec
  // blocks run: widths around their pixel counts and flat planes, output channels around their
  // blocks, input channels past those PixelVec takes (NCHW).
  for (int i = 0; i < 120; ++i) {
    ConvGeometry g;
    g.N = chance(0.25) ? 2 : 1;
    g.C = pick(std::vector<int64_t>{9, 16, 17, 65, 96, 130, 257});
    g.K = pick(std::vector<int64_t>{32, 47, 63, 64, 65, 80, 96, 127, 128, 129, 200});
    g.layout = chance(0.5) ? Layout::NCHW : Layout::NHWC;
    const int64_t stride = g.layout == Layout::NHWC && chance(0.3) ? 2 : 1;
    g.h = axis_for(i % 4 == 3 ? uniform(8, 20) : uniform(1, 3), 1, stride, 1, false);
    g.w = axis_for(i % 4 == 3 ? uniform(8, 20) : uniform(1, 30), 1, stride, 1, false);
    g.activation = pick(kActivations);
    g.negative_slope = pick(kSlopes);
    g.bias = chance(0.8);
    g.reused = chance(0.5);
    run_case(g);
  }
  // Grouped channels-last layers whose groups are a vector or two wide (RegNetX's 16 a group):
  // the ChannelVec engine's tile of every group's channels, read at each group's offset.  (On
  // the generator's state restored after: the draws that follow stay those every algorithm's
  // least count of cases was set on.)
  const std::mt19937_64 draws_after = g_rng;
  for (int i = 0; i < 40; ++i) {
    const int64_t groups = pick(std::vector<int64_t>{2, 3, 5});
    const int64_t gi = pick(std::vector<int64_t>{8, 15, 16, 17, 32}),
                  go = pick(std::vector<int64_t>{8, 16, 17, 24, 33});
    ConvGeometry g = random_geometry(uniform(1, 30), gi * groups, go * groups, groups, DType::Float32);
    g.layout = Layout::NHWC;
    if (i % 2 == 0) g.h = axis_for(uniform(4, 12), 3, i % 4 == 0 ? 2 : 1, 1, true);
    run_case(g);
  }
  g_rng = draws_after;
  // Depthwise channel counts around the vector widths (8, 16 lanes and their blocks), rows
  // wide enough for the row kernels (64 outputs on AVX2), and both dtypes' direct kernels.
  for (int i = 0; i < 60; ++i) {
    const int64_t C = pick(std::vector<int64_t>{1, 7, 8, 9, 15, 16, 17, 31, 32, 33});
    const int64_t OW = i % 4 == 3 ? uniform(60, 70) : uniform(1, 33);
    run_case(random_geometry(OW, C, C, C, i % 5 == 4 ? DType::Float64 : DType::Float32));
  }
  // The AVX-512 flat-plane 3x3 depthwise kernel: 3x3, stride 1, zero padding 1, rows a multiple
  // of 8 wide; in float32, and in bfloat16 for its bfloat16 entry (twice: run_case makes some
  // of those float32 x or y, which the entry leaves to the widened path).
  for (int i = 0; i < 15; ++i) {
    const int64_t W = std::vector<int64_t>{8, 16, 24, 40, 56}[size_t(i % 5)];
    ConvGeometry g;
    g.dtype = i < 5 ? DType::Float32 : DType::BFloat16;
    g.N = 1 + W % 16 / 8;
    g.C = g.K = g.groups = 1 + W % 5;
    g.h = {1 + W % 7, 3, 1, 1, 1, 1};
    g.w = {W, 3, 1, 1, 1, 1};
    g.activation = pick(kActivations);
    g.negative_slope = pick(kSlopes);
    run_case(g);
  }
  // bfloat16: output channels around each microkernel's 16-channel blocks (1 to 4 of them,
  // and more than 4), widths around its pixel counts (6, 8, 12), odd and even channel counts
  // (pairs), groups; several row blocks on taller planes.
  for (int i = 0; i < 80; ++i) {
    const int64_t K = pick(std::vector<int64_t>{8, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 129});
    const int64_t C = pick(std::vector<int64_t>{2, 3, 5, 16, 17, 32, 33});
    const int64_t groups = C % 2 == 0 && K % 2 == 0 && K >= 16 && chance(0.2) ? 2 : 1;
    ConvGeometry g = random_geometry(uniform(1, 27), C, K, groups, DType::BFloat16);
    if (i % 8 == 7) g.h = axis_for(uniform(8, 40), 3, 1, 1, true);
    run_case(g);
  }
  // bfloat16 layers of few input channels per group (conv2d_amx_taps_bf16, each window the tiles'
  // K): widths around its 32-pixel blocks, windows of every size, groups.  (Its own draws: the
  // cases after it stay as they were.)
  const std::mt19937_64 before_taps = g_rng;
  for (int i = 0; i < 48; ++i) {
    const int64_t C = pick(std::vector<int64_t>{1, 2, 3, 4, 5, 8, 9});
    const int64_t K = pick(std::vector<int64_t>{8, 16, 17, 32, 33, 64});
    const int64_t groups = chance(0.2) ? 2 : 1;
    const int64_t OW = pick(std::vector<int64_t>{1, 7, 15, 16, 17, 31, 32, 33, 50});
    run_case(random_geometry(OW, C * groups, K * groups, groups, DType::BFloat16));
  }
  g_rng = before_taps;
  // bfloat16 grouped layers of few outputs per group (pixelvec_bf16): 1 to 7 outputs per group
  // (its 4-output chunks), widths around its 16-column vectors and batches of up to 6 vectors,
  // even and odd channel counts per group; several row blocks on taller planes.  (Its own
  // draws: the cases after it stay as they were.)
  {
    const std::mt19937_64 draws_after_grouped = g_rng;
    for (int i = 0; i < 40; ++i) {
      const int64_t groups = pick(std::vector<int64_t>{2, 3, 8, 32});
      const int64_t cg = pick(std::vector<int64_t>{2, 3, 4, 6, 16}), kg = uniform(1, 7);
      const int64_t OW = pick(std::vector<int64_t>{1, 7, 15, 16, 17, 31, 32, 33, 97});
      ConvGeometry g = random_geometry(OW, cg * groups, kg * groups, groups, DType::BFloat16);
      if (i % 8 == 7) g.h = axis_for(uniform(8, 40), 3, 1, 1, true);
      run_case(g);
    }
    g_rng = draws_after_grouped;
  }
  // bfloat16 channels-first 1x1 layers (pointwise_pixelvec_bf16): output channels around its
  // 4-output chunks, planes around its 16-pixel vectors, batches of up to 6 vectors and its
  // blocks of pixels (a tile of 256 KiB: 512 channels take 256 pixels a block), even and odd
  // channel counts.  (Its own draws, as the grouped cases'.)
  {
    const std::mt19937_64 draws_after_pointwise = g_rng;
    for (int i = 0; i < 40; ++i) {
      ConvGeometry g;
      g.dtype = DType::BFloat16;
      g.N = chance(0.25) ? 2 : 1;
      g.C = pick(std::vector<int64_t>{2, 3, 4, 6, 32, 34, 512});
      g.K = pick(std::vector<int64_t>{1, 3, 4, 5, 8, 17, 64});
      const int64_t H = pick(std::vector<int64_t>{1, 2, 4, 10, 14, 28}),
                    W = pick(std::vector<int64_t>{13, 14, 16, 97, 192, 208});
      g.h = {H, 1, 1, 1, 0, 0};
      g.w = {W, 1, 1, 1, 0, 0};
      g.activation = pick(kActivations);
      g.negative_slope = pick(kSlopes);
      g.bias = chance(0.8);
      g.reused = chance(0.5);
      run_case(g);
    }
    g_rng = draws_after_pointwise;
  }
  // Reduction slices and several row blocks: many input channels, bigger planes.
  for (int i = 0; i < 6; ++i) {
    const DType dtype = i % 2 ? DType::Float64 : DType::Float32;
    ConvGeometry g = random_geometry(uniform(10, 30), i < 3 ? 300 : 64, uniform(16, 40), 1, dtype);
    g.h = axis_for(uniform(4, 8), 3, 1, 1, true);
    g.w = axis_for(uniform(10, 30), 3, 1, 1, true);
    run_case(g);
  }
  // Winograd F(2x2, 3x3) (precision "high"): 3x3 stride 1, at least 16 channels each side;
  // odd and even output sizes (half-used tiles), K around its tile, dilation 1-4, padding modes,
  // weights packed up front (reused) and transformed inside the work items (one-shot).
  for (const Tile& t : named_tiles()) {
    if (!t.winograd) continue;
    for (int i = 0; i < 48; ++i) {
      ConvGeometry g;
      g.C = pick(std::vector<int64_t>{16, 17, 24, 40, 64});
      g.K = std::max<int64_t>(16, pick(std::vector<int64_t>{t.b - 1, t.b, t.b + 1, 2 * t.b + 1}));
      g.N = chance(0.3) ? 2 : 1;
      const int64_t d = i % 6 == 5 ? uniform(2, 4) : 1, OH = uniform(2, 2 * t.a + 1), OW = uniform(4, 2 * t.a + 1);
      const bool pad = i % 3 != 2;
      g.h = axis_for(std::max<int64_t>(OH, 16 / OW + 1), 3, 1, d, pad);
      g.w = axis_for(OW, 3, 1, d, pad);
      g.mode = pad ? pick(kModes) : PadMode::Zeros;
      g.layout = i % 2 ? Layout::NHWC : Layout::NCHW;
      g.activation = pick(kActivations);
      g.negative_slope = pick(kSlopes);
      g.precision = Precision::High;
      g.reused = i % 4 < 2;
      g.bias = i % 5 != 4;
      run_case(g);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Lowerings: 1-D and 3-D problems (and channels-last grouped 2-D ones) through ConvPlan::run, under each ISA's
// dispatcher and with each algorithm forced on the lowered problems, against the reference (which takes depth).

void check_lowered(ConvCase& c) {
  ConvPlan plan(c.p.dtype, c.wb.data(), nullptr, c.p.out_channels, c.p.in_channels / c.p.groups, c.p.kernel_d,
                c.p.kernel_h, c.p.kernel_w, false, false);
  const std::string lowering = std::string("lowering ") + lowering_name(plan.choose(c.p).lowering);
  ++g_cases[lowering];
  for (const std::string& isa : available_isas()) {
    select_isa(isa);
    check_conv(c, nullptr, lowering + " (" + isa + " dispatch)");
  }
  select_isa(default_isa());
  for (const ConvAlgorithm* a : all_conv_algorithms())
    if (a->dtype == c.p.dtype && !std::strstr(a->name, "reference") && check_conv(c, a, lowering + " " + a->name))
      ++g_cases[a->name];
}

// bf16: bfloat16 problems of channel counts the bfloat16 kernels take (8 and more a group), a
// quarter of them with float32 x or y (which widen where a lowering applies); else float32 and
// float64 ones.
void lowering_sweep_of(int count, bool bf16) {
  for (int i = 0; i < count; ++i) {
    const DType dtype = bf16 ? DType::BFloat16 : i % 3 == 2 ? DType::Float64 : DType::Float32;
    ConvGeometry g;
    g.dtype = dtype;
    g.layout = i % 2 ? Layout::NHWC : Layout::NCHW;
    g.mode = pick(kModes);
    g.activation = pick(kActivations);
    g.negative_slope = pick(kSlopes);
    g.bias = false;
    g.N = 1 + i % 2;
    g.C = pick(bf16 ? std::vector<int64_t>{8, 16, 17, 32} : std::vector<int64_t>{1, 3, 8, 17});
    g.K = pick(bf16 ? std::vector<int64_t>{8, 16, 33, 48} : std::vector<int64_t>{1, 4, 16, 33});
    const int kind = i % 7;
    if (kind == 6) {
      // ChannelsFirst: 2-D, channels-last, grouped with fewer than 8 output channels per group.
      g.rank = 2;
      g.layout = Layout::NHWC;
      g.groups = pick(std::vector<int64_t>{2, 3, 5, 9});
      g.C = g.groups * uniform(1, 5);
      g.K = g.groups * uniform(1, 7);
      const int64_t k = pick(std::vector<int64_t>{1, 3, 5});
      g.h = axis_for(uniform(1, 12), k, uniform(1, 2), uniform(1, 2), chance(0.6));
      g.w = axis_for(uniform(1, 40), k, uniform(1, 2), uniform(1, 2), chance(0.6));
    } else if (kind == 0 || kind == 1) {
      // 1-D: short rows, and rows long enough to fold (192 outputs and up, with and without a
      // tail), kernels 3-7, strides and dilations.
      g.rank = 1;
      const int64_t OW = kind == 0 ? uniform(1, 40) : pick(std::vector<int64_t>{192, 200, 288, 301});
      const int64_t k = kind == 0 ? pick(std::vector<int64_t>{1, 3, 5, 7}) : pick(std::vector<int64_t>{3, 5, 7});
      g.w = axis_for(OW, k, uniform(1, 2), uniform(1, 2), chance(0.6));
      if (kind == 0 && chance(0.3)) g.groups = g.C, g.K = g.C;  // depthwise (never folded)
      // DilationRows (every third long row): stride 1, dilation 8 or 16, length and zero
      // padding multiples of it
      if (kind == 1 && (i / 7) % 3 == 1) g.C = pick(std::vector<int64_t>{1, 2});  // TapsAsChannels: C * k <= 16
      if (kind == 1 && (i / 7) % 3 == 2) g.C = pick(std::vector<int64_t>{8, 17});  // FoldRows: C * k > 16
      if (kind == 1 && (i / 7) % 3 == 0) {
        const int64_t d = pick(std::vector<int64_t>{8, 16});
        g.w = axis_for(d * uniform(24, 40), k, 1, d, chance(0.6));
        g.mode = PadMode::Zeros;
      }
    } else {
      g.rank = 3;
      const bool pad = chance(0.6);
      const int64_t kd = kind == 3 ? 1 : uniform(1, 3);
      g.d = axis_for(uniform(1, 4), kd, kind == 3 ? 1 : uniform(1, 2), uniform(1, 2), pad && kind != 3);
      if (kind == 2) {  // Flatten: 1x1 in (h, w), stride 1, no padding there
        g.h = {uniform(1, 6), 1, 1, 1, 0, 0};
        g.w = {uniform(1, 9), 1, 1, 1, 0, 0};
        // Every other one on a plane whose rows (48 x 37 x 41 values) run as column segments,
        // a tail segment included (flatten_segments, cpp/conv.cpp).
        if ((i / 7) % 2 == 1) g.C = 48, g.h = {37, 1, 1, 1, 0, 0}, g.w = {41, 1, 1, 1, 0, 0};
      } else {
        const int64_t k = pick(std::vector<int64_t>{1, 3, 5});
        g.h = axis_for(uniform(1, 5), k, uniform(1, 2), kind == 4 ? 1 : uniform(1, 2), pad);
        g.w = axis_for(uniform(1, 9), k, uniform(1, 2), uniform(1, 2), pad);
        if (kind == 4) g.groups = g.C, g.K = g.C * (chance(0.3) ? 2 : 1);  // Interleave: depthwise
        if (kind == 4 && (i / 7) % 3 == 0) {
          // Depthwise in whole channel blocks, zero padding, width not dilated: read in place
          // (channels-last, lowering None) or between transposes (channels-first, ChannelsLast).
          g.C = g.K = g.groups = 32;
          g.mode = PadMode::Zeros;
          g.d = axis_for(uniform(2, 4), kd, 1, 1, pad);  // a depth axis (of one slice it would be 2-D)
          g.w = axis_for(uniform(1, 9), k == 1 ? 3 : k, uniform(1, 2), 1, pad);
        }
        if (kind == 3) g.layout = Layout::NHWC;  // IntoBatch: kernel depth 1, channels-last
      }
    }
    ConvProblem p = make_problem(g);
    if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) continue;
    if (bf16 && i % 4 == 3) (chance(0.5) ? p.x_float32 : p.y_float32) = true;
    ConvCase c = make_conv_case(p, false);
    check_lowered(c);
  }
}

void lowering_sweep() { lowering_sweep_of(112, false); }

// The lowerings of bfloat16 problems on the bfloat16 kernels (run last: the other sweeps keep
// their draws).
void bf16_lowering_sweep() { lowering_sweep_of(112, true); }

// Channels-first kd x 3 x 3 depthwise at unit strides and dilations (conv3d_depthwise_nchw_f32),
// run last so that the other sweeps keep their draws: rows of 64-70 outputs, which AVX2's takes
// too; "same" zero padding along the row (read in place), none, or another mode (tiles); kernel
// depths 1 to 4 with and without depth padding, batch 1 and 2.
void depthwise_slices_sweep() {
  for (int i = 0; i < 12; ++i) {
    ConvGeometry g;
    g.rank = 3;
    g.N = 1 + i % 2;
    g.C = g.K = g.groups = pick(std::vector<int64_t>{1, 3, 8, 17});
    g.activation = pick(kActivations);
    g.negative_slope = pick(kSlopes);
    g.bias = chance(0.5);
    g.mode = i % 3 == 2 ? pick(kModes) : PadMode::Zeros;
    const bool pad = i % 4 != 3;
    g.d = axis_for(uniform(1, 5), uniform(1, 4), 1, 1, pad && i % 3 != 2);
    g.h = axis_for(uniform(1, 6), 3, 1, 1, pad);
    g.w = axis_for(uniform(64, 70), 3, 1, 1, pad);
    const ConvProblem p = make_problem(g);
    ConvCase c = make_conv_case(p, g.bias);
    check_lowered(c);
  }
}

// ConvAlgorithm::unpack gives back what pack() was given, bit for bit (NaN, infinities and
// -0.0 too), around the packs' output-channel blocks, groups and channel slices; and a layer's
// plan that freed its copy (keeps_source=false) reads the same weights back.
void unpack_sweep() {
  const double specials[] = {std::nan(""), INFINITY, -INFINITY, -0.0};
  const auto check = [&](const ConvAlgorithm* a, const ConvProblem& p) {
    if (!takes_rank(*a, p) || !a->accepts(p) || a->packed_bytes(p) == 0) return;
    std::vector<double> w(size_t(conv_weights(p)));
    for (double& v : w) v = std::uniform_real_distribution<double>(-1, 1)(g_rng);
    for (const double v : specials) w[size_t(uniform(0, int64_t(w.size()) - 1))] = v;
    const std::vector<unsigned char> wb = to_bytes(w, p.dtype);
    std::vector<unsigned char> packed(a->packed_bytes(p)), back(wb.size(), 0xAB);
    a->pack(p, wb.data(), packed.data(), kThreads);
    a->unpack(p, packed.data(), back.data());
    if (back != wb) fail(std::string(a->name) + " unpack differs from the packed weights");
    // The plan frees its copy once this pack exists, and still reads the weights back.
    ConvPlan plan(p.dtype, wb.data(), nullptr, p.out_channels, p.in_channels / p.groups, 1, p.kernel_h, p.kernel_w,
                  /*copy=*/true, /*reused=*/true, /*keeps_source=*/false);
    std::vector<double> x(size_t(conv_inputs(p)), 0.5);
    std::vector<unsigned char> y(size_t(conv_outputs(p)) * dtype_size(p.dtype));
    const size_t before = plan.held_bytes();
    try {
      plan.run(p, to_bytes(x, p.dtype).data(), y.data(), a, kThreads);
    } catch (const std::invalid_argument&) {
      // The plan lowered p to a problem the named algorithm declines (channels-last groups of
      // one input channel run channels-first): a draw for another algorithm, not counted.
      return;
    }
    std::fill(back.begin(), back.end(), 0xAB);
    plan.copy_weight(back.data());
    if (back != wb) fail(std::string(a->name) + " plan's weights read back differ after the copy was freed");
    if (plan.held_bytes() != before - wb.size() + packed.size())
      fail(std::string(a->name) + " plan kept its copy beside the pack: " + std::to_string(plan.held_bytes()) +
           " bytes held");
    ++g_cases[std::string("unpack ") + a->name];
  };
  // The later sweeps draw the same problems however many algorithms unpack.
  const std::mt19937_64 draws_before = g_rng;
  for (const ConvAlgorithm* a : all_conv_algorithms()) {
    if (!a->unpack) continue;
    for (int i = 0; i < 24; ++i) {
      ConvGeometry g;
      g.dtype = a->dtype;
      g.reused = true;
      g.groups = pick(std::vector<int64_t>{1, 1, 2, 3});
      // (600 channels of 3x3 or 5x5 taps: packed in several channel slices)
      g.C = g.groups * (i % 6 == 4 ? 600 : pick(std::vector<int64_t>{1, 3, 16, 17, 33, 64}));
      g.K = g.groups * pick(std::vector<int64_t>{1, 7, 16, 17, 31, 33, 65, 130});
      g.layout = chance(0.5) ? Layout::NCHW : Layout::NHWC;
      const int64_t k = i % 2 ? 1 : pick(std::vector<int64_t>{3, 5});
      g.h = axis_for(uniform(4, 12), k, 1, 1, k > 1);
      g.w = axis_for(uniform(4, 40), k, 1, 1, k > 1);
      if (i % 2) {  // 1x1 in place, the wide blocks' problems (as conv2d_sweep draws them)
        g.groups = 1;
        g.C = pick(std::vector<int64_t>{9, 16, 17, 65, 96, 130, 257});
        g.K = pick(std::vector<int64_t>{32, 47, 63, 64, 65, 80, 96, 127, 128, 129, 200});
        g.h = axis_for(uniform(1, 20), 1, 1, 1, false);
        g.w = axis_for(uniform(1, 30), 1, 1, 1, false);
      }
      check(a, make_problem(g));
    }
  }
  // Groups of one vector of outputs (8 and 16: the one-vector blocks' problems).
  for (const ConvAlgorithm* a : all_conv_algorithms()) {
    if (!a->unpack) continue;
    for (int i = 0; i < 8; ++i) {
      ConvGeometry g;
      g.dtype = a->dtype;
      g.reused = true;
      g.groups = i % 2 ? 2 : 3;
      g.C = g.groups * pick(std::vector<int64_t>{8, 16, 17});
      g.K = g.groups * (i < 4 ? 8 : 16);
      g.layout = i % 4 < 2 ? Layout::NHWC : Layout::NCHW;
      g.h = axis_for(uniform(4, 12), 3, 1, 1, true);
      g.w = axis_for(uniform(4, 40), 3, 1, 1, true);
      check(a, make_problem(g));
    }
  }
  g_rng = draws_before;
}

// Zero padding that dwarfs small inputs (dilations of 100-300 spanning it): where only the
// reference would take the problem, the plan runs the taps that meet the input (ConvPlan::
// live_taps_run), under each ISA's dispatcher and with each algorithm forced on them.
void live_taps_sweep() {
  for (int i = 0; i < 36; ++i) {
    ConvGeometry g;
    g.dtype = i % 3 == 2 ? DType::Float64 : DType::Float32;
    g.layout = i % 2 ? Layout::NHWC : Layout::NCHW;
    g.activation = pick(kActivations);
    g.bias = chance(0.5);
    g.rank = 1 + i % 3;
    g.N = uniform(1, 2);
    g.groups = pick(std::vector<int64_t>{1, 2, 4});
    g.C = g.groups * uniform(1, 3);
    g.K = g.groups * uniform(1, 3);
    if (chance(0.3)) g.groups = g.C = g.K = 8;  // depthwise
    const auto sparse_axis = [&] {
      if (chance(0.3)) return axis_for(uniform(1, 4), pick(std::vector<int64_t>{1, 3}), 1, 1, true);
      // A few outputs whose windows span a padding hundreds of times the input; the first
      // output's tap `live` reads input column `at`.
      const int64_t in = uniform(1, 4), k = uniform(2, 3), d = uniform(100, 300), stride = uniform(1, 2);
      const int64_t padding = (uniform(1, 3) - 1) * stride + d * (k - 1) + 1 - in;
      const int64_t live = uniform(0, k - 1), at = uniform(0, in - 1);
      const int64_t before = std::clamp(live * d - at, int64_t(0), padding);
      return Axis{in, k, stride, d, before, padding - before};
    };
    if (g.rank == 3) g.d = sparse_axis();
    if (g.rank >= 2) g.h = sparse_axis();
    g.w = sparse_axis();
    const ConvProblem p = make_problem(g);
    if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) continue;
    ConvCase c = make_conv_case(p, g.bias);
    ConvPlan plan(c.p.dtype, c.wb.data(), nullptr, c.p.out_channels, c.p.in_channels / c.p.groups, c.p.kernel_d,
                  c.p.kernel_h, c.p.kernel_w, false, false);
    if (plan.choose(c.p).live_taps_only) ++g_cases["live taps"];
    check_lowered(c);
  }
}

// ------------------------------------------------------------------------------------------
// Pooling

int64_t pool_outputs(const Pool2dProblem& p) { return p.batch * p.channels * p.out_d * p.out_h * p.out_w; }

void run_pool(const Pool2dProblem& p, const std::vector<unsigned char>& x, std::vector<double>& y,
              std::vector<int64_t>& indices, const PoolAlgorithm* forced) {
  std::vector<unsigned char> yb(size_t(pool_outputs(p)) * kDTypes[int(p.dtype)].size);
  indices.assign(size_t(pool_outputs(p)), -1);
  pool2d(p, x.data(), yb.data(), indices.data(), forced);
  y = from_bytes(yb, p.dtype);
}

void pool_sweep() {
  for (int i = 0; i < 160; ++i) {
    Pool2dProblem p;
    p.dtype = i % 3 == 2 ? DType::Float64 : DType::Float32;
    p.layout = i % 2 ? Layout::NHWC : Layout::NCHW;
    p.kind = (i / 2) % 2 ? PoolKind::Avg : PoolKind::Max;
    p.batch = uniform(1, 2);
    p.channels = pick(std::vector<int64_t>{1, 3, 4, 8, 9, 16, 17});
    p.in_h = uniform(1, 12);
    p.in_w = uniform(1, 40);
    const bool deep = i % 4 == 3;  // 3-D pools: depth windows, indices over (d, h, w)
    if (deep) p.in_d = uniform(1, 5), p.in_h = std::min<int64_t>(p.in_h, 6);
    p.adaptive = i % 5 == 0;
    if (p.adaptive) {
      p.out_d = deep ? uniform(1, p.in_d + 1) : 1;
      p.out_h = i % 10 == 0 ? 1 : uniform(1, p.in_h + 2);
      p.out_w = i % 10 == 0 ? 1 : uniform(1, p.in_w + 2);
    } else {
      if (deep) {
        p.kernel_d = uniform(1, std::min<int64_t>(3, p.in_d)), p.stride_d = uniform(1, 2);
        if (p.kind == PoolKind::Max) p.dilation_d = uniform(1, 2);
        p.pad_front = uniform(0, p.kernel_d / 2), p.pad_back = uniform(0, p.kernel_d / 2);
      }
      p.kernel_h = uniform(1, std::min<int64_t>(4, p.in_h)), p.kernel_w = uniform(1, std::min<int64_t>(5, p.in_w));
      p.stride_h = uniform(1, 3), p.stride_w = uniform(1, 3);
      if (p.kind == PoolKind::Max) p.dilation_h = uniform(1, 2), p.dilation_w = uniform(1, 2);
      p.pad_top = uniform(0, p.kernel_h / 2), p.pad_bottom = uniform(0, p.kernel_h / 2);
      p.pad_left = uniform(0, p.kernel_w / 2), p.pad_right = uniform(0, p.kernel_w / 2);
      p.count_include_pad = chance(0.5);
      if (p.kind == PoolKind::Avg && chance(0.15)) p.divisor_override = uniform(1, 7);
      const bool ceil_mode = chance(0.3);
      p.out_d = pool_output_size(p.in_d, p.kernel_d, p.stride_d, p.pad_front, p.pad_back, p.dilation_d, ceil_mode);
      p.out_h = pool_output_size(p.in_h, p.kernel_h, p.stride_h, p.pad_top, p.pad_bottom, p.dilation_h, ceil_mode);
      p.out_w = pool_output_size(p.in_w, p.kernel_w, p.stride_w, p.pad_left, p.pad_right, p.dilation_w, ceil_mode);
      if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) continue;
    }
    char label[400];
    std::snprintf(label, sizeof label,
                  "%s%s pool N=%lld C=%lld in=%lldx%lldx%lld out=%lldx%lldx%lld kernel=%lldx%lldx%lld "
                  "stride=%lldx%lldx%lld dilation=%lldx%lldx%lld pad=(%lld,%lld,%lld,%lld,%lld,%lld) include_pad=%d "
                  "divisor=%lld %s %s",
                  p.adaptive ? "adaptive " : "", p.kind == PoolKind::Max ? "max" : "avg", (long long)p.batch,
                  (long long)p.channels, (long long)p.in_d, (long long)p.in_h, (long long)p.in_w, (long long)p.out_d,
                  (long long)p.out_h, (long long)p.out_w, (long long)p.kernel_d, (long long)p.kernel_h,
                  (long long)p.kernel_w, (long long)p.stride_d, (long long)p.stride_h, (long long)p.stride_w,
                  (long long)p.dilation_d, (long long)p.dilation_h, (long long)p.dilation_w, (long long)p.pad_front,
                  (long long)p.pad_back, (long long)p.pad_top, (long long)p.pad_bottom, (long long)p.pad_left,
                  (long long)p.pad_right, int(p.count_include_pad), (long long)p.divisor_override,
                  layout_name(p.layout), dtype_name(p.dtype));
    const std::vector<double> x = random_values(size_t(p.batch * p.channels * p.in_d * p.in_h * p.in_w), p.dtype);
    const std::vector<unsigned char> xb = to_bytes(x, p.dtype);
    // The oracle: the float64 reference; an average's bound is the window's mean |x|.
    Pool2dProblem q = p;
    q.dtype = DType::Float64;
    std::vector<double> ref, bound;
    std::vector<int64_t> ref_indices, unused;
    run_pool(q, to_bytes(x, q.dtype), ref, ref_indices, &pool2d_reference_f64);
    if (p.kind == PoolKind::Avg) run_pool(q, to_bytes(absolute(x), q.dtype), bound, unused, &pool2d_reference_f64);
    for (const PoolAlgorithm* a : all_pool_algorithms()) {
      if (a->dtype != p.dtype || a == &pool2d_reference_f64 || !a->accepts(p)) continue;
      ++g_cases[a->name];
      std::vector<double> y;
      std::vector<int64_t> indices;
      try {
        run_pool(p, xb, y, indices, a);
      } catch (const std::exception& e) {
        fail(std::string(a->name) + ": threw " + e.what() + " on " + label);
        continue;
      }
      std::string why;
      if (p.kind == PoolKind::Max) {
        // Exact: a maximum is one of the inputs, and its index the first such tap.
        for (size_t o = 0; o < y.size() && why.empty(); ++o)
          if (y[o] != ref[o] || indices[o] != ref_indices[o])
            why = "output " + std::to_string(o) + ": got " + std::to_string(y[o]) + " at " +
                  std::to_string(indices[o]) + ", want " + std::to_string(ref[o]) + " at " +
                  std::to_string(ref_indices[o]);
      } else {
        why = mismatch(y, ref, bound, rtol_for(p.dtype), p.dtype);
      }
      if (!why.empty()) fail(std::string(a->name) + ": " + why + " on " + label);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Transposed convolution

std::string describe(const ConvTransposeProblem& p) {
  return "conv_transpose " + geometry(p) + " output_padding=" + std::to_string(p.output_padding_d) + "x" +
         std::to_string(p.output_padding_h) + "x" + std::to_string(p.output_padding_w);
}

std::vector<double> run_conv_transpose(const ConvTransposeProblem& p, const std::vector<unsigned char>& x,
                                       const std::vector<unsigned char>& w, const std::vector<unsigned char>& b,
                                       const ConvTransposeAlgorithm* forced) {
  ConvTransposePlan plan(p.dtype, w.data(), b.empty() ? nullptr : b.data(), p.out_channels, p.in_channels,
                         p.out_channels / p.groups, p.kernel_d, p.kernel_h, p.kernel_w, /*copy=*/false,
                         /*shared=*/false);
  std::vector<unsigned char> y(size_t(p.batch * p.out_channels * p.out_d * p.out_h * p.out_w) *
                               kDTypes[int(p.dtype)].size);
  plan.run(p, x.data(), y.data(), forced, kThreads);
  return from_bytes(y, p.dtype);
}

// One axis of a transposed convolution: input size, kernel, stride, dilation, padding that
// leaves a non-empty output, output padding below max(stride, dilation) (PyTorch's rule).
void transpose_axis(int64_t& in, int64_t& k, int64_t& s, int64_t& d, int64_t& before, int64_t& after, int64_t& op,
                    int64_t& out, bool unit) {
  in = unit ? 1 : uniform(1, 9);
  k = unit ? 1 : uniform(1, 5);
  s = unit ? 1 : uniform(1, 3);
  d = unit ? 1 : uniform(1, 2);
  const int64_t reach = d * (k - 1);
  before = unit ? 0 : uniform(0, reach / 2);
  after = unit ? 0 : uniform(0, reach / 2);
  op = unit ? 0 : uniform(0, std::max(s, d) - 1);
  out = conv_transpose_output_size(in, k, s, before, after, op, d);
}

void conv_transpose_sweep() {
  for (int i = 0; i < 90; ++i) {
    ConvTransposeProblem p;
    const int rank = i % 6 == 5 ? 3 : i % 6 == 4 ? 1 : 2;
    p.dtype = i % 3 == 2 ? DType::Float64 : DType::Float32;
    p.layout = i % 2 ? Layout::NHWC : Layout::NCHW;
    p.batch = uniform(1, 2);
    p.in_channels = pick(std::vector<int64_t>{1, 3, 4, 8, 16, 17});
    const int64_t group_out = pick(std::vector<int64_t>{1, 3, 4, 8, 9, 16});
    p.groups = chance(0.2) && p.in_channels % 2 == 0 ? 2 : chance(0.1) ? p.in_channels : 1;
    p.out_channels = group_out * p.groups;
    transpose_axis(p.in_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back, p.output_padding_d, p.out_d,
                   rank < 3);
    transpose_axis(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom, p.output_padding_h, p.out_h,
                   rank < 2);
    transpose_axis(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right, p.output_padding_w, p.out_w,
                   false);
    if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) continue;
    p.activation = pick(kActivations);
    p.negative_slope = pick(kSlopes);
    const size_t inputs = size_t(p.batch * p.in_channels * p.in_d * p.in_h * p.in_w);
    const size_t weights = size_t(p.in_channels * group_out * p.kernel_d * p.kernel_h * p.kernel_w);
    const std::vector<double> x = random_values(inputs, p.dtype), w = random_values(weights, p.dtype);
    const std::vector<double> b = chance(0.7) ? random_values(size_t(p.out_channels), p.dtype) : std::vector<double>();
    ConvTransposeProblem q = p;
    q.dtype = DType::Float64;
    const auto f64 = [&](const std::vector<double>& v) { return to_bytes(v, DType::Float64); };
    const std::vector<double> ref = run_conv_transpose(q, f64(x), f64(w), f64(b), &conv_transpose2d_reference_f64);
    q.activation = Activation::None;
    const std::vector<double> bound =
        run_conv_transpose(q, f64(absolute(x)), f64(absolute(w)), f64(absolute(b)), &conv_transpose2d_reference_f64);
    const auto xb = to_bytes(x, p.dtype), wb = to_bytes(w, p.dtype), bb = to_bytes(b, p.dtype);
    for (const ConvTransposeAlgorithm* a : all_conv_transpose_algorithms()) {
      if (a->dtype != p.dtype || a == &conv_transpose2d_reference_f64 || !a->accepts(p)) continue;
      ++g_cases[a->name];
      std::string why;
      try {
        why = mismatch(run_conv_transpose(p, xb, wb, bb, a), ref, bound, rtol_for(p.dtype), p.dtype);
      } catch (const std::exception& e) {
        why = std::string("threw ") + e.what();
      }
      if (!why.empty()) fail(std::string(a->name) + ": " + why + " on " + describe(p));
    }
  }
}

// ------------------------------------------------------------------------------------------
// Quantized convolution: every algorithm bit for bit against qconv_reference, on problems
// around the 6-pixel x 16-channel block and the channel pairs (odd rounds), and around the VNNI
// kernel's channel quads, its 16/32/48/64-channel passes and its pixel runs, with centred
// weights within int8 (even rounds, which the int8 kernels accept), uint8 and int8 activations,
// every output kind, 1 and kThreads threads.

std::string describe_q(const QConvCall& c) {
  const char* out[] = {"quantized", "int32", "float32"};
  return describe(c.p) + (c.x_signed ? " s8" : " u8") + " x_zp " + std::to_string(c.x_zero_point) + " " +
         out[int(c.output)];
}

// Every algorithm that accepts call.p against qconv_reference, bit for bit, on 1 and kThreads
// threads (call.y is set here).  An algorithm whose packing refused the weights must be one that
// needs them within int8 (weights_fit_int8 false), and forcing it a clear error.
void check_qconv(const QConvPlan& plan, QConvCall call, size_t out_bytes, bool weights_fit_int8) {
  std::vector<unsigned char> ref(out_bytes), y(out_bytes);
  call.y = ref.data();
  plan.run(call, &qconv_reference, 1);
  for (const QConvAlgorithm* a : all_qconv_algorithms()) {
    if (a == &qconv_reference || !a->accepts(call.p)) continue;
    if (plan.refused(a)) {
      bool threw = false;
      try {
        plan.run(call, a, 1);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      if (weights_fit_int8 || !threw)
        fail(std::string(a->name) + (weights_fit_int8 ? " refused int8 weights" : " forced after refusing ran") +
             " on " + describe_q(call));
      continue;
    }
    ++g_cases[a->name];
    for (const int threads : {1, kThreads}) {
      std::fill(y.begin(), y.end(), 0xAB);
      call.y = y.data();
      std::string why;
      try {
        plan.run(call, a, threads);
        if (y != ref) why = "differs from the reference";
      } catch (const std::exception& e) {
        why = std::string("threw ") + e.what();
      }
      if (!why.empty())
        fail(std::string(a->name) + ": " + why + " with " + std::to_string(threads) + " threads on " +
             describe_q(call));
    }
  }
}

// A quantized sweep's requantization, drawn onto `call`: a bias and a multiplier per output
// channel (scales 2^-36 to 2^0; the caller points call.multiplier at them), the output zero
// point, and clamps: relu, where asked relu6 (in the quantized domain), and relu6 on a float32
// result.
struct Requantization {
  std::vector<int32_t> bias;
  std::vector<float> multiplier;
};
Requantization draw_requantization(QConvCall& call, bool relu6) {
  Requantization r{std::vector<int32_t>(size_t(call.p.out_channels)), std::vector<float>(size_t(call.p.out_channels))};
  for (auto& v : r.bias) v = int32_t(uniform(-100000, 100000));
  for (auto& m : r.multiplier) m = float(std::ldexp(double(uniform(1, 1 << 20)), -int(uniform(20, 36))));
  call.y_zero_point = int32_t(call.y_signed ? uniform(-128, 127) : uniform(0, 255));
  call.y_min = call.y_signed ? -128 : 0, call.y_max = call.y_signed ? 127 : 255;
  if (chance(0.3)) call.y_min = call.y_zero_point;                                                // relu
  if (relu6 && chance(0.2)) call.y_max = std::min<int32_t>(call.y_max, call.y_zero_point + 40);  // relu6
  if (call.output == QOutput::Float32 && chance(0.3)) call.f_min = 0, call.f_max = 6;
  return r;
}

// A random dense (or grouped) quantized call on problem p: signed or unsigned input, the output
// kind by round, zero points often at the ends, centred weights w - w_zero_point mostly within
// int8 with the extremes often (int8_weights) or beyond it, inputs often at 0 and 255.
struct DenseQConv {
  QConvCall call;
  std::vector<int16_t> w;
  std::vector<uint8_t> x;
  Requantization r;
};
DenseQConv draw_dense_qconv(const ConvProblem& p, int round, bool int8_weights, bool relu6) {
  DenseQConv q;
  q.call.p = p;
  q.call.x_signed = chance(0.5);
  q.call.output = QOutput(round % 3);
  q.call.y_signed = chance(0.5);
  const int64_t lo = q.call.x_signed ? -128 : 0;
  q.call.x_zero_point = int32_t(chance(0.3) ? (chance(0.5) ? lo : lo + 255) : uniform(lo, lo + 255));
  q.w.resize(size_t(p.out_channels * (p.in_channels / p.groups) * p.kernel_d * p.kernel_h * p.kernel_w));
  for (auto& v : q.w)
    v = int16_t(int8_weights ? (chance(0.2) ? (chance(0.5) ? -128 : 127) : uniform(-128, 127)) : uniform(-255, 255));
  q.r = draw_requantization(q.call, relu6);
  q.call.multiplier = q.r.multiplier.data();
  q.x.resize(size_t(p.batch * p.in_channels * p.in_d * p.in_h * p.in_w));
  for (auto& v : q.x) v = uint8_t(chance(0.2) ? (chance(0.5) ? 0 : 255) : uniform(0, 255));
  q.call.x = q.x.data();
  return q;
}

void qconv_sweep() {
  const int64_t passes[] = {1, 4, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80};  // 16-channel blocks
  for (int round = 0; round < 480; ++round) {
    const bool int8_weights = round % 2 == 0;
    ConvProblem p;
    p.rank = round % 8 == 7 ? 3 : 2;
    p.layout = chance(0.5) ? Layout::NHWC : Layout::NCHW;
    p.batch = uniform(1, 2);
    if (round % 5 == 4) {  // depthwise, channel counts around the 16 lanes
      p.groups = p.in_channels = p.out_channels = uniform(1, 35);
    } else if (int8_weights) {
      p.groups = chance(0.2) ? uniform(2, 4) : 1;
      const int64_t kind = uniform(0, 9);  // few channels, whole quads (no padded ones), any up to 70
      p.in_channels = p.groups * (kind < 3   ? uniform(1, 9)
                                  : kind < 7 ? 4 * uniform(1, std::max<int64_t>(1, 17 / p.groups))
                                             : uniform(1, 70) / p.groups + 1);
      p.out_channels = p.groups * (chance(0.7) ? passes[uniform(0, 14)] : uniform(1, 70));
    } else {
      p.groups = chance(0.2) ? uniform(2, 4) : 1;
      p.in_channels = p.groups * uniform(1, 19);
      p.out_channels = p.groups * uniform(1, 35);
    }
    p.kernel_h = uniform(1, 4), p.kernel_w = uniform(1, 4);
    p.stride_h = uniform(1, 2), p.stride_w = uniform(1, 2);
    p.dilation_h = chance(0.2) ? 2 : 1, p.dilation_w = chance(0.2) ? 2 : 1;
    p.pad_top = uniform(0, 2), p.pad_bottom = uniform(0, 2), p.pad_left = uniform(0, 2), p.pad_right = uniform(0, 2);
    p.in_h = uniform(p.dilation_h * (p.kernel_h - 1) + 1, 9);
    const int64_t width_tile = 6 * p.stride_w * uniform(1, 2);
    p.in_w = std::max(p.dilation_w * (p.kernel_w - 1) + 1, width_tile + uniform(-1, 1));
    if (int8_weights && chance(0.3)) p.in_w = uniform(15, 48);  // 16- and 32-pixel row copies, their tails
    if (int8_weights && chance(0.35)) p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 0;
    if (p.rank == 3) {
      p.kernel_d = uniform(1, 3), p.in_d = uniform(p.kernel_d, 4), p.pad_front = uniform(0, 1), p.pad_back = 0;
    }
    p.out_d = conv_output_size(p.in_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back);
    p.out_h = conv_output_size(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom);
    p.out_w = conv_output_size(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right);
    const DenseQConv q = draw_dense_qconv(p, round, int8_weights, false);
    const int64_t group_in = p.in_channels / p.groups;
    const size_t out_bytes = size_t(conv_outputs(p)) * (q.call.output == QOutput::Quantized ? 1 : 4);
    const QConvPlan plan(q.w.data(), chance(0.8) ? q.r.bias.data() : nullptr, p.out_channels, group_in, p.kernel_d,
                         p.kernel_h, p.kernel_w, p.groups);
    check_qconv(plan, q.call, out_bytes, int8_weights);
  }
}

// Channels-first 1x1 problems (stride 1, no padding) around qconv_pointwise_vnni's 64-pixel
// chunks (planes of 64 to 300 pixels, their tails), its channel quads and its blocks of 6
// output channels, groups, 1-D to 3-D, int8 weights in most rounds.
void qconv_pointwise_sweep() {
  for (int round = 0; round < 240; ++round) {
    const bool int8_weights = round % 4 != 3;
    ConvProblem p;
    p.rank = round % 8 == 5 ? 3 : round % 8 == 6 ? 1 : 2;
    p.layout = Layout::NCHW;
    p.batch = uniform(1, 2);
    p.kernel_h = p.kernel_w = 1;
    p.groups = chance(0.2) ? uniform(2, 3) : 1;
    p.in_channels = p.groups * (chance(0.5) ? 4 * uniform(1, 9) : uniform(2, 37));
    p.out_channels = p.groups * (chance(0.5) ? 6 * uniform(1, 8) + uniform(-1, 1) : uniform(1, 40));
    const int64_t plane = chance(0.5) ? 64 * uniform(1, 4) + uniform(-3, 3) : uniform(64, 300);
    if (p.rank == 1) {
      p.in_h = 1, p.in_w = plane;
    } else if (p.rank == 2) {
      p.in_h = uniform(1, 8), p.in_w = std::max<int64_t>(1, plane / p.in_h);
    } else {
      p.in_d = uniform(1, 3), p.in_h = uniform(1, 6), p.in_w = std::max<int64_t>(1, plane / (p.in_d * p.in_h));
    }
    p.out_d = p.in_d, p.out_h = p.in_h, p.out_w = p.in_w;
    const DenseQConv q = draw_dense_qconv(p, round, int8_weights, true);
    const int64_t group_in = p.in_channels / p.groups;
    const size_t out_bytes = size_t(conv_outputs(p)) * (q.call.output == QOutput::Quantized ? 1 : 4);
    const QConvPlan plan(q.w.data(), chance(0.8) ? q.r.bias.data() : nullptr, p.out_channels, group_in, 1, 1, 1,
                         p.groups);
    check_qconv(plan, q.call, out_bytes, int8_weights);
  }
}

// Depthwise problems around the VNNI kernels' tiles (qconv_depthwise_rows_vnni: 64 output
// pixels in 4 vectors of 16, 4/stride loads a block, windows of 4 taps;
// qconv_depthwise_channels_vnni: 64 channels, taps in groups of 4) and the s16 kernel's 16
// channels and qconv_depthwise_transposed_vnni's small planes: channel counts around multiples of 16 up to 145,
// widths around 16, 32 and 64 pixels (and narrower), strides 1, 2 and 4,
// kernel widths across the 4-tap groups, padding on each side, dilation across rows, 1-D to 3-D, centred weights mostly
// within int8 (the row kernel's own path) and sometimes beyond (its stand-in).
void qconv_depthwise_sweep() {
  for (int round = 0; round < 160; ++round) {
    ConvProblem p;
    p.rank = round % 6 == 5 ? 3 : (round % 6 == 4 ? 1 : 2);
    p.layout = chance(0.4) ? Layout::NHWC : Layout::NCHW;
    p.batch = uniform(1, 2);
    p.groups = p.in_channels = p.out_channels = chance(0.4) ? uniform(1, 5) : 16 * uniform(1, 9) + uniform(-1, 1);
    p.kernel_w = chance(0.5) ? 3 : uniform(1, 9);
    p.stride_w = chance(0.2) ? 4 : uniform(1, 2);
    p.dilation_w = chance(0.1) ? 2 : 1;
    p.pad_left = uniform(0, p.kernel_w), p.pad_right = uniform(0, p.kernel_w);
    // (every fourth round: narrow rows, so small planes of many channels meet the transposed kernel)
    const int64_t out_w = round % 4 == 3 ? uniform(1, 20) : 16 * uniform(1, 5) + uniform(-2, 2);
    p.in_w = std::max<int64_t>(p.dilation_w * (p.kernel_w - 1) + 1 - p.pad_left - p.pad_right,
                               (out_w - 1) * p.stride_w + p.dilation_w * (p.kernel_w - 1) + 1 - p.pad_left -
                                   p.pad_right + uniform(0, p.stride_w - 1));
    p.in_w = std::max<int64_t>(p.in_w, 1);
    p.in_h = p.kernel_h = 1;
    if (p.rank >= 2) {
      p.kernel_h = uniform(1, 4), p.stride_h = uniform(1, 3), p.dilation_h = chance(0.3) ? 2 : 1;
      p.pad_top = uniform(0, 2), p.pad_bottom = uniform(0, 2);
      p.in_h = std::max<int64_t>(1, uniform(p.dilation_h * (p.kernel_h - 1) + 1 - p.pad_top - p.pad_bottom, 7));
    }
    if (p.rank == 3) p.kernel_d = uniform(1, 3), p.in_d = uniform(p.kernel_d, 4), p.pad_front = uniform(0, 1);
    p.out_d = conv_output_size(p.in_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back);
    p.out_h = conv_output_size(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom);
    p.out_w = conv_output_size(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right);
    if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) continue;
    QConvCall call;
    call.p = p;
    call.x_signed = chance(0.5);
    call.output = QOutput(round % 3);
    call.y_signed = chance(0.5);
    const int64_t lo = call.x_signed ? -128 : 0;
    const int64_t zero_points[] = {lo, lo + 128, lo + 255, uniform(lo, lo + 255)};
    call.x_zero_point = int32_t(zero_points[uniform(0, 3)]);
    const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w;
    const bool wide = chance(0.15);
    std::vector<int16_t> w(size_t(p.out_channels * taps));
    for (auto& v : w) v = int16_t(wide ? uniform(-255, 255) : uniform(-128, 127));
    const Requantization r = draw_requantization(call, true);
    call.multiplier = r.multiplier.data();
    std::vector<uint8_t> x(size_t(p.batch * p.in_channels * p.in_d * p.in_h * p.in_w));
    for (auto& v : x) v = uint8_t(uniform(0, 255));
    call.x = x.data();
    const size_t out_bytes = size_t(conv_outputs(p)) * (call.output == QOutput::Quantized ? 1 : 4);
    const QConvPlan plan(w.data(), chance(0.8) ? r.bias.data() : nullptr, p.out_channels, 1, p.kernel_d, p.kernel_h,
                         p.kernel_w, p.groups);
    check_qconv(plan, call, out_bytes, !wide);
  }
}
// ------------------------------------------------------------------------------------------

// Each ISA's strided block transpose (KernelTable::transpose_f32_strided, the fold's channels-first
// to channels-last copy) against the plain loop: rows and columns around its 16-lane blocks and
// 32-row chunks, strides wider than the block, and nothing written outside the block.
void transpose_block_sweep() {
  for (const std::string& isa : available_isas()) {
    const KernelTable& table = table_for_isa(isa);
    if (!table.transpose_f32_strided) continue;
    for (const int64_t rows : {1, 3, 15, 16, 17, 32, 33, 70})
      for (const int64_t cols : {1, 5, 16, 17, 31, 32, 40}) {
        const int64_t from_stride = cols + 3, to_stride = rows + 5;
        std::vector<float> from(size_t(rows * from_stride)), to(size_t(cols * to_stride), -7.0f);
        for (size_t i = 0; i < from.size(); ++i) from[i] = float(i % 997) - 300.0f;
        table.transpose_f32_strided(from.data(), rows, cols, from_stride, to.data(), to_stride);
        bool ok = true;
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t i = 0; i < to_stride; ++i)
            ok = ok && to[size_t(j * to_stride + i)] == (i < rows ? from[size_t(i * from_stride + j)] : -7.0f);
        if (!ok) fail("transpose_f32_strided " + isa + " " + std::to_string(rows) + "x" + std::to_string(cols));
      }
  }
}

// Every algorithm this machine runs must have run kMinCases cases (but the float64 references,
// which are the oracle).
template <class Algorithm>
void require_cases(const std::vector<const Algorithm*>& algorithms, const Algorithm* oracle) {
  for (const Algorithm* a : algorithms) {
    if (a == oracle) {
      std::printf("  oracle  %s\n", a->name);
      continue;
    }
    const int n = g_cases[a->name];
    std::printf("  %6d  %s\n", n, a->name);
    if (n < kMinCases) fail(std::string(a->name) + " ran only " + std::to_string(n) + " cases");
  }
}

template <class F>
void timed(const char* what, F f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %.2f s\n", what, s);
  std::fflush(stdout);
}

}  // namespace

// Channels-first 1x1 planes too large for L2 (the flat PixelVec engine's segments, each copied
// slice by slice into the thread's buffer, EnginePlan::copies_segment): input channels around
// its 32 KiB slices of 64-pixel segments (128 channels a slice; 65 is the least of more than
// 256 KiB on a 1024-pixel plane), planes around its 64-pixel segments and 16-pixel vectors,
// output channels around its 6-channel chunks (6 or fewer: one chunk, nothing copied).  Every
// algorithm against the reference, and the forced PixelVec on 1 and kThreads threads bit for bit.
// (Its own draws: the cases after it stay as they were.)
void pointwise_segments_sweep() {
  const std::mt19937_64 draws_after = g_rng;
  for (int i = 0; i < 20; ++i) {
    ConvGeometry g;
    g.dtype = i % 5 == 4 ? DType::Float64 : DType::Float32;
    g.N = chance(0.25) ? 2 : 1;
    g.C = pick(std::vector<int64_t>{65, 127, 128, 129, 255, 256, 257});
    g.K = pick(std::vector<int64_t>{5, 6, 7, 12, 13, 64});
    const int64_t H = pick(std::vector<int64_t>{16, 17, 33}), W = pick(std::vector<int64_t>{32, 63, 64, 65, 66, 79});
    g.h = {H, 1, 1, 1, 0, 0};
    g.w = {W, 1, 1, 1, 0, 0};
    g.activation = pick(kActivations);
    g.negative_slope = pick(kSlopes);
    g.bias = chance(0.8);
    g.reused = chance(0.5);
    g.layout = Layout::NCHW;
    ConvProblem p = make_problem(g);
    ConvCase c = make_conv_case(p, g.bias);
    check_every_conv_algorithm(c);
    for (const ConvAlgorithm* a : all_conv_algorithms()) {
      if (a->dtype != p.dtype || std::strstr(a->name, "_pixelvec_") == nullptr || !a->accepts(p)) continue;
      const std::vector<double> one = run_conv(p, c.xb, c.wb, c.bb, a, 1);
      const std::vector<double> more = run_conv(p, c.xb, c.wb, c.bb, a, kThreads);
      if (std::memcmp(one.data(), more.data(), one.size() * sizeof(double)) != 0)
        fail(std::string(a->name) + ": 1 and " + std::to_string(kThreads) + " threads differ on " + describe(p));
    }
  }
  g_rng = draws_after;
}

int main() {
  // Another draw of the sweep (CPPCONV_TEST_SEED=n) shakes out what the fixed one misses.
  if (const char* seed = std::getenv("CPPCONV_TEST_SEED")) g_rng.seed(std::strtoull(seed, nullptr, 10));
  std::printf("ISAs:");
  for (const std::string& isa : available_isas()) std::printf(" %s", isa.c_str());
  std::printf(" (default %s)\n", default_isa().c_str());
  timed("conv2d sweep", conv2d_sweep);
  timed("channels-first 1x1 segments", pointwise_segments_sweep);
  timed("1-D and 3-D lowerings", lowering_sweep);
  timed("strided block transpose", transpose_block_sweep);
  timed("live taps", live_taps_sweep);
  timed("unpacked weights", unpack_sweep);
  timed("pooling", pool_sweep);
  timed("transposed convolution", conv_transpose_sweep);
  timed("quantized convolution", qconv_sweep);
  timed("quantized depthwise convolution", qconv_depthwise_sweep);
  timed("quantized pointwise convolution", qconv_pointwise_sweep);
  timed("channels-first 3-D depthwise", depthwise_slices_sweep);
  timed("bfloat16 1-D and 3-D lowerings", bf16_lowering_sweep);

  std::printf("cases per algorithm:\n");
  require_cases(all_conv_algorithms(), &conv_reference_f64);
  require_cases(all_pool_algorithms(), &pool2d_reference_f64);
  require_cases(all_conv_transpose_algorithms(), &conv_transpose2d_reference_f64);
  require_cases(all_qconv_algorithms(), &qconv_reference);
  for (const ConvAlgorithm* a : all_conv_algorithms()) {
    if (!a->unpack) continue;
    const std::string name = std::string("unpack ") + a->name;
    std::printf("  %6d  %s\n", g_cases[name], name.c_str());
    if (g_cases[name] < kMinCases) fail(name + " ran only " + std::to_string(g_cases[name]) + " cases");
  }
  std::printf("  %6d  live taps\n", g_cases["live taps"]);
  if (g_cases["live taps"] < kMinCases) fail("live taps ran only " + std::to_string(g_cases["live taps"]) + " cases");
  for (const Lowering l : {Lowering::None, Lowering::Flatten, Lowering::IntoBatch, Lowering::Gather,
                           Lowering::Interleave, Lowering::FoldRows, Lowering::TapsAsChannels, Lowering::DilationRows,
                           Lowering::ChannelsFirst, Lowering::ChannelsLast}) {
    const std::string name = std::string("lowering ") + lowering_name(l);
    std::printf("  %6d  %s\n", g_cases[name], name.c_str());
    if (g_cases[name] < kMinCases) fail(name + " ran only " + std::to_string(g_cases[name]) + " cases");
  }
  if (g_failures) {
    std::printf("%d FAILURES\n", g_failures);
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
