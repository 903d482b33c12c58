// The one binding file: exposes the C++ core to python/cppconv.  The Python layer has already
// normalised and validated the arguments; the checks here only guard the native boundary
// (dtype, contiguity, shapes), so a bad call raises instead of reading out of bounds.
// Arrays are never converted here: a pybind11 forcecast would be a hidden copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>
#include <tuple>

#include "conv.h"
#include "conv_transpose.h"
#include "dispatch.h"
#include "memory.h"
#include "pool.h"

namespace py = pybind11;
using namespace cppconv;

namespace {
void bind_pool_and_transpose(py::module_& m);  // the pooling / transposed-conv section below
}  // namespace

namespace {

DType dtype_of(const py::array& a, const char* name) {
  if (a.dtype().equal(py::dtype::of<float>())) return DType::Float32;
  if (a.dtype().equal(py::dtype::of<double>())) return DType::Float64;
  throw py::type_error(std::string(name) + ": native kernels take float32 or float64 in native byte order, got " +
                       py::str(a.dtype()).cast<std::string>());
}

void require(const py::array& a, const char* name, DType dtype, py::ssize_t ndim, bool writable) {
  if (dtype_of(a, name) != dtype) throw py::type_error(std::string(name) + ": dtype differs from the input's");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
}

// The precision modes' names, by code (Precision in cpp/conv_problem.h): what
// _native.PRECISIONS and explain() say.
constexpr const char* kPrecisionNames[] = {"highest", "high"};

Precision precision_from(int code) {
  if (code < int(Precision::Highest) || code > int(Precision::High))
    throw py::value_error("precision code out of range");
  return Precision(code);
}

using Shape4 = std::array<int64_t, 4>;

Shape4 shape4(const py::array& a) { return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)}; }

// The problem of an input of shape x (in `layout`) with the plan's weights; checks `out`
// against the result's shape when given.
Conv2dProblem make_problem(DType dtype, const Shape4& x, const Shape4* out, int64_t out_channels, int64_t group_in,
                           int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr, int64_t groups, int pad_mode, int layout,
                           int activation, int precision) {
  Conv2dProblem p;
  p.dtype = dtype;
  // -1: the process-wide setting, read once for the call.
  p.precision = precision == -1 ? get_float32_precision() : precision_from(precision);
  if (layout != 0 && layout != 1) throw py::value_error("layout code must be 0 (NCHW) or 1 (NHWC)");
  if (pad_mode < 0 || pad_mode > 3) throw py::value_error("padding_mode code out of range");
  if (activation < 0 || activation > 6) throw py::value_error("activation code out of range");
  p.layout = Layout(layout);
  p.pad_mode = PadMode(pad_mode);
  p.activation = Activation(activation);
  const bool nchw = p.layout == Layout::NCHW;
  p.batch = x[0];
  p.in_channels = x[nchw ? 1 : 3];
  p.in_h = x[nchw ? 2 : 1];
  p.in_w = x[nchw ? 3 : 2];
  p.out_channels = out_channels;
  p.kernel_h = kh;
  p.kernel_w = kw;
  p.stride_h = sh; p.stride_w = sw; p.dilation_h = dh; p.dilation_w = dw;
  p.pad_top = pt; p.pad_bottom = pb; p.pad_left = pl; p.pad_right = pr;
  p.groups = groups;
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0 || kh < 1 || kw < 1)
    throw py::value_error("stride, dilation and kernel must be >= 1 and padding >= 0");
  int64_t span_h, span_w;  // refused when they would wrap
  if (std::max({p.in_h, p.in_w, pt, pb, pl, pr}) >= kMaxIndexExtent || mul_overflows(dh, kh - 1, &span_h) ||
      mul_overflows(dw, kw - 1, &span_w))
    throw py::value_error("sizes past 2^61 do not fit cppconv's 64-bit index arithmetic");
  if (groups < 1 || p.in_channels != group_in * groups || out_channels % groups != 0)
    throw py::value_error("x channels do not match weight and groups");
  if (p.in_h < 1 || p.in_w < 1) throw py::value_error("x: empty spatial dimensions");
  const int64_t ph = p.in_h + pt + pb - span_h - 1, pw = p.in_w + pl + pr - span_w - 1;
  if (ph < 0 || pw < 0) throw py::value_error("kernel larger than the padded input");
  p.out_h = ph / sh + 1;
  p.out_w = pw / sw + 1;
  if ((p.pad_mode == PadMode::Reflect && (std::max(pt, pb) >= p.in_h || std::max(pl, pr) >= p.in_w)) ||
      (p.pad_mode == PadMode::Circular && (std::max(pt, pb) > p.in_h || std::max(pl, pr) > p.in_w)))
    throw py::value_error("padding too large for padding_mode");
  if (out) {
    const Shape4 expect = nchw ? Shape4{p.batch, out_channels, p.out_h, p.out_w}
                               : Shape4{p.batch, p.out_h, p.out_w, out_channels};
    if (*out != expect) throw py::value_error("out: shape does not match the convolution's result");
  }
  return p;
}

