// conv2d_winograd2x2_f32: 3x3, stride 1, ungrouped float32 convolution by Winograd's minimal
// filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016), on AVX2 and AVX-512.
//
// Each 2x2 block of outputs ("tile") reads a 4x4 patch d of the padded input.  With
// U = G g G^T (the 3x3 kernel g of one input/output channel pair taken to 4x4) and
// V = B^T d B (the patch taken to 4x4), the tile is A^T (sum over input channels of U * V) A:
// 16 multiply-adds per tile and channel pair where direct convolution needs 36.  The sum over
// input channels is, for each of the 16 positions, a matrix product (tiles x channels) times
// (channels x output channels), which runs through a register-blocked microkernel like the
// direct engine's ChannelVec: MR tiles x two vectors of output channels in registers,
// broadcasting one transformed input value per tile against the transformed weight vectors.
//
// Dilation d splits the outputs into d_h x d_w phases, each an undilated convolution of the
// input's matching phase (a dilated 3x3 kernel at (y, x) reads rows y, y + d, y + 2 d, which
// are rows y', y' + 1, y' + 2 of that phase).  A block keeps the tiles of every phase of its
// region together, so its padded input is one contiguous region and its outputs fill whole
// rows of the NCHW row buffer; the transforms step d pixels instead of 1.
//
// Layouts, and why:
//  - Transformed weights [k block][channel slice][pos][c][kNR]: a slice's 16 positions lie
//    together (256 KiB, kept in L2 while every tile of a block uses it; see pos_pitch).  A layer packs
//    them once; a one-shot call on one block of tiles transforms each slice inside its work
//    item instead (the transform is then a pass over the weights that the item needs anyway).
//  - The padded input of a block of tiles is copied channel-interleaved, [c block][row][col][L]
//    (the padding mode comes from the index maps), so the input transform works on vectors of
//    L channels; V is stored [pos][tile][c], one broadcast per tile and channel.
//  - The sums M are [tile][pos][kNR]; the output transform reads a tile's 16 vectors and
//    stores 2x2 outputs with bias and activation: NHWC straight to y, NCHW through a row
//    buffer [row][col][kNR] transposed into the output planes.
//
// Accuracy: the transforms mix every value of a tile's 4x4 input patch into every output of
// the tile, so an output's rounding error scales with its patch and the largest weights, not
// with its own window: a large pixel outside the window, or under a zero weight, still adds
// to it.  That breaks the direct sum's bound, so the algorithm runs only under the "high"
// precision mode (Precision::High; its bound is in README, "Guarantees").  An Inf or NaN
// input would turn into Inf - Inf = NaN in outputs it never enters, and large finite values
// can overflow in the transformed sums where the direct sum does not.  Either way some output
// comes out Inf or NaN (non-finite values only spread through the sums and transforms), so a
// call that produces one is computed again by the direct tiled kernel, which gives what IEEE
// arithmetic says.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/conv2d_tiled.h"
#include "kernels/conv2d_winograd_f32.h"
#include "kernels/isa_common.h"

#if CPPCONV_SIMD
#include "kernels/interleaved_tile.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace simd;
using V = Vec<float>;

constexpr int L = kLanes<float>;
constexpr int kNR = 2 * L;  // output channels per block: two vectors
constexpr int kMRMax = kTiles.winograd_tiles;  // tiles per microkernel block
constexpr int kPos = 16;                          // positions of a transformed 4x4 tile
constexpr int64_t kSliceBytes = 256 << 10;        // transformed weights of one (k block, slice)
constexpr int64_t kInputBudgetBytes = 512 << 10;  // V of one block of tiles
constexpr int64_t kSumBudgetBytes = 128 << 10;    // M of one block of tiles, in L2
constexpr int64_t kBlockTilesMax = kSumBudgetBytes / (kPos * kNR * 4);
// Each block of tiles reads all the transformed weights once more: in make_plan's cost model a
// block costs its tiles plus this many (measured: docs/tuning.md, "Winograd").
constexpr int64_t kBlockCostTiles = 8;

