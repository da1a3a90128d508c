// Image tiling for the CPU rasterizer: 16x16 tiles, per-tile Gaussian lists, a tile pool.
//
// Design note (fit3d_ros.kernels): a Gaussian enters the list of every tile its pixel
// rectangle (inclusive x0, x1, y0, y1, already clipped to the image) touches; a counting
// sort fills the lists in input order, which the caller makes front-to-back depth order,
// so no per-tile sort is needed. `for_each_tile` hands tiles to at::parallel_for workers
// through an atomic counter, so cheap and expensive tiles balance across threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace fit3d_tiles {

constexpr int kTile = 16;
constexpr int kTilePixels = kTile * kTile;

struct Geometry {
  int64_t width, height, tiles_x, tiles_y;
};

inline Geometry make_geometry(int64_t width, int64_t height) {
  return {width, height, (width + kTile - 1) / kTile, (height + kTile - 1) / kTile};
}

// Per-tile lists of Gaussian rows (counting sort keeps the input, i.e. depth, order).
inline void bin_gaussians(const int32_t* rect, int64_t m, const Geometry& geo,
                          std::vector<int64_t>& offsets, std::vector<int32_t>& ids) {
  const int64_t n_tiles = geo.tiles_x * geo.tiles_y;
  offsets.assign(n_tiles + 1, 0);
  for (int64_t g = 0; g < m; ++g) {
    const int32_t* r = rect + 4 * g;
    for (int ty = r[2] / kTile; ty <= r[3] / kTile; ++ty)
      for (int tx = r[0] / kTile; tx <= r[1] / kTile; ++tx)
        ++offsets[ty * geo.tiles_x + tx + 1];
  }
  for (int64_t t = 0; t < n_tiles; ++t) offsets[t + 1] += offsets[t];
  ids.resize(offsets[n_tiles]);
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t g = 0; g < m; ++g) {
    const int32_t* r = rect + 4 * g;
    for (int ty = r[2] / kTile; ty <= r[3] / kTile; ++ty)
      for (int tx = r[0] / kTile; tx <= r[1] / kTile; ++tx)
        ids[cursor[ty * geo.tiles_x + tx]++] = static_cast<int32_t>(g);
  }
}

// Run `fn(tile)` for every tile, threads pulling tiles dynamically (tiles differ in cost).
template <typename Fn>
void for_each_tile(int64_t n_tiles, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tiles));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w)
      for (int64_t t = next.fetch_add(1); t < n_tiles; t = next.fetch_add(1)) fn(t);
  });
}

struct Tile {
  int64_t px0, py0, pw, ph;
  Tile(int64_t t, const Geometry& geo)
      : px0((t % geo.tiles_x) * kTile), py0((t / geo.tiles_x) * kTile),
        pw(std::min<int64_t>(kTile, geo.width - px0)),
        ph(std::min<int64_t>(kTile, geo.height - py0)) {}

  // Pixels of Gaussian rectangle `r` (x0, x1, y0, y1) inside this tile; false when empty.
  bool clip(const int32_t* r, int64_t& x0, int64_t& x1, int64_t& y0, int64_t& y1) const {
    x0 = std::max<int64_t>(r[0], px0);
    x1 = std::min<int64_t>(r[1], px0 + pw - 1);
    y0 = std::max<int64_t>(r[2], py0);
    y1 = std::min<int64_t>(r[3], py0 + ph - 1);
    return x0 <= x1 && y0 <= y1;
  }
};

}  // namespace fit3d_tiles
