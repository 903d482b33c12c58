// The register blocking of the SIMD kernels, which each backend header sets for its ISA's
// register file (kTiles); the kernels take their block sizes, and their algorithm names
// their tiles, from it.
#pragma once

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace simd {

struct TileSizes {
  int direct_vectors;         // vectors of output channels per ChannelVec block
  int direct_pixels;          // output pixels per ChannelVec block
  int pixelvec_channels;      // most output channels per PixelVec block
  int pixelvec_vectors;       // most pixel vectors per PixelVec block
  int pixelvec_registers;     // accumulators + pixel vectors a PixelVec block may hold
  int winograd_tiles;         // 4x4 tiles per Winograd block (times two vectors of channels)
  int transposed_pixels;      // most pixels per transposed-convolution micro-tile (x 2 vectors)
  int depthwise_reuse_vectors;  // most vectors of the depthwise 3x3 blocks that reuse input rows
  int depthwise_rows_min_vectors;  // shortest rows, in vectors, for the depthwise row kernel
  int wide_direct_vectors;    // vectors of output channels per wide ChannelVec block
  int wide_direct_pixels;     // output pixels per wide ChannelVec block
};

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