struct WinogradPlan {
  int64_t cpad;               // input channels rounded up to whole vectors
  int64_t k_blocks;           // of kNR output channels
  int64_t slice, slices;      // input channels per reduction slice (a multiple of L)
  // Dilation d: a tile's 2x2 outputs are d apart, and the d_h x d_w tiles of the phases of a
  // 2 d_h x 2 d_w output region (a "cell") go together.  Without dilation a cell is a tile.
  int64_t dh, dw, phases;
  int64_t tiles_h, tiles_w;   // cells
  int64_t block_rows, block_cols, blocks_h, blocks_w;  // blocks of cells
  int64_t block_tiles;        // tiles of a block (its cells x phases)
  int64_t tile_rows, tile_cols;  // a block's padded input, in pixels
  bool transforms_in_items;   // one-shot call, one block: weights transformed slice by slice
  bool private_blocks;        // each thread owns whole (image, block) units
};

// Enough (image, block) units for each thread to own whole ones; with fewer, the team fills
// each block's V together and splits its k blocks.
bool owns_blocks(int64_t units, int threads) { return threads == 1 || units >= 2 * int64_t(threads); }

// What make_plan minimises for blocks of rows x cols cells: the busiest thread's share, in
// tiles, of the (block, k block) passes, each costing its tiles (the last block of a row or
// column of blocks has fewer) plus kBlockCostTiles.  Threads that own blocks take whole
// rounds of them, each round the blocks' average cost (7 blocks of 28 tiles cost 4 rounds on
// two threads, not 3.5); a team that shares each block splits every block's k blocks.
// (Constant time per shape: it runs for every call, for a few hundred shapes.)
int64_t plan_cost(const ConvProblem& p, const WinogradPlan& w, int64_t rows, int64_t cols, int threads) {
  const int64_t blocks_h = ceil_div(w.tiles_h, rows), blocks_w = ceil_div(w.tiles_w, cols);
  const int64_t last_rows = w.tiles_h - (blocks_h - 1) * rows, last_cols = w.tiles_w - (blocks_w - 1) * cols;
  auto block_cost = [&](int64_t r, int64_t c) { return r * c * w.phases + kBlockCostTiles; };
  const int64_t image = (blocks_h - 1) * ((blocks_w - 1) * block_cost(rows, cols) + block_cost(rows, last_cols)) +
                        (blocks_w - 1) * block_cost(last_rows, cols) + block_cost(last_rows, last_cols);
  const int64_t units = p.batch * blocks_h * blocks_w, total = p.batch * image;
  if (!owns_blocks(units, threads)) return total * ceil_div(w.k_blocks, int64_t(threads));
  return std::max(ceil_div(units, int64_t(threads)) * total / units, block_cost(rows, cols)) * w.k_blocks;
}

