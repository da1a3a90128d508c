// Tiled, multi-threaded CPU compositing of projected Gaussians, forward and backward.
//
// Design note (fit3d_ros.kernels, written from the 3DGS paper's description): the image is
// cut into 16x16 tiles; every tile gets the list of Gaussians whose alpha >= 1/255 pixel
// rectangle touches it, in the (front-to-back) order of the input rows, by a counting
// sort. Worker threads pull tiles from an atomic counter. Within a tile the loop runs over
// Gaussians (outer) and the pixels of that Gaussian's rectangle (inner), keeping per-pixel
// transmittance. The forward pass stores per pixel only the final transmittance and the
// index of the last contributing Gaussian; the backward pass walks each tile's list back
// to front, recovering T_i = T_{i+1} / (1 - alpha_i) (in double), accumulates a
// Gaussian's gradient over the tile's pixels and adds it to the global gradient once per
// (tile, Gaussian) under a striped lock. Memory is O(N + H*W*C) plus one list entry per
// (tile, Gaussian) overlap. Channels [0, geom_channels) send gradient to the geometry
// (means2d, conics, opacities); later channels (features) are composited with weights
// treated as constants, which is FiT3D's gradient separation.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <mutex>
#include <vector>

namespace {

constexpr int kTile = 16;
constexpr int kTilePixels = kTile * kTile;
constexpr double kAlphaMin = 1.0 / 255.0;
constexpr double kAlphaMax = 0.99;
constexpr double kTransMin = 1e-4;
constexpr int kLockStripes = 4096;

std::array<std::mutex, kLockStripes>& grad_locks() {
  static std::array<std::mutex, kLockStripes> locks;
  return locks;
}

struct Geometry {
  int64_t width, height, tiles_x, tiles_y;
};

// Per-tile lists of Gaussian rows (counting sort keeps the input, i.e. depth, order).
void bin_gaussians(const int32_t* rect, int64_t m, const Geometry& geo,
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

// Pixels of Gaussian rectangle `r` inside the tile at (px0, py0); false when empty.
inline bool clip_rect(const int32_t* r, int64_t px0, int64_t py0, int64_t pw, int64_t ph,
                      int64_t& x0, int64_t& x1, int64_t& y0, int64_t& y1) {
  x0 = std::max<int64_t>(r[0], px0);
  x1 = std::min<int64_t>(r[1], px0 + pw - 1);
  y0 = std::max<int64_t>(r[2], py0);
  y1 = std::min<int64_t>(r[3], py0 + ph - 1);
  return x0 <= x1 && y0 <= y1;
}

template <typename scalar_t>
struct Inputs {
  const scalar_t* means2d;
  const scalar_t* conics;
  const scalar_t* opac;
  const scalar_t* colors;
  const int32_t* rect;
  int64_t channels;
};

// One Gaussian's data for the pixel loops.
template <typename scalar_t>
struct Splat {
  scalar_t mx, my, o, sigma_cut;
  const scalar_t* conic;
  const scalar_t* col;

  Splat(const Inputs<scalar_t>& in, int64_t g)
      : mx(in.means2d[2 * g]), my(in.means2d[2 * g + 1]), o(in.opac[g]),
        // alpha < 1/255 for certain beyond this sigma: skip the exp (margin keeps the
        // exact test below decisive)
        sigma_cut(scalar_t(std::log(double(o) / kAlphaMin) + 1e-3)),
        conic(in.conics + 3 * g), col(in.colors + g * in.channels) {}

  // alpha at offset (dx, dy) = mean - pixel centre, 0 when skipped (sigma < 0 or alpha <
  // 1/255); also exp(-sigma) and the unclamped o*exp(-sigma). The same float operations as
  // torch_ref, shared by forward and backward so both make identical decisions.
  scalar_t alpha(scalar_t dx, scalar_t dy, scalar_t& gauss, scalar_t& raw) const {
    const scalar_t sigma =
        scalar_t(0.5) * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
    if (sigma < 0 || sigma > sigma_cut) return 0;
    gauss = std::exp(-sigma);
    raw = o * gauss;
    const scalar_t a = std::min(scalar_t(kAlphaMax), raw);
    return a < scalar_t(kAlphaMin) ? scalar_t(0) : a;
  }
};

template <typename scalar_t>
void forward_tile(int64_t t, const Inputs<scalar_t>& in, const Geometry& geo,
                  const int64_t* offsets, const int32_t* ids, scalar_t* image,
                  scalar_t* trans_out, int32_t* last_out) {
  const int64_t C = in.channels;
  const int64_t px0 = (t % geo.tiles_x) * kTile, py0 = (t / geo.tiles_x) * kTile;
  const int64_t pw = std::min<int64_t>(kTile, geo.width - px0);
  const int64_t ph = std::min<int64_t>(kTile, geo.height - py0);
  double trans[kTilePixels];
  int32_t last[kTilePixels];
  bool done[kTilePixels];
  std::fill(trans, trans + kTilePixels, 1.0);
  std::fill(last, last + kTilePixels, -1);
  std::fill(done, done + kTilePixels, false);
  int64_t n_done = 0;
  const scalar_t tmin = scalar_t(kTransMin);
  for (int64_t k = offsets[t]; k < offsets[t + 1] && n_done < pw * ph; ++k) {
    const int64_t g = ids[k];
    int64_t x0, x1, y0, y1;
    if (!clip_rect(in.rect + 4 * g, px0, py0, pw, ph, x0, x1, y0, y1)) continue;
    const Splat<scalar_t> sp(in, g);
    for (int64_t y = y0; y <= y1; ++y) {
      const scalar_t dy = sp.my - (scalar_t(y) + scalar_t(0.5));
      for (int64_t x = x0; x <= x1; ++x) {
        const int64_t p = (y - py0) * kTile + (x - px0);
        if (done[p]) continue;
        scalar_t gauss, raw;
        const scalar_t alpha = sp.alpha(sp.mx - (scalar_t(x) + scalar_t(0.5)), dy, gauss, raw);
        if (alpha == 0) continue;
        const double next = trans[p] * (1.0 - double(alpha));
        if (scalar_t(next) < tmin) {
          done[p] = true;
          ++n_done;
          continue;
        }
        const scalar_t w = alpha * scalar_t(trans[p]);
        scalar_t* dst = image + (y * geo.width + x) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += w * sp.col[c];
        trans[p] = next;
        last[p] = static_cast<int32_t>(k - offsets[t]);
      }
    }
  }
  for (int64_t y = 0; y < ph; ++y)
    for (int64_t x = 0; x < pw; ++x) {
      const int64_t pix = (py0 + y) * geo.width + px0 + x, p = y * kTile + x;
      trans_out[pix] = scalar_t(trans[p]);
      last_out[pix] = last[p];
    }
}

template <typename scalar_t>
struct Grads {
  scalar_t* means2d;
  scalar_t* conics;
  scalar_t* opac;
  scalar_t* colors;
};

template <typename scalar_t>
void backward_tile(int64_t t, const Inputs<scalar_t>& in, const Geometry& geo,
                   const int64_t* offsets, const int32_t* ids, const scalar_t* trans_final,
                   const int32_t* last_in, const scalar_t* grad_image,
                   const scalar_t* grad_alpha, int64_t geom_channels,
                   std::vector<scalar_t>& acc, std::vector<scalar_t>& dcol,
                   const Grads<scalar_t>& out) {
  const int64_t C = in.channels, Cg = geom_channels;
  const int64_t px0 = (t % geo.tiles_x) * kTile, py0 = (t / geo.tiles_x) * kTile;
  const int64_t pw = std::min<int64_t>(kTile, geo.width - px0);
  const int64_t ph = std::min<int64_t>(kTile, geo.height - py0);
  double trans[kTilePixels];
  int32_t last[kTilePixels];
  int32_t max_last = -1;
  std::fill(last, last + kTilePixels, -1);
  for (int64_t y = 0; y < ph; ++y)
    for (int64_t x = 0; x < pw; ++x) {
      const int64_t pix = (py0 + y) * geo.width + px0 + x, p = y * kTile + x;
      trans[p] = double(trans_final[pix]);
      last[p] = last_in[pix];
      max_last = std::max(max_last, last[p]);
    }
  if (max_last < 0) return;
  acc.assign(kTilePixels * std::max<int64_t>(Cg, 1), scalar_t(0));
  dcol.resize(C);
  const scalar_t amax = scalar_t(kAlphaMax);
  for (int64_t kk = max_last; kk >= 0; --kk) {
    const int64_t g = ids[offsets[t] + kk];
    int64_t x0, x1, y0, y1;
    if (!clip_rect(in.rect + 4 * g, px0, py0, pw, ph, x0, x1, y0, y1)) continue;
    const Splat<scalar_t> sp(in, g);
    const scalar_t* conic = sp.conic;
    const scalar_t* col = sp.col;
    std::fill(dcol.begin(), dcol.end(), scalar_t(0));
    scalar_t d_mx = 0, d_my = 0, d_a = 0, d_b = 0, d_c = 0, d_o = 0;
    bool touched = false;
    for (int64_t y = y0; y <= y1; ++y) {
      const scalar_t dy = sp.my - (scalar_t(y) + scalar_t(0.5));
      for (int64_t x = x0; x <= x1; ++x) {
        const int64_t p = (y - py0) * kTile + (x - px0);
        if (kk > last[p]) continue;
        const scalar_t dx = sp.mx - (scalar_t(x) + scalar_t(0.5));
        scalar_t gauss, raw;
        const scalar_t alpha = sp.alpha(dx, dy, gauss, raw);
        if (alpha == 0) continue;
        touched = true;
        const int64_t pix = y * geo.width + x;
        const double one_minus = 1.0 - double(alpha);
        const double t_before = trans[p] / one_minus;
        const scalar_t w = scalar_t(double(alpha) * t_before);
        const scalar_t* gp = grad_image + pix * C;
        scalar_t* ac = acc.data() + p * Cg;
        scalar_t* dc = dcol.data();
        scalar_t dot = 0;
        // geometry channels: colour gradient, dL/dalpha partial sum, colour behind update
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < Cg; ++c) {
          dc[c] += w * gp[c];
          dot += gp[c] * (col[c] - ac[c]);
          ac[c] = alpha * col[c] + (scalar_t(1) - alpha) * ac[c];
        }
        for (int64_t c = Cg; c < C; ++c) dc[c] += w * gp[c];  // detached feature channels
        trans[p] = t_before;
        if (raw > amax) continue;  // clamped alpha: no gradient to opacity or geometry
        const scalar_t d_alpha = scalar_t(t_before) * dot
            + grad_alpha[pix] * scalar_t(double(trans_final[pix]) / one_minus);
        d_o += d_alpha * gauss;
        const scalar_t d_sigma = -d_alpha * alpha;
        d_a += d_sigma * scalar_t(0.5) * dx * dx;
        d_b += d_sigma * dx * dy;
        d_c += d_sigma * scalar_t(0.5) * dy * dy;
        d_mx += d_sigma * (conic[0] * dx + conic[1] * dy);
        d_my += d_sigma * (conic[1] * dx + conic[2] * dy);
      }
    }
    if (!touched) continue;
    std::lock_guard<std::mutex> guard(grad_locks()[g % kLockStripes]);
    scalar_t* gc = out.colors + g * C;
    for (int64_t c = 0; c < C; ++c) gc[c] += dcol[c];
    out.means2d[2 * g] += d_mx;
    out.means2d[2 * g + 1] += d_my;
    out.conics[3 * g] += d_a;
    out.conics[3 * g + 1] += d_b;
    out.conics[3 * g + 2] += d_c;
    out.opac[g] += d_o;
  }
}

void check_inputs(const at::Tensor& means2d, const at::Tensor& conics,
                  const at::Tensor& opac, const at::Tensor& colors, const at::Tensor& rect,
                  int64_t width, int64_t height) {
  const int64_t m = means2d.size(0);
  TORCH_CHECK(width > 0 && height > 0, "width and height must be positive");
  TORCH_CHECK(means2d.dim() == 2 && means2d.size(1) == 2, "means2d must be (M,2)");
  TORCH_CHECK(conics.dim() == 2 && conics.size(0) == m && conics.size(1) == 3,
              "conics must be (M,3)");
  TORCH_CHECK(opac.dim() == 1 && opac.size(0) == m, "opacities must be (M,)");
  TORCH_CHECK(colors.dim() == 2 && colors.size(0) == m && colors.size(1) >= 1,
              "colors must be (M,C)");
  TORCH_CHECK(rect.dim() == 2 && rect.size(0) == m && rect.size(1) == 4, "rect must be (M,4)");
  TORCH_CHECK(rect.scalar_type() == at::kInt, "rect must be int32");
  for (const auto* x : {&means2d, &conics, &opac, &colors}) {
    TORCH_CHECK(x->device().is_cpu() && x->is_contiguous(),
                "inputs must be contiguous CPU tensors");
    TORCH_CHECK(x->scalar_type() == colors.scalar_type(), "inputs must share one dtype");
  }
  TORCH_CHECK(rect.device().is_cpu() && rect.is_contiguous(),
              "rect must be a contiguous CPU tensor");
  if (m > 0) {
    const auto lo = rect.min().item().toInt();
    const auto hi = std::get<0>(rect.max(0));
    const auto x_hi = hi[1].item().toInt(), y_hi = hi[3].item().toInt();
    TORCH_CHECK(lo >= 0 && x_hi < width && y_hi < height, "rect out of image");
  }
}

Geometry make_geometry(int64_t width, int64_t height) {
  return {width, height, (width + kTile - 1) / kTile, (height + kTile - 1) / kTile};
}

}  // namespace