const ConvAlgorithm* algorithm_named(const std::string& name) {
  if (name.empty()) return nullptr;
  const ConvAlgorithm* a = find_conv_algorithm(name);
  if (!a) {
    std::string known;
    for (const ConvAlgorithm* c : all_conv_algorithms()) known += (known.empty() ? "" : ", ") + std::string(c->name);
    throw py::value_error("no conv algorithm named '" + name + "' on this machine; available: " + known);
  }
  return a;
}

struct PyConv2dPlan {
  // Keeps the weights alive when the plan borrows them.
  py::object weight_owner, bias_owner;
  std::unique_ptr<Conv2dPlan> plan;
};

PyConv2dPlan make_plan(const py::array& weight, const py::object& bias, bool copy) {
  const DType dt = dtype_of(weight, "weight");
  require(weight, "weight", dt, 4, false);
  const void* bias_ptr = nullptr;
  if (!bias.is_none()) {
    py::array b = py::reinterpret_borrow<py::array>(bias);
    require(b, "bias", dt, 1, false);
    if (b.shape(0) != weight.shape(0)) throw py::value_error("bias: length differs from weight's out channels");
    bias_ptr = b.data();
  }
  PyConv2dPlan p;
  p.plan = std::make_unique<Conv2dPlan>(dt, weight.data(), bias_ptr, weight.shape(0), weight.shape(1),
                                        weight.shape(2), weight.shape(3), copy);
  if (!copy) {
    p.weight_owner = weight;
    p.bias_owner = bias;
  }
  return p;
}

void run_plan(PyConv2dPlan& self, const py::array& x, const py::array& out, int64_t sh, int64_t sw, int64_t dh,
              int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups, int pad_mode, int layout,
              int activation, int precision, const std::string& algorithm, int num_threads) {
  Conv2dPlan& plan = *self.plan;
  require(x, "x", plan.dtype(), 4, false);
  require(out, "out", plan.dtype(), 4, true);
  const Shape4 xs = shape4(x), os = shape4(out);
  const Conv2dProblem p = make_problem(plan.dtype(), xs, &os, plan.out_channels(), plan.group_in_channels(),
                                       plan.kernel_h(), plan.kernel_w(), sh, sw, dh, dw, pt, pb, pl, pr, groups,
                                       pad_mode, layout, activation, precision);
  const ConvAlgorithm* forced = algorithm_named(algorithm);
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: the global setting), got " +
                                             std::to_string(num_threads));
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release release;
  plan.run(p, xp, yp, forced, num_threads);
}

py::dict describe(const Conv2dPlan& plan, const Conv2dProblem& p) {
  const ConvChoice c = plan.choose(p);
  py::dict d;
  d["algorithm"] = c.algorithm->name;
  d["isa"] = c.isa;
  d["threads"] = c.threads;
  d["precision"] = kPrecisionNames[int(p.precision)];
  d["flops"] = conv2d_flops(p);
  d["workspace_bytes"] = c.workspace_bytes;
  d["packed_weight_bytes"] = c.packed_bytes;
  return d;
}

}  // namespace

// Whether two C-contiguous arrays share any byte.
bool overlaps(const py::array& a, const void* b, size_t b_bytes) {
  const auto* pa = static_cast<const unsigned char*>(a.data());
  const auto* pb = static_cast<const unsigned char*>(b);
  return pa < pb + b_bytes && pb < pa + a.nbytes();
}

// The one-step path of the common call (C-contiguous float32/float64 input of the weights'
// dtype; a new output, or a C-contiguous `out` of the exact shape that shares no memory with
// the operands): for small inputs, where Python-level argument handling would cost more than
// the convolution.  Returns None whenever anything is unusual or wrong, and the Python layer
// then takes its full path (and raises its errors).  `image`: x is a 2-D image for a 2-D
// kernel.  Padding is symmetric per axis (ph, pw).  `operands`: other arrays `out` must not
// overlap (a one-shot call's borrowed weights and bias).
py::object forward(Conv2dPlan& plan, const py::handle& x_obj, const py::handle& out_obj,
                   const std::vector<py::array>& operands, bool image, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t dh, int64_t dw, int64_t groups, int pad_mode, int layout, int activation,
                   int precision, int num_threads) {
  if (num_threads < 0 || !py::isinstance<py::array>(x_obj)) return py::none();
  const auto x = py::reinterpret_borrow<py::array>(x_obj);
  const int xd = int(x.ndim());
  if (image ? xd != 2 : (xd != 3 && xd != 4)) return py::none();
  if (!(x.flags() & py::array::c_style)) return py::none();
  const py::dtype dtype = plan.dtype() == DType::Float32 ? py::dtype::of<float>() : py::dtype::of<double>();
  if (!x.dtype().equal(dtype)) return py::none();
  const bool nhwc = layout == 1;
  Shape4 xs;
  if (image) xs = nhwc ? Shape4{1, x.shape(0), x.shape(1), 1} : Shape4{1, 1, x.shape(0), x.shape(1)};
  else if (xd == 3) xs = {1, x.shape(0), x.shape(1), x.shape(2)};
  else xs = shape4(x);
  if (groups < 1 || plan.group_in_channels() * groups != xs[nhwc ? 3 : 1] || plan.out_channels() % groups != 0)
    return py::none();
  Conv2dProblem p;
  try {
    p = make_problem(plan.dtype(), xs, nullptr, plan.out_channels(), plan.group_in_channels(), plan.kernel_h(),
                     plan.kernel_w(), sh, sw, dh, dw, ph, ph, pw, pw, groups, pad_mode, layout, activation,
                     precision);
  } catch (const std::exception&) {
    return py::none();
  }
  std::vector<py::ssize_t> shape;
  if (image) shape = {p.out_h, p.out_w};
  else if (nhwc) shape = {p.batch, p.out_h, p.out_w, p.out_channels};
  else shape = {p.batch, p.out_channels, p.out_h, p.out_w};
  if (xd == 3) shape.erase(shape.begin());
  py::array out;
  if (out_obj.is_none()) {
    out = py::array(dtype, shape);
  } else {
    if (!py::isinstance<py::array>(out_obj)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_obj);
    if (!out.dtype().equal(dtype) || !(out.flags() & py::array::c_style) || !out.writeable() ||
        size_t(out.ndim()) != shape.size())
      return py::none();
    for (size_t i = 0; i < shape.size(); ++i)
      if (out.shape(py::ssize_t(i)) != shape[i]) return py::none();
    if (overlaps(out, x.data(), size_t(x.nbytes()))) return py::none();
    for (const py::array& a : operands)
      if (overlaps(out, a.data(), size_t(a.nbytes()))) return py::none();
  }
  const void* xp = x.data();
  void* yp = out.mutable_data();
  {
    py::gil_scoped_release release;
    plan.run(p, xp, yp, nullptr, num_threads);
  }
  return std::move(out);
}

