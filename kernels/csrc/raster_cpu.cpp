// Multi-threaded CPU compositing of projected Gaussians, forward and backward.
//
// Design note (fit3d_ros.kernels, written from the 3DGS paper's description): tiles and
// their front-to-back Gaussian lists come from tiles.h. Within a tile the loop runs over
// Gaussians (outer) and the pixels of that Gaussian's alpha >= 1/255 rectangle (inner),
// keeping per-pixel transmittance. The forward pass stores per pixel only the final
// transmittance and the index of the last contributing Gaussian; the backward pass walks
// each tile's list back to front, recovering T_i = T_{i+1} / (1 - alpha_i) (in double),
// accumulates a Gaussian's gradient over the tile's pixels and adds it to the global
// gradient once per (tile, Gaussian) under a striped lock. Memory is O(N + H*W*(4+D)) plus
// one list entry per (tile, Gaussian) overlap and a 16x16x(4+D) tile buffer per thread.
// Each Gaussian carries 4 geometry channels (r, g, b, camera z) and a row of the (N,D)
// feature matrix (read and written in place through `feat_rows`). With `detach_features`
// the feature channels are composited with weights treated as constants and send no
// gradient to means2d, conics or opacities (FiT3D's gradient separation).
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <mutex>
#include <vector>

#include "tiles.h"

namespace {

using namespace fit3d_tiles;

constexpr double kAlphaMin = 1.0 / 255.0;
constexpr double kAlphaMax = 0.99;
constexpr double kTransMin = 1e-4;
constexpr int kLockStripes = 4096;

std::array<std::mutex, kLockStripes>& grad_locks() {
  static std::array<std::mutex, kLockStripes> locks;
  return locks;
}

template <typename scalar_t>
struct Inputs {
  const scalar_t* means2d;   // (M,2)
  const scalar_t* conics;    // (M,3)
  const scalar_t* opac;      // (M,)
  const scalar_t* rgbd;      // (M,4)
  const scalar_t* feats;     // (N,D)
  const int64_t* feat_rows;  // (M,) row of each Gaussian in feats
  const int32_t* rect;       // (M,4)
  int64_t feat_dim;
};

// One Gaussian's data for the pixel loops.
template <typename scalar_t>
struct Splat {
  scalar_t mx, my, o, sigma_cut;
  const scalar_t* conic;
  const scalar_t* col;   // 4 geometry channels
  const scalar_t* feat;  // D feature channels

  Splat(const Inputs<scalar_t>& in, int64_t g)
      : mx(in.means2d[2 * g]), my(in.means2d[2 * g + 1]), o(in.opac[g]),
        // alpha < 1/255 for certain beyond this sigma: skip the exp (margin keeps the
        // exact test below decisive)
        sigma_cut(scalar_t(std::log(double(o) / kAlphaMin) + 1e-3)),
        conic(in.conics + 3 * g), col(in.rgbd + 4 * g),
        feat(in.feats + in.feat_rows[g] * in.feat_dim) {}

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
struct Images {  // rgbd (H,W,4), features (H,W,D), per-pixel transmittance and last index
  scalar_t* rgbd;
  scalar_t* feats;
  scalar_t* trans;
  int32_t* last;
};

// y += a * x over n entries (y never aliases x here).
template <typename scalar_t>
inline void axpy(scalar_t* __restrict y, scalar_t a, const scalar_t* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] = std::fma(a, x[c], y[c]);
}

// <a, b> over n entries: 8 independent partial sums (vectorised), summed as a tree.
template <typename scalar_t>
inline double dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  scalar_t part[8] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[c + j] * b[c + j];
  double tail = 0;
  for (; c < n; ++c) tail += double(a[c]) * double(b[c]);
  return tail + double((part[0] + part[1]) + (part[2] + part[3]))
      + double((part[4] + part[5]) + (part[6] + part[7]));
}