WinogradPlan make_plan(const ConvProblem& p, int threads) {
  WinogradPlan w{};
  w.cpad = ceil_div(p.in_channels, L) * L;
  w.k_blocks = ceil_div(p.out_channels, kNR);
  const int64_t slice_max = std::max<int64_t>(L, kSliceBytes / (kPos * kNR * 4) / L * L);
  w.slices = ceil_div(w.cpad, slice_max);
  w.slice = ceil_div(ceil_div(w.cpad, w.slices), L) * L;
  w.slices = ceil_div(w.cpad, w.slice);
  w.dh = p.dilation_h;
  w.dw = p.dilation_w;
  w.phases = w.dh * w.dw;
  w.tiles_h = ceil_div(p.out_h, 2 * w.dh);
  w.tiles_w = ceil_div(p.out_w, 2 * w.dw);
  // A one-shot call on a single image of at most kBlockTilesMax tiles is one block whatever
  // its V takes (each slice of V is read once per k block, from L2 or L3): more blocks would
  // each transform the weights again, or have them packed up front in a pass through memory
  // that a busy host slows down badly (docs/tuning.md, "Winograd").
  const bool one_block = !p.weights_reused && p.batch == 1 && w.phases * w.tiles_h * w.tiles_w <= kBlockTilesMax;
  const int64_t max_tiles =
      one_block ? kBlockTilesMax
                : std::max<int64_t>(1, std::min(kBlockTilesMax, kInputBudgetBytes / (kPos * w.cpad * 4)));
  if (one_block) {
    w.block_rows = w.tiles_h;
    w.block_cols = w.tiles_w;
  } else {
    // The block shape that finishes first (plan_cost).  A size that needs as many blocks as
    // the next smaller one is skipped (6 rows of 14 take 3 blocks, as 5 rows do).  Blocks
    // only group the tiles: every output is summed the same way whatever they are.
    int64_t best = -1;
    w.block_rows = w.block_cols = 1;  // (when one cell is over the budget already)
    for (int64_t rows = 1; rows <= std::min(w.tiles_h, max_tiles / w.phases); ++rows) {
      const int64_t blocks_h = ceil_div(w.tiles_h, rows);
      if (ceil_div(w.tiles_h, blocks_h) != rows) continue;
      for (int64_t cols = std::min(w.tiles_w, max_tiles / (rows * w.phases)); cols >= 1; --cols) {
        const int64_t blocks_w = ceil_div(w.tiles_w, cols);
        if (ceil_div(w.tiles_w, blocks_w) != cols) continue;
        // Equal costs: the smaller block (its input tile, 2 r + 2 by 2 c + 2 pixels a cell, is
        // copied in less; 4 x 14 tiles of 128@28 ran 15 % slower than 7 x 7 on one thread).
        const int64_t cost = plan_cost(p, w, rows, cols, threads);
        if (best < 0 || cost < best || (cost == best && rows * cols < w.block_rows * w.block_cols))
          best = cost, w.block_rows = rows, w.block_cols = cols;
      }
    }
  }
  w.blocks_h = ceil_div(w.tiles_h, w.block_rows);
  w.blocks_w = ceil_div(w.tiles_w, w.block_cols);
  w.block_tiles = w.block_rows * w.block_cols * w.phases;
  w.tile_rows = w.dh * (2 * w.block_rows + 2);
  w.tile_cols = w.dw * (2 * w.block_cols + 2);
  const int64_t units = p.batch * w.blocks_h * w.blocks_w;
  w.transforms_in_items = one_block;
  w.private_blocks = owns_blocks(units, threads);
  return w;
}

int64_t slice_channels(const WinogradPlan& w, int64_t s) { return std::min(w.slice, w.cpad - s * w.slice); }

// Transformed weights of one slice are [pos][c][kNR] with the positions one cache line more
// than their size apart: at exactly 16 KiB apart the 16 streams the transform writes would all
// fall into the same L1 set and evict each other on every store.
constexpr int64_t kPosPad = 64 / sizeof(float);
int64_t pos_pitch(int64_t cs) { return cs * kNR + kPosPad; }
// Where slice s of k block kb starts in the packed weights (every slice before s is full).
int64_t packed_offset(const WinogradPlan& w, int64_t kb, int64_t s) {
  return kb * kPos * (w.cpad * kNR + w.slices * kPosPad) + s * kPos * pos_pitch(w.slice);
}