// conv2d's one-step path: checks the weights and bias, borrows them for a plan, runs.
py::object conv2d_simple(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
                         const py::handle& out_obj, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                         int64_t dw, int64_t groups, int pad_mode, int layout, int activation, int precision,
                         int num_threads) {
  if (!py::isinstance<py::array>(w_obj)) return py::none();
  const auto w = py::reinterpret_borrow<py::array>(w_obj);
  const int wd = int(w.ndim());
  if ((wd != 2 && wd != 4) || !(w.flags() & py::array::c_style)) return py::none();
  DType dt;
  if (w.dtype().equal(py::dtype::of<float>())) dt = DType::Float32;
  else if (w.dtype().equal(py::dtype::of<double>())) dt = DType::Float64;
  else return py::none();
  const void* bias = nullptr;
  std::vector<py::array> operands{w};
  if (!b_obj.is_none()) {
    if (!py::isinstance<py::array>(b_obj)) return py::none();
    const auto b = py::reinterpret_borrow<py::array>(b_obj);
    operands.push_back(b);
    if (!b.dtype().equal(w.dtype()) || b.ndim() != 1 || !(b.flags() & py::array::c_style) ||
        b.shape(0) != (wd == 4 ? w.shape(0) : 1))
      return py::none();
    bias = b.data();
  }
  const Shape4 ws = wd == 2 ? Shape4{1, 1, w.shape(0), w.shape(1)} : shape4(w);
  Conv2dPlan plan(dt, w.data(), bias, ws[0], ws[1], ws[2], ws[3], /*copy=*/false);
  return forward(plan, x_obj, out_obj, operands, wd == 2, sh, sw, ph, pw, dh, dw, groups, pad_mode, layout,
                 activation, precision, num_threads);
}