template <typename scalar_t>
void forward_tile(int64_t t, const Inputs<scalar_t>& in, const Geometry& geo,
                  const int64_t* offsets, const int32_t* ids, const Images<scalar_t>& img,
                  std::vector<scalar_t>& acc) {
  const int64_t D = in.feat_dim;
  const Tile tile(t, geo);
  acc.assign(kTilePixels * (4 + D), scalar_t(0));  // the tile's pixels, contiguous
  double trans[kTilePixels];
  int32_t last[kTilePixels];
  bool done[kTilePixels];
  std::fill(trans, trans + kTilePixels, 1.0);
  std::fill(last, last + kTilePixels, -1);
  std::fill(done, done + kTilePixels, false);
  int64_t n_done = 0;
  const scalar_t tmin = scalar_t(kTransMin);
  for (int64_t k = offsets[t]; k < offsets[t + 1] && n_done < tile.pw * tile.ph; ++k) {
    const int64_t g = ids[k];
    int64_t x0, x1, y0, y1;
    if (!tile.clip(in.rect + 4 * g, x0, x1, y0, y1)) continue;
    const Splat<scalar_t> sp(in, g);
    for (int64_t y = y0; y <= y1; ++y) {
      const scalar_t dy = sp.my - (scalar_t(y) + scalar_t(0.5));
      for (int64_t x = x0; x <= x1; ++x) {
        const int64_t p = (y - tile.py0) * kTile + (x - tile.px0);
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
        scalar_t* out = acc.data() + p * (4 + D);
        axpy(out, w, sp.col, 4);
        axpy(out + 4, w, sp.feat, D);
        trans[p] = next;
        last[p] = static_cast<int32_t>(k - offsets[t]);
      }
    }
  }
  for (int64_t y = 0; y < tile.ph; ++y)
    for (int64_t x = 0; x < tile.pw; ++x) {
      const int64_t pix = (tile.py0 + y) * geo.width + tile.px0 + x, p = y * kTile + x;
      img.trans[pix] = scalar_t(trans[p]);
      img.last[pix] = last[p];
      std::copy_n(acc.data() + p * (4 + D), 4, img.rgbd + pix * 4);
      std::copy_n(acc.data() + p * (4 + D) + 4, D, img.feats + pix * D);
    }
}

template <typename scalar_t>
struct Grads {
  scalar_t* means2d;
  scalar_t* conics;
  scalar_t* opac;
  scalar_t* rgbd;
  scalar_t* feats;  // (N,D), rows addressed through feat_rows
};