// Returns image (H,W,C), alpha (H,W), final transmittance (H,W), last index (H,W),
// tile offsets (n_tiles+1) and tile lists (I,), the last four for backward.
std::vector<at::Tensor> raster_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                       const at::Tensor& opac, const at::Tensor& colors,
                                       const at::Tensor& rect, int64_t width, int64_t height) {
  check_inputs(means2d, conics, opac, colors, rect, width, height);
  const Geometry geo = make_geometry(width, height);
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  bin_gaussians(rect.data_ptr<int32_t>(), means2d.size(0), geo, offsets, ids);
  const int64_t C = colors.size(1);
  auto image = at::zeros({height, width, C}, colors.options());
  auto trans = at::empty({height, width}, colors.options());
  auto last = at::empty({height, width}, rect.options());
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "raster_forward", [&] {
    const Inputs<scalar_t> in{means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                              opac.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
                              rect.data_ptr<int32_t>(), C};
    scalar_t* img = image.data_ptr<scalar_t>();
    scalar_t* tr = trans.data_ptr<scalar_t>();
    int32_t* la = last.data_ptr<int32_t>();
    for_each_tile(geo.tiles_x * geo.tiles_y, [&](int64_t t) {
      forward_tile<scalar_t>(t, in, geo, offsets.data(), ids.data(), img, tr, la);
    });
  });
  auto offsets_t = at::tensor(offsets, at::TensorOptions().dtype(at::kLong));
  auto ids_t = at::tensor(ids, at::TensorOptions().dtype(at::kInt));
  return {image, 1 - trans, trans, last, offsets_t, ids_t};
}