// threadpoolctl's controller (python/cppconv/_threadpool.py) finds this module by these two
// exported C symbols and calls them through ctypes.
#if defined(_WIN32)
#define CPPCONV_EXPORT __declspec(dllexport)
#else
#define CPPCONV_EXPORT __attribute__((visibility("default")))
#endif
extern "C" {
CPPCONV_EXPORT int cppconv_get_num_threads() { return cppconv::get_num_threads(); }
CPPCONV_EXPORT void cppconv_set_num_threads(int n) {
  if (n >= 1) cppconv::set_num_threads(n);
}
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "cppconv's native core (internal: use the cppconv package)";

  py::class_<PyConv2dPlan>(m, "Conv2dPlan")
      .def(py::init([](const py::array& weight, const py::object& bias, bool copy) {
             return make_plan(weight, bias, copy);
           }),
           py::arg("weight"), py::arg("bias"), py::arg("copy") = true)
      .def("run", &run_plan, py::arg("x"), py::arg("out"), py::arg("stride_h"), py::arg("stride_w"),
           py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"),
           py::arg("pad_left"), py::arg("pad_right"), py::arg("groups"), py::arg("padding_mode"),
           py::arg("layout"), py::arg("activation"), py::arg("precision") = -1, py::arg("algorithm") = "",
           py::arg("num_threads") = 0)
      .def(
          "forward",
          [](PyConv2dPlan& self, const py::handle& x, const py::handle& out, bool image, int64_t sh, int64_t sw,
             int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups, int pad_mode, int layout,
             int activation, int precision, int num_threads) {
            // A layer's plan owns copies of its weights: `out` can only clash with x.
            return forward(*self.plan, x, out, {}, image, sh, sw, ph, pw, dh, dw, groups, pad_mode, layout,
                           activation, precision, num_threads);
          },
          py::arg("x"), py::arg("out"), py::arg("image"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
          py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"), py::arg("padding_mode"),
          py::arg("layout"), py::arg("activation"), py::arg("precision") = -1, py::arg("num_threads") = 0,
          "The layer's one-step path (internal): the output, or None when it does not apply.")
      .def(
          "explain",
          [](const PyConv2dPlan& self, const Shape4& x_shape, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
             int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups, int pad_mode, int layout,
             int activation, int precision) {
            const Conv2dPlan& plan = *self.plan;
            const Conv2dProblem p =
                make_problem(plan.dtype(), x_shape, nullptr, plan.out_channels(), plan.group_in_channels(),
                             plan.kernel_h(), plan.kernel_w(), sh, sw, dh, dw, pt, pb, pl, pr, groups, pad_mode,
                             layout, activation, precision);
            return describe(plan, p);
          },
          py::arg("x_shape"), py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"),
          py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
          py::arg("pad_right"), py::arg("groups"), py::arg("padding_mode"), py::arg("layout"),
          py::arg("activation"), py::arg("precision") = -1);

  m.def("conv2d",
        [](const py::array& x, const py::array& weight, const py::object& bias, const py::array& out, int64_t sh,
           int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups,
           int pad_mode, int layout, int activation, int precision, const std::string& algorithm,
           int num_threads) {
          PyConv2dPlan plan = make_plan(weight, bias, /*copy=*/false);
          run_plan(plan, x, out, sh, sw, dh, dw, pt, pb, pl, pr, groups, pad_mode, layout, activation, precision,
                   algorithm, num_threads);
        },
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
        py::arg("pad_right"), py::arg("groups"), py::arg("padding_mode"), py::arg("layout"), py::arg("activation"),
        py::arg("precision") = -1, py::arg("algorithm") = "", py::arg("num_threads") = 0,
        "One-shot convolution into `out` (internal; see cppconv.conv2d).");

  m.def(
      "explain",
      [](char dtype, const Shape4& x_shape, const Shape4& weight_shape, bool has_bias, int64_t sh, int64_t sw,
         int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups, int pad_mode,
         int layout, int activation, bool layer, int precision) {
        if (dtype != 'f' && dtype != 'd') throw py::type_error("explain: dtype must be 'f' or 'd'");
        // choose() looks at shapes only, so a plan without weights is enough here.
        static const float no_bias = 0;
        const Conv2dPlan plan(dtype == 'f' ? DType::Float32 : DType::Float64, nullptr, has_bias ? &no_bias : nullptr,
                              weight_shape[0], weight_shape[1], weight_shape[2], weight_shape[3], false, layer);
        return describe(plan, make_problem(plan.dtype(), x_shape, nullptr, plan.out_channels(),
                                           plan.group_in_channels(), plan.kernel_h(), plan.kernel_w(), sh, sw, dh,
                                           dw, pt, pb, pl, pr, groups, pad_mode, layout, activation,
                                           precision));
      },
      py::arg("dtype"), py::arg("x_shape"), py::arg("weight_shape"), py::arg("has_bias"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"),
      py::arg("pad_left"), py::arg("pad_right"), py::arg("groups"), py::arg("padding_mode"), py::arg("layout"),
      py::arg("activation"), py::arg("layer") = false, py::arg("precision") = -1);

  m.def("conv2d_simple", &conv2d_simple, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"),
        py::arg("groups"), py::arg("padding_mode"), py::arg("layout"), py::arg("activation"),
        py::arg("precision") = -1, py::arg("num_threads") = 0,
        "conv2d's one-step fast path (internal); None when it does not apply.");
  // The precision modes' names and codes (Precision in cpp/conv_problem.h); -1 in a call
  // means the process-wide setting.
  py::dict precisions;
  for (int code = 0; code <= int(Precision::High); ++code) precisions[kPrecisionNames[code]] = code;
  m.attr("PRECISIONS") = precisions;
  m.def("set_float32_precision", [](int mode) { set_float32_precision(precision_from(mode)); }, py::arg("mode"));
  m.def("get_float32_precision", []() { return int(get_float32_precision()); });
  m.def("set_num_threads", &cppconv::set_num_threads, py::arg("n"));
  m.def("reset_num_threads", &cppconv::reset_num_threads,
        "Forgets set_num_threads: OpenMP's setting (OMP_NUM_THREADS, omp_set_num_threads) applies again.");
  m.def("num_threads_is_set", &cppconv::num_threads_is_set, "Whether set_num_threads is in force.");
  m.attr("MAX_THREADS") = kMaxThreads;
  m.def("physical_memory_bytes", &physical_memory_bytes, "The most memory cppconv lets one call allocate.");
  m.def("get_num_threads", &cppconv::get_num_threads);
  m.def("available_isas", &available_isas, "ISAs compiled in that this CPU can run, weakest first.");
  m.def("default_isa", &default_isa, "The ISA chosen at import (CPPCONV_MAX_ISA caps it).");
  m.def("selected_isa", []() { return std::string(active_table().isa_name); });
  m.def("select_isa", &select_isa, py::arg("name"), "Switch the kernel table (for tests and benchmarks).");
  m.def("conv_algorithms", []() {
    std::vector<std::string> names;
    for (const ConvAlgorithm* a : all_conv_algorithms()) names.emplace_back(a->name);
    return names;
  });
  m.def(
      "fma_peak_gflops",
      [](int threads, double seconds) {
        if (threads < 1 || threads > kMaxThreads)
          throw std::invalid_argument("threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                      std::to_string(threads));
        if (!(seconds >= 0 && seconds <= 60)) throw std::invalid_argument("seconds must be in [0, 60]");
        py::gil_scoped_release release;
        return active_table().fma_peak_gflops(threads, seconds);
      },
      py::arg("threads"), py::arg("seconds") = 0.2,
      "Float32 multiply-add GFLOP/s of the selected ISA's vectors on `threads` threads (the best round "
      "in about `seconds`): the machine limit benchmarks compare against.");
  bind_pool_and_transpose(m);
  m.def("openmp", []() {
#if defined(_OPENMP)
    return true;
#else
    return false;
#endif
  });
}

// ===========================================================================================
// Pooling and transposed convolution (cpp/pool.*, cpp/conv_transpose.*).  Same contract as
// above: the Python layer validates; these checks only keep the native boundary safe.
// ===========================================================================================
namespace {

Layout layout_from(int layout) {
  if (layout != 0 && layout != 1) throw py::value_error("layout code must be 0 (NCHW) or 1 (NHWC)");
  return Layout(layout);
}

PoolKind pool_kind_from(int kind) {
  if (kind != 0 && kind != 1) throw py::value_error("pool kind code must be 0 (max) or 1 (avg)");
  return PoolKind(kind);
}

// Fills batch/channels/sizes from x and out (4-D, or 5-D with a depth axis before the height;
// C-contiguous, layout order) and checks the indices array, which must be int64 of out's
// shape when given.
int64_t* pool_arrays(Pool2dProblem& p, const py::array& x, const py::array& out, const py::object& indices,
                     py::ssize_t ndim = 4) {
  p.dtype = dtype_of(x, "x");
  require(x, "x", p.dtype, ndim, false);
  require(out, "out", p.dtype, ndim, true);
  const bool nchw = p.layout == Layout::NCHW;
  const py::ssize_t c_axis = nchw ? 1 : ndim - 1, w_axis = nchw ? ndim - 1 : ndim - 2;
  p.batch = x.shape(0);
  p.channels = x.shape(c_axis);
  p.in_h = x.shape(w_axis - 1);
  p.in_w = x.shape(w_axis);
  p.out_h = out.shape(w_axis - 1);
  p.out_w = out.shape(w_axis);
  if (ndim == 5) {
    p.in_d = x.shape(w_axis - 2);
    p.out_d = out.shape(w_axis - 2);
  }
  if (out.shape(0) != p.batch || out.shape(c_axis) != p.channels)
    throw py::value_error("out: batch or channels differ from x's");
  if (p.in_d < 1 || p.in_h < 1 || p.in_w < 1) throw py::value_error("x: empty spatial dimensions");
  if (indices.is_none()) return nullptr;
  py::array idx = py::reinterpret_borrow<py::array>(indices);
  if (!idx.dtype().equal(py::dtype::of<int64_t>())) throw py::type_error("indices: must be int64");
  if (idx.ndim() != ndim || !std::equal(out.shape(), out.shape() + ndim, idx.shape()))
    throw py::value_error("indices: shape differs from out's");
  if (!(idx.flags() & py::array::c_style) || !idx.writeable())
    throw py::value_error("indices: must be C-contiguous and writable");
  if (p.kind != PoolKind::Max) throw py::value_error("indices: only max pooling has indices");
  return static_cast<int64_t*>(idx.mutable_data());
}

const PoolAlgorithm* pool_algorithm_named(const std::string& name) {
  if (name.empty()) return nullptr;
  const PoolAlgorithm* a = find_pool_algorithm(name);
  if (!a) throw py::value_error("no pool algorithm named '" + name + "' on this machine");
  return a;
}

void run_pool(const Pool2dProblem& p, const py::array& x, const py::array& out, int64_t* idx,
              const std::string& algorithm, int num_threads) {
  const PoolAlgorithm* forced = pool_algorithm_named(algorithm);
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: the global setting), got " +
                                             std::to_string(num_threads));
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release release;
  pool2d(p, xp, yp, idx, forced, num_threads);
}

// Adaptive pooling of x (4-D, or 5-D with depth) to out's size.
void run_adaptive_pool(const py::array& x, const py::array& out, const py::object& indices, int kind, int layout,
                       const std::string& algorithm, int num_threads, py::ssize_t ndim) {
  Pool2dProblem p;
  p.kind = pool_kind_from(kind);
  p.layout = layout_from(layout);
  p.adaptive = true;
  int64_t* idx = pool_arrays(p, x, out, indices, ndim);
  if (p.out_d < 1 || p.out_h < 1 || p.out_w < 1) throw py::value_error("adaptive pooling output size below 1");
  run_pool(p, x, out, idx, algorithm, num_threads);
}

const ConvTransposeAlgorithm* transpose_algorithm_named(const std::string& name) {
  if (name.empty()) return nullptr;
  const ConvTransposeAlgorithm* a = find_conv_transpose_algorithm(name);
  if (!a) throw py::value_error("no conv_transpose algorithm named '" + name + "' on this machine");
  return a;
}

struct PyConvTranspose2dPlan {
  py::object weight_owner, bias_owner;  // keep borrowed weights alive
  std::unique_ptr<ConvTranspose2dPlan> plan;
};

PyConvTranspose2dPlan make_transpose_plan(const py::array& weight, const py::object& bias, bool copy) {
  const DType dt = dtype_of(weight, "weight");
  require(weight, "weight", dt, 4, false);
  const void* bias_ptr = nullptr;
  int64_t bias_size = 0;
  if (!bias.is_none()) {
    py::array b = py::reinterpret_borrow<py::array>(bias);
    require(b, "bias", dt, 1, false);
    bias_ptr = b.data();
    bias_size = b.shape(0);
  }
  PyConvTranspose2dPlan p;
  p.plan = std::make_unique<ConvTranspose2dPlan>(dt, weight.data(), bias_ptr, bias_size, weight.shape(0),
                                                 weight.shape(1), weight.shape(2), weight.shape(3), copy);
  if (!copy) {
    p.weight_owner = weight;
    p.bias_owner = bias;
  }
  return p;
}

ConvTranspose2dProblem make_transpose_problem(const ConvTranspose2dPlan& plan, const Shape4& x, int64_t sh,
                                              int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb,
                                              int64_t pl, int64_t pr, int64_t oph, int64_t opw, int64_t groups,
                                              int layout, int activation) {
  ConvTranspose2dProblem p;
  p.dtype = plan.dtype();
  p.layout = layout_from(layout);
  if (activation < 0 || activation > 6) throw py::value_error("activation code out of range");
  p.activation = Activation(activation);
  const bool nchw = p.layout == Layout::NCHW;
  p.batch = x[0];
  p.in_channels = x[nchw ? 1 : 3];
  p.in_h = x[nchw ? 2 : 1];
  p.in_w = x[nchw ? 3 : 2];
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0 || oph < 0 || opw < 0)
    throw py::value_error("stride and dilation must be >= 1, padding and output_padding >= 0");
  if ((oph >= sh && oph >= dh) || (opw >= sw && opw >= dw))
    throw py::value_error("output_padding must be smaller than stride or dilation");
  if (groups < 1 || p.in_channels != plan.in_channels() || p.in_channels % groups != 0)
    throw py::value_error("x channels do not match weight and groups");
  if (p.in_h < 1 || p.in_w < 1) throw py::value_error("x: empty spatial dimensions");
  p.out_channels = plan.group_out_channels() * groups;
  p.kernel_h = plan.kernel_h();
  p.kernel_w = plan.kernel_w();
  p.stride_h = sh; p.stride_w = sw; p.dilation_h = dh; p.dilation_w = dw;
  p.pad_top = pt; p.pad_bottom = pb; p.pad_left = pl; p.pad_right = pr;
  p.output_padding_h = oph; p.output_padding_w = opw;
  p.groups = groups;
  p.out_h = conv_transpose_output_size(p.in_h, p.kernel_h, sh, pt, pb, oph, dh);
  p.out_w = conv_transpose_output_size(p.in_w, p.kernel_w, sw, pl, pr, opw, dw);
  if (p.out_h < 1 || p.out_w < 1) throw py::value_error("conv_transpose2d output size below 1");
  return p;
}

void run_transpose_plan(PyConvTranspose2dPlan& self, const py::array& x, const py::array& out, int64_t sh,
                        int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                        int64_t oph, int64_t opw, int64_t groups, int layout, int activation,
                        const std::string& algorithm) {
  ConvTranspose2dPlan& plan = *self.plan;
  require(x, "x", plan.dtype(), 4, false);
  require(out, "out", plan.dtype(), 4, true);
  const ConvTranspose2dProblem p = make_transpose_problem(plan, shape4(x), sh, sw, dh, dw, pt, pb, pl, pr, oph,
                                                          opw, groups, layout, activation);
  const bool nchw = p.layout == Layout::NCHW;
  const Shape4 expect = nchw ? Shape4{p.batch, p.out_channels, p.out_h, p.out_w}
                             : Shape4{p.batch, p.out_h, p.out_w, p.out_channels};
  if (shape4(out) != expect) throw py::value_error("out: shape does not match the transposed convolution's result");
  const ConvTransposeAlgorithm* forced = transpose_algorithm_named(algorithm);
  const void* xp = x.data();
  void* yp = const_cast<void*>(out.data());
  py::gil_scoped_release release;
  plan.run(p, xp, yp, forced);
}

void bind_pool_and_transpose(py::module_& m) {
  m.def(
      "pool2d",
      [](const py::array& x, const py::array& out, const py::object& indices, int kind, int64_t kh, int64_t kw,
         int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
         bool ceil_mode, bool count_include_pad, int64_t divisor_override, int layout, const std::string& algorithm,
         int num_threads) {
        Pool2dProblem p;
        p.kind = pool_kind_from(kind);
        p.layout = layout_from(layout);
        int64_t* idx = pool_arrays(p, x, out, indices);
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
          throw py::value_error("kernel, stride and dilation must be >= 1 and padding >= 0");
        p.kernel_h = kh; p.kernel_w = kw; p.stride_h = sh; p.stride_w = sw; p.dilation_h = dh; p.dilation_w = dw;
        p.pad_top = pt; p.pad_bottom = pb; p.pad_left = pl; p.pad_right = pr;
        p.count_include_pad = count_include_pad;
        p.divisor_override = divisor_override;
        const int64_t oh = pool_output_size(p.in_h, kh, sh, pt, pb, dh, ceil_mode);
        const int64_t ow = pool_output_size(p.in_w, kw, sw, pl, pr, dw, ceil_mode);
        if (oh < 1 || ow < 1) throw py::value_error("pooling output size below 1");
        if (oh != p.out_h || ow != p.out_w) throw py::value_error("out: shape does not match the pooling's result");
        run_pool(p, x, out, idx, algorithm, num_threads);
      },
      py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("kind"), py::arg("kernel_h"), py::arg("kernel_w"),
      py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"),
      py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("ceil_mode"),
      py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("layout"), py::arg("algorithm") = "",
      py::arg("num_threads") = 0, "Max (kind 0) or average (kind 1) pooling into `out` (internal; see cppconv.max_pool2d).");

  m.def(
      "adaptive_pool2d",
      [](const py::array& x, const py::array& out, const py::object& indices, int kind, int layout,
         const std::string& algorithm, int num_threads) {
        run_adaptive_pool(x, out, indices, kind, layout, algorithm, num_threads, 4);
      },
      py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("kind"), py::arg("layout"), py::arg("algorithm") = "",
      py::arg("num_threads") = 0,
      "Adaptive max/average pooling to out's size (internal; see cppconv.adaptive_avg_pool2d).");

  m.def(
      "pool3d",
      [](const py::array& x, const py::array& out, const py::object& indices, int kind,
         const std::array<int64_t, 3>& kernel, const std::array<int64_t, 3>& stride,
         const std::array<int64_t, 3>& dilation, const std::array<int64_t, 6>& padding, bool ceil_mode,
         bool count_include_pad, int64_t divisor_override, int layout, const std::string& algorithm,
         int num_threads) {
        Pool2dProblem p;
        p.kind = pool_kind_from(kind);
        p.layout = layout_from(layout);
        int64_t* idx = pool_arrays(p, x, out, indices, 5);
        for (int a = 0; a < 3; ++a)
          if (kernel[a] < 1 || stride[a] < 1 || dilation[a] < 1 || padding[2 * a] < 0 || padding[2 * a + 1] < 0)
            throw py::value_error("kernel, stride and dilation must be >= 1 and padding >= 0");
        std::tie(p.kernel_d, p.kernel_h, p.kernel_w) = std::tie(kernel[0], kernel[1], kernel[2]);
        std::tie(p.stride_d, p.stride_h, p.stride_w) = std::tie(stride[0], stride[1], stride[2]);
        std::tie(p.dilation_d, p.dilation_h, p.dilation_w) = std::tie(dilation[0], dilation[1], dilation[2]);
        std::tie(p.pad_front, p.pad_back, p.pad_top, p.pad_bottom, p.pad_left, p.pad_right) =
            std::tie(padding[0], padding[1], padding[2], padding[3], padding[4], padding[5]);
        p.count_include_pad = count_include_pad;
        p.divisor_override = divisor_override;
        const int64_t in[3] = {p.in_d, p.in_h, p.in_w}, got[3] = {p.out_d, p.out_h, p.out_w};
        for (int a = 0; a < 3; ++a) {
          const int64_t o = pool_output_size(in[a], kernel[a], stride[a], padding[2 * a], padding[2 * a + 1],
                                             dilation[a], ceil_mode);
          if (o < 1) throw py::value_error("pooling output size below 1");
          if (o != got[a]) throw py::value_error("out: shape does not match the pooling's result");
        }
        run_pool(p, x, out, idx, algorithm, num_threads);
      },
      py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("kind"), py::arg("kernel"), py::arg("stride"),
      py::arg("dilation"), py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"),
      py::arg("divisor_override"), py::arg("layout"), py::arg("algorithm") = "", py::arg("num_threads") = 0,
      "3-D max (kind 0) or average (kind 1) pooling of 5-D arrays into `out`; kernel, stride and dilation as "
      "(d, h, w), padding as (front, back, top, bottom, left, right) (internal; see cppconv.max_pool3d).");

  m.def(
      "adaptive_pool3d",
      [](const py::array& x, const py::array& out, const py::object& indices, int kind, int layout,
         const std::string& algorithm, int num_threads) {
        run_adaptive_pool(x, out, indices, kind, layout, algorithm, num_threads, 5);
      },
      py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("kind"), py::arg("layout"), py::arg("algorithm") = "",
      py::arg("num_threads") = 0,
      "Adaptive 3-D max/average pooling of 5-D arrays to out's size (internal; see cppconv.adaptive_avg_pool3d).");

  m.def("pool_output_size", &pool_output_size, py::arg("input_size"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("pad_before"), py::arg("pad_after"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("conv_transpose_output_size", &conv_transpose_output_size, py::arg("input_size"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("pad_before"), py::arg("pad_after"), py::arg("output_padding"),
        py::arg("dilation"));
  m.def("pool_algorithms", []() {
    std::vector<std::string> names;
    for (const PoolAlgorithm* a : all_pool_algorithms()) names.emplace_back(a->name);
    return names;
  });
  m.def("conv_transpose_algorithms", []() {
    std::vector<std::string> names;
    for (const ConvTransposeAlgorithm* a : all_conv_transpose_algorithms()) names.emplace_back(a->name);
    return names;
  });
  m.def(
      "explain_pool",
      [](char dtype, const Shape4& x_shape, const Shape4& out_shape, int kind, bool adaptive, int layout) {
        Pool2dProblem p;
        if (dtype != 'f' && dtype != 'd') throw py::type_error("explain_pool: dtype must be 'f' or 'd'");
        p.dtype = dtype == 'f' ? DType::Float32 : DType::Float64;
        p.kind = pool_kind_from(kind);
        p.layout = layout_from(layout);
        p.adaptive = adaptive;
        const bool nchw = p.layout == Layout::NCHW;
        p.batch = x_shape[0];
        p.channels = x_shape[nchw ? 1 : 3];
        p.in_h = x_shape[nchw ? 2 : 1];
        p.in_w = x_shape[nchw ? 3 : 2];
        p.out_h = out_shape[nchw ? 2 : 1];
        p.out_w = out_shape[nchw ? 3 : 2];
        const PoolChoice c = choose_pool(p);
        py::dict d;
        d["algorithm"] = c.algorithm->name;
        d["isa"] = c.isa;
        d["threads"] = c.threads;
        return d;
      },
      py::arg("dtype"), py::arg("x_shape"), py::arg("out_shape"), py::arg("kind"), py::arg("adaptive"),
      py::arg("layout"));

  py::class_<PyConvTranspose2dPlan>(m, "ConvTranspose2dPlan")
      .def(py::init([](const py::array& weight, const py::object& bias, bool copy) {
             return make_transpose_plan(weight, bias, copy);
           }),
           py::arg("weight"), py::arg("bias"), py::arg("copy") = true)
      .def("run", &run_transpose_plan, py::arg("x"), py::arg("out"), py::arg("stride_h"), py::arg("stride_w"),
           py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"),
           py::arg("pad_left"), py::arg("pad_right"), py::arg("output_padding_h"), py::arg("output_padding_w"),
           py::arg("groups"), py::arg("layout"), py::arg("activation"), py::arg("algorithm") = "")
      .def(
          "explain",
          [](const PyConvTranspose2dPlan& self, const Shape4& x_shape, int64_t sh, int64_t sw, int64_t dh,
             int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t oph, int64_t opw, int64_t groups,
             int layout, int activation) {
            const ConvTranspose2dProblem p = make_transpose_problem(*self.plan, x_shape, sh, sw, dh, dw, pt, pb, pl,
                                                                    pr, oph, opw, groups, layout, activation);
            const ConvTransposeChoice c = self.plan->choose(p);
            py::dict d;
            d["algorithm"] = c.algorithm->name;
            d["isa"] = c.isa;
            d["threads"] = c.threads;
            d["flops"] = conv_transpose2d_flops(p);
            d["workspace_bytes"] = c.workspace_bytes;
            d["packed_weight_bytes"] = c.packed_bytes;
            return d;
          },
          py::arg("x_shape"), py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"),
          py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
          py::arg("pad_right"), py::arg("output_padding_h"), py::arg("output_padding_w"), py::arg("groups"),
          py::arg("layout"), py::arg("activation"));

  m.def(
      "conv_transpose2d",
      [](const py::array& x, const py::array& weight, const py::object& bias, const py::array& out, int64_t sh,
         int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t oph,
         int64_t opw, int64_t groups, int layout, int activation, const std::string& algorithm) {
        PyConvTranspose2dPlan plan = make_transpose_plan(weight, bias, /*copy=*/false);
        run_transpose_plan(plan, x, out, sh, sw, dh, dw, pt, pb, pl, pr, oph, opw, groups, layout, activation,
                           algorithm);
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("stride_h"), py::arg("stride_w"),
      py::arg("dilation_h"), py::arg("dilation_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
      py::arg("pad_right"), py::arg("output_padding_h"), py::arg("output_padding_w"), py::arg("groups"),
      py::arg("layout"), py::arg("activation"), py::arg("algorithm") = "",
      "One-shot transposed convolution into `out` (internal; see cppconv.conv_transpose2d).");
}

}  // namespace