// Channels [c0, c0 + cs) of k block kb transformed, U = G g G^T, into dst [pos][cs][kNR]
// (positions pos_pitch(cs) apart); zero for channels past C and output channels past K.
void transform_weights(const ConvProblem& p, const float* w, int64_t kb, int64_t c0, int64_t cs, float* dst) {
  const int64_t C = p.in_channels, K = p.out_channels;
  // One chunk of L channels of L output channels: its (channel, tap) columns, each a vector
  // over the output channels, after in-register transposes of the L weight rows.  (The direct
  // engine's pack_block transposes the same way into [tap][c][kNR]; storing a chunk's columns
  // in order, at fixed offsets, made the one-shot 512@7 call 8 % faster than going through it.)
  alignas(64) float columns[9 * L * L];
  const V half = vset1(0.5f);
  for (int h = 0; h < 2; ++h) {
    const int64_t k0 = kb * kNR + h * L;
    const int rows = int(std::clamp<int64_t>(K - k0, 0, L));
    for (int64_t cc = 0; cc < cs; cc += L) {
      const int64_t c = c0 + cc;
      const int cv = int(std::clamp<int64_t>(C - c, 0, L));
      if (rows == 0 || cv == 0) {
        for (int pos = 0; pos < kPos; ++pos)
          for (int ci = 0; ci < L; ++ci) vstore(dst + pos * pos_pitch(cs) + (cc + ci) * kNR + h * L, vzero());
        continue;
      }
      const int64_t values = 9 * int64_t(cv);  // of each weight row in this chunk
#pragma GCC unroll 1
      for (int v = 0; v < 9; ++v) {
        V r[L];
        if (values >= (v + 1) * L) {
#pragma GCC unroll 16
          for (int i = 0; i < L; ++i) r[i] = i < rows ? vload(w + ((k0 + i) * C + c) * 9 + v * L) : vzero();
        } else {
          const auto m = lane_mask(0, values - v * L);
#pragma GCC unroll 16
          for (int i = 0; i < L; ++i) r[i] = i < rows ? vload_mask(w + ((k0 + i) * C + c) * 9 + v * L, m) : vzero();
        }
        transpose_square(r);
#pragma GCC unroll 16
        for (int j = 0; j < L; ++j) vstore(columns + (v * L + j) * L, r[j]);
      }
      for (int ci = 0; ci < L; ++ci) {
        const float* g = columns + ci * 9 * L;  // tap t of this channel at g + t * L
        V t[3][4];
#pragma GCC unroll 3
        for (int r = 0; r < 3; ++r) {
          const V g0 = vload(g + 3 * r * L), g1 = vload(g + (3 * r + 1) * L), g2 = vload(g + (3 * r + 2) * L);
          const V a = (g0 + g2) * half, b = g1 * half;
          t[r][0] = g0;
          t[r][1] = a + b;
          t[r][2] = a - b;
          t[r][3] = g2;
        }
        float* out = dst + (cc + ci) * kNR + h * L;
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const V a = (t[0][j] + t[2][j]) * half, b = t[1][j] * half;
          vstore(out + (0 * 4 + j) * pos_pitch(cs), t[0][j]);
          vstore(out + (1 * 4 + j) * pos_pitch(cs), a + b);
          vstore(out + (2 * 4 + j) * pos_pitch(cs), a - b);
          vstore(out + (3 * 4 + j) * pos_pitch(cs), t[2][j]);
        }
      }
    }
  }
}

// Packed: [k block][slice][pos][c][kNR] (see pos_pitch); nothing when the work items
// transform the weights themselves.
size_t winograd_packed_bytes(const ConvProblem& p) {
  const WinogradPlan w = make_plan(p, 1);
  return w.transforms_in_items ? 0 : size_t(packed_offset(w, w.k_blocks, 0)) * sizeof(float);
}

void winograd_pack(const ConvProblem& p, const void* weight, void* packed, int threads) {
  const WinogradPlan w = make_plan(p, 1);
  parallel_region(threads, [&] {
    DenormalGuard denormals;
#pragma omp for schedule(dynamic, 1)
    for (int64_t kb = 0; kb < w.k_blocks; ++kb)
      for (int64_t s = 0; s < w.slices; ++s)
        transform_weights(p, static_cast<const float*>(weight), kb, s * w.slice, slice_channels(w, s),
                          static_cast<float*>(packed) + packed_offset(w, kb, s));
  });
}

// One block of cells of one image; its tiles are numbered [phase][cell row][cell column].
struct Block {
  int64_t n, ty0, tx0, rows, cols, phases;  // first cell, cells
  int64_t tiles() const { return rows * cols * phases; }
};

Block block_of(const WinogradPlan& w, int64_t unit) {
  const int64_t bw = unit % w.blocks_w, bh = (unit / w.blocks_w) % w.blocks_h, n = unit / (w.blocks_w * w.blocks_h);
  const int64_t ty0 = bh * w.block_rows, tx0 = bw * w.block_cols;
  return {n, ty0, tx0, std::min(w.block_rows, w.tiles_h - ty0), std::min(w.block_cols, w.tiles_w - tx0), w.phases};
}

// Channel block cb of the block's padded input, channel-interleaved ([row][col][L], rows
// d_w (2 b.cols + 2) pixels long), into its slot of the tile buffer.
float* fill_tile(const ConvCall& call, const WinogradPlan& w, const Block& b, int64_t cb, float* tile) {
  float* tile_cb = tile + cb * w.tile_rows * w.tile_cols * L;
  fill_interleaved_tile(call, b.n, cb * L, int(std::min<int64_t>(L, call.p.in_channels - cb * L)), 2 * w.dh * b.ty0,
                        w.dh * (2 * b.rows + 2), 2 * w.dw * b.tx0, w.dw * (2 * b.cols + 2), tile_cb);
  return tile_cb;
}