template <typename scalar_t>
void backward_tile(int64_t t, const Inputs<scalar_t>& in, const Geometry& geo,
                   const int64_t* offsets, const int32_t* ids, const Images<scalar_t>& fwd,
                   const Images<scalar_t>& grad, const scalar_t* grad_alpha,
                   bool detach_features, std::vector<scalar_t>& dfeat,
                   const Grads<scalar_t>& out) {
  const int64_t D = in.feat_dim;
  const Tile tile(t, geo);
  double trans[kTilePixels];
  double behind[kTilePixels] = {};
  int32_t last[kTilePixels];
  int32_t max_last = -1;
  std::fill(last, last + kTilePixels, -1);
  for (int64_t y = 0; y < tile.ph; ++y)
    for (int64_t x = 0; x < tile.pw; ++x) {
      const int64_t pix = (tile.py0 + y) * geo.width + tile.px0 + x, p = y * kTile + x;
      trans[p] = double(fwd.trans[pix]);
      last[p] = fwd.last[pix];
      max_last = std::max(max_last, last[p]);
    }
  dfeat.resize(D);
  const scalar_t amax = scalar_t(kAlphaMax);
  for (int64_t kk = max_last; kk >= 0; --kk) {
    const int64_t g = ids[offsets[t] + kk];
    int64_t x0, x1, y0, y1;
    if (!tile.clip(in.rect + 4 * g, x0, x1, y0, y1)) continue;
    const Splat<scalar_t> sp(in, g);
    const scalar_t* conic = sp.conic;
    std::fill(dfeat.begin(), dfeat.end(), scalar_t(0));
    scalar_t dcol[4] = {}, d_mx = 0, d_my = 0, d_a = 0, d_b = 0, d_c = 0, d_o = 0;
    bool touched = false;
    for (int64_t y = y0; y <= y1; ++y) {
      const scalar_t dy = sp.my - (scalar_t(y) + scalar_t(0.5));
      for (int64_t x = x0; x <= x1; ++x) {
        const int64_t p = (y - tile.py0) * kTile + (x - tile.px0);
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
        const scalar_t* g4 = grad.rgbd + pix * 4;
        const scalar_t* gf = grad.feats + pix * D;
        axpy(dcol, w, g4, 4);
        axpy(dfeat.data(), w, gf, D);
        // dC/dalpha_i = T_i (c_i - b_i), b_i the colour behind i over T_{i+1}; only the
        // scalar behind[p] = <dL/dC, b_i> is needed, updated as b <- alpha c_i + (1-alpha) b.
        double g_col = dot(g4, sp.col, 4);
        if (!detach_features) g_col += dot(gf, sp.feat, D);
        const double d_colour = g_col - behind[p];
        behind[p] = double(alpha) * g_col + (1.0 - double(alpha)) * behind[p];
        trans[p] = t_before;
        if (raw > amax) continue;  // clamped alpha: no gradient to opacity or geometry
        const scalar_t d_alpha = scalar_t(t_before * d_colour
            + double(grad_alpha[pix]) * double(fwd.trans[pix]) / one_minus);
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
    scalar_t* gf = out.feats + in.feat_rows[g] * D;
    for (int64_t c = 0; c < D; ++c) gf[c] += dfeat[c];
    for (int c = 0; c < 4; ++c) out.rgbd[4 * g + c] += dcol[c];
    out.means2d[2 * g] += d_mx;
    out.means2d[2 * g + 1] += d_my;
    out.conics[3 * g] += d_a;
    out.conics[3 * g + 1] += d_b;
    out.conics[3 * g + 2] += d_c;
    out.opac[g] += d_o;
  }
}

// Shapes, dtypes and layout only: O(1), so forward and backward both run it.
void check_shapes(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opac,
                  const at::Tensor& rgbd, const at::Tensor& feats, const at::Tensor& feat_rows,
                  const at::Tensor& rect, int64_t width, int64_t height) {
  const int64_t m = means2d.size(0);
  TORCH_CHECK(width > 0 && height > 0 && means2d.dim() == 2 && means2d.size(1) == 2 &&
              conics.dim() == 2 && conics.size(0) == m && conics.size(1) == 3 &&
              opac.dim() == 1 && opac.size(0) == m && rgbd.dim() == 2 && rgbd.size(0) == m &&
              rgbd.size(1) == 4 && feats.dim() == 2 && feat_rows.dim() == 1 &&
              feat_rows.size(0) == m && rect.dim() == 2 && rect.size(0) == m &&
              rect.size(1) == 4, "expected means2d (M,2), conics (M,3), opacities (M,), "
              "rgbd (M,4), features (N,D), feat_rows (M,), rect (M,4) and a positive size");
  TORCH_CHECK(feat_rows.scalar_type() == at::kLong && rect.scalar_type() == at::kInt,
              "feat_rows must be int64 and rect int32");
  for (const auto* x : {&means2d, &conics, &opac, &rgbd, &feats, &feat_rows, &rect})
    TORCH_CHECK(x->device().is_cpu() && x->is_contiguous(),
                "inputs must be contiguous CPU tensors");
  for (const auto* x : {&means2d, &conics, &opac, &feats})
    TORCH_CHECK(x->scalar_type() == rgbd.scalar_type(), "inputs must share one dtype");
}

// Value ranges of rect and feat_rows (scans them): forward only, since backward gets the
// same tensors saved by forward. Call after check_shapes.
void check_ranges(const at::Tensor& feats, const at::Tensor& feat_rows, const at::Tensor& rect,
                  int64_t width, int64_t height) {
  if (rect.size(0) == 0) return;
  const auto hi = std::get<0>(rect.max(0));
  TORCH_CHECK(rect.min().item().toInt() >= 0 && hi[1].item().toInt() < width &&
              hi[3].item().toInt() < height, "rect out of image");
  TORCH_CHECK(feat_rows.min().item().toLong() >= 0 &&
              (feats.size(1) == 0 || feat_rows.max().item().toLong() < feats.size(0)),
              "feat_rows out of range");
}

template <typename scalar_t>
Inputs<scalar_t> make_inputs(const at::Tensor& means2d, const at::Tensor& conics,
                             const at::Tensor& opac, const at::Tensor& rgbd,
                             const at::Tensor& feats, const at::Tensor& feat_rows,
                             const at::Tensor& rect) {
  return {means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
          opac.data_ptr<scalar_t>(),    rgbd.data_ptr<scalar_t>(),
          feats.data_ptr<scalar_t>(),   feat_rows.data_ptr<int64_t>(),
          rect.data_ptr<int32_t>(),     feats.size(1)};
}

}  // namespace

// Returns rgbd image (H,W,4), feature image (H,W,D), alpha (H,W), final transmittance
// (H,W), last index (H,W), tile offsets (n_tiles+1) and tile lists (I,); the last four
// are for backward.
std::vector<at::Tensor> raster_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                       const at::Tensor& opac, const at::Tensor& rgbd,
                                       const at::Tensor& feats, const at::Tensor& feat_rows,
                                       const at::Tensor& rect, int64_t width, int64_t height) {
  check_shapes(means2d, conics, opac, rgbd, feats, feat_rows, rect, width, height);
  check_ranges(feats, feat_rows, rect, width, height);
  const Geometry geo = make_geometry(width, height);
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  bin_gaussians(rect.data_ptr<int32_t>(), means2d.size(0), geo, offsets, ids);
  auto rgbd_img = at::empty({height, width, 4}, rgbd.options());  // every tile writes all
  auto feat_img = at::empty({height, width, feats.size(1)}, rgbd.options());  // its pixels
  auto trans = at::empty({height, width}, rgbd.options());
  auto last = at::empty({height, width}, rect.options());
  AT_DISPATCH_FLOATING_TYPES(rgbd.scalar_type(), "raster_forward", [&] {
    const auto in = make_inputs<scalar_t>(means2d, conics, opac, rgbd, feats, feat_rows, rect);
    const Images<scalar_t> img{rgbd_img.data_ptr<scalar_t>(), feat_img.data_ptr<scalar_t>(),
                               trans.data_ptr<scalar_t>(), last.data_ptr<int32_t>()};
    for_each_tile(geo.tiles_x * geo.tiles_y, [&](int64_t t) {
      thread_local std::vector<scalar_t> acc;
      forward_tile<scalar_t>(t, in, geo, offsets.data(), ids.data(), img, acc);
    });
  });
  auto offsets_t = at::tensor(offsets, at::TensorOptions().dtype(at::kLong));
  auto ids_t = at::tensor(ids, at::TensorOptions().dtype(at::kInt));
  return {rgbd_img, feat_img, 1 - trans, trans, last, offsets_t, ids_t};
}