// Gradients for means2d (M,2), conics (M,3), opacities (M,) and colors (M,C).
std::vector<at::Tensor> raster_backward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opac,
    const at::Tensor& colors, const at::Tensor& rect, const at::Tensor& offsets,
    const at::Tensor& ids, const at::Tensor& trans, const at::Tensor& last,
    const at::Tensor& grad_image, const at::Tensor& grad_alpha, int64_t width,
    int64_t height, int64_t geom_channels) {
  check_inputs(means2d, conics, opac, colors, rect, width, height);
  const int64_t C = colors.size(1);
  TORCH_CHECK(geom_channels >= 0 && geom_channels <= C, "geom_channels out of range");
  TORCH_CHECK(grad_image.is_contiguous() && grad_image.numel() == height * width * C,
              "grad_image must be contiguous (H,W,C)");
  TORCH_CHECK(grad_alpha.is_contiguous() && grad_alpha.numel() == height * width,
              "grad_alpha must be contiguous (H,W)");
  const Geometry geo = make_geometry(width, height);
  auto g_means2d = at::zeros_like(means2d);
  auto g_conics = at::zeros_like(conics);
  auto g_opac = at::zeros_like(opac);
  auto g_colors = at::zeros_like(colors);
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "raster_backward", [&] {
    const Inputs<scalar_t> in{means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                              opac.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
                              rect.data_ptr<int32_t>(), C};
    const Grads<scalar_t> out{g_means2d.data_ptr<scalar_t>(), g_conics.data_ptr<scalar_t>(),
                              g_opac.data_ptr<scalar_t>(), g_colors.data_ptr<scalar_t>()};
    const int64_t* off = offsets.data_ptr<int64_t>();
    const int32_t* id = ids.data_ptr<int32_t>();
    const scalar_t* tr = trans.data_ptr<scalar_t>();
    const int32_t* la = last.data_ptr<int32_t>();
    const scalar_t* gi = grad_image.data_ptr<scalar_t>();
    const scalar_t* ga = grad_alpha.data_ptr<scalar_t>();
    for_each_tile(geo.tiles_x * geo.tiles_y, [&](int64_t t) {
      thread_local std::vector<scalar_t> acc, dcol;
      backward_tile<scalar_t>(t, in, geo, off, id, tr, la, gi, ga, geom_channels, acc, dcol,
                              out);
    });
  });
  return {g_means2d, g_conics, g_opac, g_colors};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &raster_forward, "Composite projected Gaussians (CPU)");
  m.def("backward", &raster_backward, "Gradients of raster_forward (CPU)");
}