// V = B^T d B of every tile of the block for channel block cb (padded input tile_cb), into
// vbuf [pos][tile][cpad].
void transform_input(const WinogradPlan& w, const Block& b, int64_t cb, const float* tile_cb, float* vbuf) {
  const int64_t row_pitch = w.dw * (2 * b.cols + 2) * L;
  const int64_t tap_down = w.dh * row_pitch, tap_right = w.dw * L;  // from one tap to the next
  const int64_t pos_pitch = w.block_tiles * w.cpad;
  float* out = vbuf + cb * L;  // tile t's values at out + t * cpad
  for (int64_t a = 0; a < w.dh; ++a)
    for (int64_t e = 0; e < w.dw; ++e)
      for (int64_t tr = 0; tr < b.rows; ++tr)
        for (int64_t tc = 0; tc < b.cols; ++tc, out += w.cpad) {
          const float* d = tile_cb + (a + 2 * w.dh * tr) * row_pitch + (e + 2 * w.dw * tc) * L;
          V h[4][4];
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {
            const float* row = d + i * tap_down;
            const V d0 = vload(row), d1 = vload(row + tap_right), d2 = vload(row + 2 * tap_right),
                    d3 = vload(row + 3 * tap_right);
            h[i][0] = d0 - d2;
            h[i][1] = d1 + d2;
            h[i][2] = d2 - d1;
            h[i][3] = d1 - d3;
          }
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const V v[4] = {h[0][j] - h[2][j], h[1][j] + h[2][j], h[2][j] - h[1][j], h[1][j] - h[3][j]};
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) vstore(out + (i * 4 + j) * pos_pitch, v[i]);
          }
        }
}