// Gradients for means2d (M,2), conics (M,3), opacities (M,), rgbd (M,4), features (N,D).
std::vector<at::Tensor> raster_backward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opac,
    const at::Tensor& rgbd, const at::Tensor& feats, const at::Tensor& feat_rows,
    const at::Tensor& rect, const at::Tensor& offsets, const at::Tensor& ids,
    const at::Tensor& trans, const at::Tensor& last, const at::Tensor& grad_rgbd,
    const at::Tensor& grad_feats, const at::Tensor& grad_alpha, int64_t width,
    int64_t height, bool detach_features) {
  // Saved by forward, whose check_ranges already validated rect and feat_rows.
  check_shapes(means2d, conics, opac, rgbd, feats, feat_rows, rect, width, height);
  const int64_t D = feats.size(1);
  for (const auto* x : {&grad_rgbd, &grad_feats, &grad_alpha})
    TORCH_CHECK(x->is_contiguous() && x->scalar_type() == rgbd.scalar_type(),
                "gradients must be contiguous and of the input dtype");
  TORCH_CHECK(grad_rgbd.numel() == height * width * 4 &&
              grad_feats.numel() == height * width * D && grad_alpha.numel() == height * width,
              "gradients must be (H,W,4), (H,W,D) and (H,W)");
  const Geometry geo = make_geometry(width, height);
  auto g_means2d = at::zeros_like(means2d);
  auto g_conics = at::zeros_like(conics);
  auto g_opac = at::zeros_like(opac);
  auto g_rgbd = at::zeros_like(rgbd);
  auto g_feats = at::zeros_like(feats);
  AT_DISPATCH_FLOATING_TYPES(rgbd.scalar_type(), "raster_backward", [&] {
    const auto in = make_inputs<scalar_t>(means2d, conics, opac, rgbd, feats, feat_rows, rect);
    const Grads<scalar_t> out{g_means2d.data_ptr<scalar_t>(), g_conics.data_ptr<scalar_t>(),
                              g_opac.data_ptr<scalar_t>(), g_rgbd.data_ptr<scalar_t>(),
                              g_feats.data_ptr<scalar_t>()};
    const Images<scalar_t> fwd{nullptr, nullptr, trans.data_ptr<scalar_t>(),
                               last.data_ptr<int32_t>()};
    const Images<scalar_t> grad{grad_rgbd.data_ptr<scalar_t>(), grad_feats.data_ptr<scalar_t>(),
                                nullptr, nullptr};
    const int64_t* off = offsets.data_ptr<int64_t>();
    const int32_t* id = ids.data_ptr<int32_t>();
    const scalar_t* ga = grad_alpha.data_ptr<scalar_t>();
    for_each_tile(geo.tiles_x * geo.tiles_y, [&](int64_t t) {
      thread_local std::vector<scalar_t> dfeat;
      backward_tile<scalar_t>(t, in, geo, off, id, fwd, grad, ga, detach_features, dfeat, out);
    });
  });
  return {g_means2d, g_conics, g_opac, g_rgbd, g_feats};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &raster_forward, "Composite projected Gaussians (CPU)");
  m.def("backward", &raster_backward, "Gradients of raster_forward (CPU)");
}