// MR tiles x kNR output channels of one position: sums over cs channels of V (one broadcast
// per tile, tiles tile_pitch apart) times U ([c][kNR]), into m ([tile][pos][kNR], tiles
// kPos * kNR apart), added to what m holds when accumulate.
template <int MR>
void multiply_tiles(const float* v, int64_t tile_pitch, const float* u, int64_t cs, float* m, bool accumulate) {
  V acc[MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2; ++j) acc[i][j] = accumulate ? vload(m + i * kPos * kNR + j * L) : vzero();
  for (int64_t c = 0; c < cs; ++c) {
    const V w0 = vload(u + c * kNR), w1 = vload(u + c * kNR + L);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const V b = vbroadcast(v + i * tile_pitch + c);
      acc[i][0] = vfma(b, w0, acc[i][0]);
      acc[i][1] = vfma(b, w1, acc[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 2; ++j) vstore(m + i * kPos * kNR + j * L, acc[i][j]);
}

using MultiplyTiles = void (*)(const float*, int64_t, const float*, int64_t, float*, bool);
template <int... MR>
constexpr std::array<MultiplyTiles, sizeof...(MR)> multiply_table(std::integer_sequence<int, MR...>) {
  return {multiply_tiles<MR + 1>...};
}
constexpr auto kMultiply = multiply_table(std::make_integer_sequence<int, kMRMax>{});

// A tile's 16 sums -> its 2x2 outputs (A^T M A), with bias and activation, for output
// channels [k0, k0 + kv): NHWC into y, NCHW into the block's row buffer [row][col][kNR].
// Returns whether every output before bias and activation is finite (see the top).
bool store_k_block(const ConvCall& call, const WinogradPlan& w, const Block& b, int64_t kb, const float* mbuf,
                   float* row_buf) {
  const ConvProblem& p = call.p;
  const bool nhwc = p.layout == Layout::NHWC, simple = activates_as_stored<float>(call);
  const FusedActivation act = stored_activation<float>(call);
  float* y = static_cast<float*>(call.y) + b.n * call.y_stride.n;
  const float* bias = static_cast<const float*>(call.bias);
  const int64_t row_len = 2 * w.dw * b.cols;  // row buffer pixels per row
  const int64_t cells = b.rows * b.cols;
  V nan_probe = vzero();  // x * 0 is NaN exactly for Inf and NaN
  for (int h = 0; h < 2; ++h) {
    const int64_t k0 = kb * kNR + h * L;
    const int kv = int(std::clamp<int64_t>(p.out_channels - k0, 0, L));
    if (kv == 0) continue;
    const auto lanes = lane_mask(0, kv);
    const V bv = bias ? vload_mask(bias + k0, lanes) : vzero();
    for (int64_t t = 0; t < b.tiles(); ++t) {
      // Output (2 tr + i, 2 tc + j) of a tile in phase (ph, pw) is row ph + d_h (2 tr + i),
      // column pw + d_w (2 tc + j) of the block.
      const int64_t ph = t / cells / w.dw, pw = t / cells % w.dw, tr = t % cells / b.cols, tc = t % b.cols;
      const float* mt = mbuf + t * kPos * kNR + h * L;
      V s[2][4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const V m0 = vload(mt + (0 * 4 + j) * kNR), m1 = vload(mt + (1 * 4 + j) * kNR);
        const V m2 = vload(mt + (2 * 4 + j) * kNR), m3 = vload(mt + (3 * 4 + j) * kNR);
        s[0][j] = m0 + m1 + m2;
        s[1][j] = m1 - m2 - m3;
      }
#pragma GCC unroll 2
      for (int a = 0; a < 2; ++a) {
        const V y0 = s[a][0] + s[a][1] + s[a][2], y1 = s[a][1] - s[a][2] - s[a][3];
        nan_probe = vfma(y1, vzero(), vfma(y0, vzero(), nan_probe));
        const V out[2] = {apply_simple_activation(y0 + bv, act), apply_simple_activation(y1 + bv, act)};
        const int64_t row = ph + w.dh * (2 * tr + a), oh = 2 * w.dh * b.ty0 + row;
        if (oh >= p.out_h) continue;
        for (int e = 0; e < 2; ++e) {
          const int64_t col = pw + w.dw * (2 * tc + e), ow = 2 * w.dw * b.tx0 + col;
          if (ow >= p.out_w) continue;
          if (nhwc) {
            float* dst = y + oh * call.y_stride.h + ow * call.y_stride.w + k0;
            vstore_mask(dst, out[e], lanes);
            if (!simple) finish_row(call, dst, kv);
          } else {
            vstore(row_buf + (row * row_len + col) * kNR + h * L, out[e]);
          }
        }
      }
    }
  }
  alignas(64) float probe[L];
  vstore(probe, nan_probe);
  const bool finite = std::all_of(probe, probe + L, [](float v) { return v == 0.0f; });
  if (nhwc || !finite) return finite;
  const int64_t count = std::min(row_len, p.out_w - 2 * w.dw * b.tx0);
  for (int64_t r = 0; r < 2 * w.dh * b.rows && 2 * w.dh * b.ty0 + r < p.out_h; ++r)
    for (int h = 0; h < 2; ++h) {
      const int64_t k0 = kb * kNR + h * L;
      const int kv = int(std::clamp<int64_t>(p.out_channels - k0, 0, L));
      if (kv == 0) continue;
      float* dst = y + k0 * call.y_stride.c + (2 * w.dh * b.ty0 + r) * call.y_stride.h + 2 * w.dw * b.tx0;
      pixels_to_planes(row_buf + r * row_len * kNR + h * L, kNR, kv, count, dst, call.y_stride.c);
      if (!simple)
        for (int c = 0; c < kv; ++c) finish_row(call, dst + c * call.y_stride.c, count);
    }
  return true;
}

// Per-thread buffers: the sums M of a block, the NCHW row buffer, a slice of transformed
// weights when the items transform their own.
struct ThreadBuffers {
  float* sums;
  float* rows;
  float* weights;
};
int64_t sums_elems(const WinogradPlan& w) { return w.block_tiles * kPos * kNR; }
int64_t rows_elems(const ConvProblem& p, const WinogradPlan& w) {
  return p.layout == Layout::NCHW ? 4 * w.block_tiles * kNR : 0;
}
int64_t weight_slice_elems(const WinogradPlan& w) { return w.transforms_in_items ? kPos * pos_pitch(w.slice) : 0; }
int64_t thread_elems(const ConvProblem& p, const WinogradPlan& w) {
  return sums_elems(w) + rows_elems(p, w) + weight_slice_elems(w);
}
int64_t tile_elems(const WinogradPlan& w) { return w.cpad * w.tile_rows * w.tile_cols; }
int64_t v_elems(const WinogradPlan& w) { return kPos * w.block_tiles * w.cpad; }

// Output channel block kb of one block of tiles whose V is in vbuf.  Returns whether its
// outputs are finite (see store_k_block).
bool compute_k_block(const ConvCall& call, const WinogradPlan& w, const Block& b, int64_t kb, const float* vbuf,
                     const ThreadBuffers& buf) {
  const int64_t tiles = b.tiles();
  const int64_t groups = ceil_div(tiles, kMRMax);
  const float* packed = static_cast<const float*>(call.packed);
  for (int64_t s = 0; s < w.slices; ++s) {
    const int64_t c0 = s * w.slice, cs = slice_channels(w, s);
    const float* u = packed + packed_offset(w, kb, s);
    if (w.transforms_in_items) {
      transform_weights(call.p, static_cast<const float*>(call.weight), kb, c0, cs, buf.weights);
      u = buf.weights;
    }
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t t0 = g * (tiles / groups) + std::min(g, tiles % groups);
      const int mr = int(tiles / groups + (g < tiles % groups ? 1 : 0));
      for (int pos = 0; pos < kPos; ++pos)
        kMultiply[size_t(mr - 1)](vbuf + (pos * w.block_tiles + t0) * w.cpad + c0, w.cpad, u + pos * pos_pitch(cs), cs,
                                  buf.sums + (t0 * kPos + pos) * kNR, s > 0);
    }
  }
  return store_k_block(call, w, b, kb, buf.sums, buf.rows);
}

void run_winograd(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  const WinogradPlan w = make_plan(p, threads);
  const int copies = w.private_blocks ? threads : 1;
  const int64_t shared_elems = tile_elems(w) + v_elems(w);
  float* scratch_base = scratch<float>(size_t(shared_elems * copies + thread_elems(p, w) * threads));
  const int64_t units = p.batch * w.blocks_h * w.blocks_w;
  const int64_t c_blocks = w.cpad / L;
  std::atomic<bool> not_finite{false};

  parallel_region(threads, [&] {
    DenormalGuard denormals;
    const int tid = thread_id();
    float* own = scratch_base + shared_elems * copies + thread_elems(p, w) * tid;
    const ThreadBuffers buf{own, own + sums_elems(w), own + sums_elems(w) + rows_elems(p, w)};
    if (w.private_blocks) {
      float* tile = scratch_base + shared_elems * tid;
      float* vbuf = tile + tile_elems(w);
#pragma omp for schedule(dynamic, 1)
      for (int64_t unit = 0; unit < units; ++unit) {
        if (not_finite.load(std::memory_order_relaxed)) continue;
        const Block b = block_of(w, unit);
        for (int64_t cb = 0; cb < c_blocks; ++cb) {
          transform_input(w, b, cb, fill_tile(call, w, b, cb, tile), vbuf);
        }
        for (int64_t kb = 0; kb < w.k_blocks; ++kb)
          if (!compute_k_block(call, w, b, kb, vbuf, buf)) {
            not_finite.store(true, std::memory_order_relaxed);
            break;
          }
      }
    } else {
      float* tile = scratch_base;
      float* vbuf = tile + tile_elems(w);
      for (int64_t unit = 0; unit < units; ++unit) {
        const Block b = block_of(w, unit);
#pragma omp for schedule(static)
        for (int64_t cb = 0; cb < c_blocks; ++cb) {
          transform_input(w, b, cb, fill_tile(call, w, b, cb, tile), vbuf);
        }
        // Dynamic: the k blocks are few and equal, and a thread that loses its core for a
        // while should not hold up a fixed share of them.
#pragma omp for schedule(dynamic, 1)
        for (int64_t kb = 0; kb < w.k_blocks; ++kb)
          if (!not_finite.load(std::memory_order_relaxed) && !compute_k_block(call, w, b, kb, vbuf, buf))
            not_finite.store(true, std::memory_order_relaxed);
      }
    }
  });
  // An Inf or NaN output (see the top): the direct kernel computes the whole call again.
  if (not_finite.load()) conv2d_tiled_f32.run(call);
}

// The larger of its own buffers and the direct kernel's, which may run the call again in the
// same per-thread scratch.
size_t winograd_workspace(const ConvProblem& p, int threads) {
  const WinogradPlan w = make_plan(p, threads);
  const int copies = w.private_blocks ? threads : 1;
  const size_t own = size_t((tile_elems(w) + v_elems(w)) * copies + thread_elems(p, w) * threads) * sizeof(float);
  return std::max(own, conv2d_tiled_f32.workspace_bytes(p, threads));
}

// Transformed weights up to this size are read from the last-level cache; larger ones stream
// from memory, 16/9 as many bytes as the direct kernel's, and only many tiles per call hide that.
constexpr double kCachedWeightBytes = 24 << 20;
constexpr int64_t kStreamedWeightTiles = 64;
// A one-shot call packs its weights up front (more than one block) only while that pass is
// small beside the arithmetic it saves.
constexpr double kOneShotPackBytes = 8 << 20;
// A one-shot call on one block transforms each 3x3 kernel into 16 values while saving
// 9 P - 16 T multiply-adds on it (P outputs, T tiles): that pays for itself from about 160
// (7x7 outputs: 185; 5x5: 81, which lost; docs/tuning.md, "Winograd"), or where the weights
// are few enough to stay in cache.
constexpr int64_t kOneShotSavedPerKernel = 160;
constexpr double kOneShotCachedWeightBytes = 4 << 20;
// Dilation up to this (a cell of its d x d phase tiles fits a block), where Winograd's
// multiply-adds, tiles past the edge included, are at most this share of the direct ones
// (0.44 for a large undilated plane).
constexpr int64_t kDilationMax = 4;
constexpr double kDilatedMaxWork = 0.6;

// Where F(2x2, 3x3) is worth its transforms: enough channels on both sides that the
// transforms are a small part of the work, at least a few tiles per call, and transformed
// weights that do not turn the call into a stream from memory (docs/tuning.md, "Winograd").
bool winograd_accepts(const ConvProblem& p) {
  if (!(p.dtype == DType::Float32 && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 &&
        p.groups == 1 && p.in_channels >= 16 && p.out_channels >= 16 && p.out_h >= 2 && p.out_w >= 2 &&
        p.out_h * p.out_w >= 16 && p.dilation_h <= kDilationMax && p.dilation_w <= kDilationMax))
    return false;
  const WinogradPlan w = make_plan(p, 1);
  const int64_t tiles = w.phases * w.tiles_h * w.tiles_w;  // of one image
  // Dilated: the cells also cover outputs past the edge (28 rows at dilation 3 are 5 cells of
  // 6 rows: 30).  Not where that wastes most of the saving.
  if (w.phases > 1 && 16 * tiles > kDilatedMaxWork * 9 * p.out_h * p.out_w) return false;
  if (w.transforms_in_items)
    return 9 * p.out_h * p.out_w - 16 * tiles >= kOneShotSavedPerKernel ||
           double(p.out_channels * p.in_channels * 9 * sizeof(float)) <= kOneShotCachedWeightBytes;
  const double packed = double(packed_offset(w, w.k_blocks, 0)) * sizeof(float);
  if (p.weights_reused) return packed <= kCachedWeightBytes || p.batch * tiles >= kStreamedWeightTiles;
  return packed <= kOneShotPackBytes;
}

// Name: <op>__<isa>_<tiles x output channels of a register block>.
constexpr AlgorithmName kWinogradName = algorithm_name("conv2d_winograd2x2_f32__" CPPCONV_ISA_NAME, kMRMax, kNR);

}  // namespace

const ConvAlgorithm conv2d_winograd2x2_f32 = {kWinogradName.text,    DType::Float32,  winograd_accepts,
                                              winograd_packed_bytes, winograd_pack,   winograd_workspace,
                                              run_winograd,          Precision::High, 0,
                                              /*adds_residual=*/true};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // CPPCONV_SIMD
