// Fused CPU kernels of the paper's GRU (eq. 2-5, Algorithm 1) for a pack of K members.
//
// One call runs the forward (or the backward through time) of every member, member after member:
// all T time steps of a member stay in L1/L2 instead of every elementwise op streaming the whole
// pack through the cache. Each member's numbers depend on its own row only, so a pack gives the
// same result as K solo runs, bit for bit.
//
// Layout (as trainer/models.py, "x @ W" form): Wx (D, 3H) gates [z, r, h~], Wh_zr (H, 2H),
// Wh_h (H, H), b (3H), W_out (H, C), b_out (C), all in one row of the flat (K, P) buffer.
//   z = s(x Wz + h Wzh + bz), r = s(x Wr + h Wrh + br), c = tanh(x Wh + (r*h) Wh~ + bh),
//   h' = h + z (c - h);  out = h_T W_out + b_out.
// h_0 = 0, so step 0 has no recurrent matmul (h_0 W = 0 exactly).
//
// Built with -O3 -march=native and WITHOUT -ffast-math (NaN and inf must propagate: the trainer
// detects divergence from them). exp is a branch-free polynomial the compiler vectorises:
// float within ~2 ulp (Cephes expf), double within ~1e-16 (degree-13 Taylor after Cody-Waite
// reduction). sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1 (as the eager engine).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

inline float exp_poly(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
    float fx = x * 1.44269504088896341f + magic;
    fx = fx - magic;
    int32_t n = static_cast<int32_t>(fx);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

inline double exp_poly(double x) {
    x = x > 708.0 ? 708.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    double fx = x * 1.4426950408889634074 + magic;
    fx = fx - magic;
    int64_t n = static_cast<int64_t>(fx);
    double r = x - fx * 6.93145751953125e-1;
    r = r - fx * 1.42860682030941723212e-6;
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    int64_t bits = (n + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

template <typename T>
void sigmoid_inplace(T* __restrict a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] = T(1) / (T(1) + exp_poly(-a[i]));
}

template <typename T>
void tanh_inplace(T* __restrict a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] = T(2) / (T(1) + exp_poly(T(-2) * a[i])) - T(1);
}

#if defined(__AVX512F__)
// float with AVX-512: exp_poly on 16 lanes, and 1 / d as rcp14 refined by one Newton step (relative
// error ~2^-28, below float's 2^-24) instead of the ~10-cycle vdivps; NaN stays NaN.
inline __m512 exp_poly16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);  // min(88, x) and max(-87, x) keep a NaN x
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    __m512 fx = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512i n = _mm512_cvttps_epi32(fx);
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, scale);
}

inline __m512 recip16(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

// a <- scale_out / (1 + exp(-scale_in a)) - shift: sigmoid (1, 1, 0) and tanh (2, 2, 1)
inline void logistic16(float* __restrict a, int64_t n, float scale_in, float scale_out, float shift) {
    const __m512 one = _mm512_set1_ps(1.0f), si = _mm512_set1_ps(-scale_in), so = _mm512_set1_ps(scale_out),
                 sh = _mm512_set1_ps(shift);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, a + i);
        const __m512 e = exp_poly16(_mm512_mul_ps(si, v));
        const __m512 s = _mm512_fmsub_ps(so, recip16(_mm512_add_ps(one, e)), sh);
        _mm512_mask_storeu_ps(a + i, m, s);
    }
}

template <>
void sigmoid_inplace<float>(float* __restrict a, int64_t n) {
    logistic16(a, n, 1.0f, 1.0f, 0.0f);
}

template <>
void tanh_inplace<float>(float* __restrict a, int64_t n) {
    logistic16(a, n, 2.0f, 2.0f, 1.0f);
}
#endif

// Register tile of C (RT x CT, row stride ldc) += A (RT x Kd) @ B (Kd x CT, ldb), A(i, k) = A[i * sai + k * sak]:
// the accumulators stay in vector registers for the whole k loop (the sum over k runs in order).
template <typename T, int RT, int CT>
inline void mm_tile(int64_t Kd, const T* __restrict A, int64_t sai, int64_t sak, const T* __restrict B, int64_t ldb,
                    T* __restrict C, int64_t ldc) {
    T acc[RT][CT];
    for (int r = 0; r < RT; ++r)
        for (int j = 0; j < CT; ++j) acc[r][j] = C[r * ldc + j];
    for (int64_t k = 0; k < Kd; ++k) {
        const T* b = B + k * ldb;
        for (int r = 0; r < RT; ++r) {
            const T a = A[r * sai + k * sak];
            for (int j = 0; j < CT; ++j) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < RT; ++r)
        for (int j = 0; j < CT; ++j) C[r * ldc + j] = acc[r][j];
}

// C (M x N, row stride ldc) += A (M x Kd) @ B (Kd x N, ldb) with A(i, k) = A[i * sai + k * sak], in tiles
// of 8 rows x two vectors of columns (4-row tiles: forward and evaluation ~15 % slower, backward ~20 %,
// on an AMD EPYC with AVX-512)
template <typename T>
void mm_strided(int64_t M, int64_t N, int64_t Kd, const T* __restrict A, int64_t sai, int64_t sak,
                const T* __restrict B, int64_t ldb, T* __restrict C, int64_t ldc) {
    constexpr int RT = 8, CT = 64 / sizeof(T) * 2;
    int64_t i = 0;
    for (; i + RT <= M; i += RT) {
        int64_t j = 0;
        for (; j + CT <= N; j += CT) mm_tile<T, RT, CT>(Kd, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc);
        for (int64_t r = i; r < i + RT; ++r)
            for (int64_t k = 0; k < Kd; ++k) {
                const T a = A[r * sai + k * sak];
                for (int64_t jj = j; jj < N; ++jj) C[r * ldc + jj] += a * B[k * ldb + jj];
            }
    }
    for (; i < M; ++i) {
        int64_t j = 0;
        for (; j + CT <= N; j += CT) mm_tile<T, 1, CT>(Kd, A + i * sai, sai, sak, B + j, ldb, C + i * ldc + j, ldc);
        for (int64_t k = 0; k < Kd; ++k) {
            const T a = A[i * sai + k * sak];
            for (int64_t jj = j; jj < N; ++jj) C[i * ldc + jj] += a * B[k * ldb + jj];
        }
    }
}

// C (M x N, ldc) += A (M x Kd, lda) @ B (Kd x N, ldb)
template <typename T>
inline void mm_acc(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                   int64_t ldc) {
    mm_strided(M, N, Kd, A, lda, int64_t(1), B, ldb, C, ldc);
}

// C (M x N, ldc) += A^T @ B with A (Kd x M, lda), B (Kd x N, ldb): the weight gradients
template <typename T>
inline void mm_tn_acc(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
    mm_strided(M, N, Kd, A, int64_t(1), lda, B, ldb, C, ldc);
}

template <typename T>
void transpose(int64_t R, int64_t Cc, const T* __restrict A, T* __restrict out) {  // A (R x Cc) -> out (Cc x R)
    for (int64_t j = 0; j < Cc; ++j)  // contiguous writes, strided reads (loads are the cheaper side)
        for (int64_t i = 0; i < R; ++i) out[j * R + i] = A[i * Cc + j];
}

struct Dims {
    int64_t K, B, T, D, H, C, bias, P, oWx, oWzr, oWhh, ob, oWo, obo, xs, threads;
    explicit Dims(const int64_t* d)
        : K(d[0]), B(d[1]), T(d[2]), D(d[3]), H(d[4]), C(d[5]), bias(d[6]), P(d[7]), oWx(d[8]), oWzr(d[9]),
          oWhh(d[10]), ob(d[11]), oWo(d[12]), obo(d[13]), xs(d[14]), threads(d[15]) {}
};

// Forward of member k. keep: hs (T+1, B, H), zr (T, B, 2H), rh (T, B, H), cc (T, B, H) of this member
// are kept for the backward; otherwise every step reuses slot 0 (h ping-pongs between 0 and 1).
template <typename T>
void forward_member(const Dims& d, const T* w, const T* x, T* out, T* hs, T* zr_all, T* rh_all, T* cc_all,
                    bool keep) {
    const int64_t B = d.B, H = d.H, D = d.D, G = 3 * H, TT = d.T, Dx = d.T * d.D;
    const T* Wx = w + d.oWx;
    const T* Wzr = w + d.oWzr;
    const T* Whh = w + d.oWhh;
    const T* bb = d.bias ? w + d.ob : nullptr;
    std::memset(hs, 0, sizeof(T) * B * H);
    for (int64_t t = 0; t < TT; ++t) {
        const int64_t s = keep ? t : 0;
        const T* h = hs + (keep ? t : (t & 1)) * B * H;
        T* hn = hs + (keep ? t + 1 : ((t + 1) & 1)) * B * H;
        T* zr = zr_all + s * B * 2 * H;
        T* rh = rh_all + s * B * H;
        T* c = cc_all + s * B * H;
        for (int64_t b = 0; b < B; ++b) {  // input projection x_t Wx + b
            T* az = zr + b * 2 * H;
            T* ac = c + b * H;
            for (int64_t g = 0; g < 2 * H; ++g) az[g] = bb ? bb[g] : T(0);
            for (int64_t g = 0; g < H; ++g) ac[g] = bb ? bb[2 * H + g] : T(0);
            const T* xb = x + b * Dx + t * D;
            for (int64_t q = 0; q < D; ++q) {
                const T xv = xb[q];
                const T* wr = Wx + q * G;
                for (int64_t g = 0; g < 2 * H; ++g) az[g] += xv * wr[g];
                for (int64_t g = 0; g < H; ++g) ac[g] += xv * wr[2 * H + g];
            }
        }
        if (t > 0) mm_acc(B, 2 * H, H, h, H, Wzr, 2 * H, zr, 2 * H);
        sigmoid_inplace(zr, B * 2 * H);
        if (t > 0) {
            for (int64_t b = 0; b < B; ++b)
                for (int64_t i = 0; i < H; ++i) rh[b * H + i] = zr[b * 2 * H + H + i] * h[b * H + i];
            mm_acc(B, H, H, rh, H, Whh, H, c, H);
        } else {
            std::memset(rh, 0, sizeof(T) * B * H);
        }
        tanh_inplace(c, B * H);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < H; ++i) {
                const T hv = h[b * H + i];
                hn[b * H + i] = hv + zr[b * 2 * H + i] * (c[b * H + i] - hv);
            }
    }
    const T* hT = hs + (keep ? TT : (TT & 1)) * B * H;
    const T* Wo = w + d.oWo;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < d.C; ++j) out[b * d.C + j] = d.bias ? w[d.obo + j] : T(0);
    mm_acc(B, d.C, H, hT, H, Wo, d.C, out, d.C);
}

// Members are independent: with threads > 1 they are split between OpenMP threads (static schedule),
// each member computed by the same code as alone.
template <typename T>
void forward(const T* flat, const T* x, T* out, T* hs, T* zr, T* rh, T* cc, const int64_t* dims) {
    const Dims d(dims);
    const bool keep = hs != nullptr;
    const int64_t TB = d.T * d.B;
#pragma omp parallel num_threads(static_cast<int>(d.threads)) if (d.threads > 1)
    {
        std::vector<T> scratch(keep ? 0 : d.B * d.H * 6);
#pragma omp for schedule(static)
        for (int64_t k = 0; k < d.K; ++k) {
            if (keep) {
                forward_member(d, flat + k * d.P, x + k * d.xs, out + k * d.B * d.C, hs + k * (TB + d.B) * d.H,
                               zr + k * TB * 2 * d.H, rh + k * TB * d.H, cc + k * TB * d.H, true);
            } else {
                T* s = scratch.data();
                forward_member(d, flat + k * d.P, x + k * d.xs, out + k * d.B * d.C, s, s + 2 * d.B * d.H,
                               s + 4 * d.B * d.H, s + 5 * d.B * d.H, false);
            }
        }
    }
}

// Backward through time of member k from dE/d out (B, C); writes the whole gradient row g (P).
template <typename T>
void backward_member(const Dims& d, const T* w, const T* x, const T* dout, const T* hs, const T* zr_all,
                     const T* rh_all, const T* cc_all, T* g, std::vector<T>& work) {
    const int64_t B = d.B, H = d.H, D = d.D, C = d.C, G = 3 * H, TT = d.T, Dx = d.T * d.D;
    std::memset(g, 0, sizeof(T) * d.P);
    T* gWx = g + d.oWx;
    T* gWzr = g + d.oWzr;
    T* gWhh = g + d.oWhh;
    T* gb = d.bias ? g + d.ob : nullptr;
    T* dh = work.data();
    T* dhn = dh + B * H;
    T* dah = dhn + B * H;
    T* drh = dah + B * H;
    T* gzr = drh + B * H;  // B x 2H
    T* WzrT = gzr + B * 2 * H;  // 2H x H
    T* WhhT = WzrT + 2 * H * H;  // H x H
    T* WoT = WhhT + H * H;  // C x H
    const T* hT = hs + TT * B * H;
    mm_tn_acc(H, C, B, hT, H, dout, C, g + d.oWo, C);
    if (d.bias)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t j = 0; j < C; ++j) g[d.obo + j] += dout[b * C + j];
    transpose(H, C, w + d.oWo, WoT);
    transpose(H, 2 * H, w + d.oWzr, WzrT);
    transpose(H, H, w + d.oWhh, WhhT);
    std::memset(dh, 0, sizeof(T) * B * H);
    mm_acc(B, H, C, dout, C, WoT, H, dh, H);
    for (int64_t t = TT - 1; t >= 0; --t) {
        const T* h = hs + t * B * H;
        const T* zr = zr_all + t * B * 2 * H;
        const T* rh = rh_all + t * B * H;
        const T* c = cc_all + t * B * H;
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < H; ++i) {
                const int64_t j = b * H + i;
                const T z = zr[b * 2 * H + i], cv = c[j];
                dah[j] = dh[j] * z * (T(1) - cv * cv);
                gzr[b * 2 * H + i] = dh[j] * (cv - h[j]) * (z * (T(1) - z));
            }
        if (t > 0) {
            std::memset(drh, 0, sizeof(T) * B * H);
            mm_acc(B, H, H, dah, H, WhhT, H, drh, H);
            for (int64_t b = 0; b < B; ++b)
                for (int64_t i = 0; i < H; ++i) {
                    const int64_t j = b * H + i;
                    const T z = zr[b * 2 * H + i], r = zr[b * 2 * H + H + i];
                    gzr[b * 2 * H + H + i] = drh[j] * h[j] * (r * (T(1) - r));
                    dhn[j] = dh[j] - dh[j] * z + drh[j] * r;
                }
            mm_acc(B, H, 2 * H, gzr, 2 * H, WzrT, H, dhn, H);
            mm_tn_acc(H, 2 * H, B, h, H, gzr, 2 * H, gWzr, 2 * H);
            mm_tn_acc(H, H, B, rh, H, dah, H, gWhh, H);
        } else {
            for (int64_t b = 0; b < B; ++b)
                for (int64_t i = 0; i < H; ++i) gzr[b * 2 * H + H + i] = T(0);
        }
        for (int64_t b = 0; b < B; ++b) {
            const T* xb = x + b * Dx + t * D;
            const T* gz = gzr + b * 2 * H;
            const T* gh = dah + b * H;
            for (int64_t q = 0; q < D; ++q) {
                const T xv = xb[q];
                T* row = gWx + q * G;
                for (int64_t i = 0; i < 2 * H; ++i) row[i] += xv * gz[i];
                for (int64_t i = 0; i < H; ++i) row[2 * H + i] += xv * gh[i];
            }
            if (gb) {
                for (int64_t i = 0; i < 2 * H; ++i) gb[i] += gz[i];
                for (int64_t i = 0; i < H; ++i) gb[2 * H + i] += gh[i];
            }
        }
        T* tmp = dh;
        dh = dhn;
        dhn = tmp;
    }
}

template <typename T>
void backward(const T* flat, const T* x, const T* dout, const T* hs, const T* zr, const T* rh, const T* cc,
              T* grad, const int64_t* dims) {
    const Dims d(dims);
    const int64_t B = d.B, H = d.H, TB = d.T * d.B;
#pragma omp parallel num_threads(static_cast<int>(d.threads)) if (d.threads > 1)
    {
        std::vector<T> work(B * H * 6 + 3 * H * H + d.C * H);
#pragma omp for schedule(static)
        for (int64_t k = 0; k < d.K; ++k)
            backward_member(d, flat + k * d.P, x + k * d.xs, dout + k * B * d.C, hs + k * (TB + B) * H,
                            zr + k * TB * 2 * H, rh + k * TB * H, cc + k * TB * H, grad + k * d.P, work);
    }
}

// One plain-SGD update of the whole pack with its trace row (trainer/step.py's FastStep.step for
// optimizer sgd, fused): per member, in one pass over its row, ||g||, ||g_out||, ||w||, the sparsity
// of W_out and of all weights (|w| < eps, eq. 42), delta = -lr g and ||delta||; a member whose E,
// ||g|| or ||delta|| is not finite becomes inactive (diverged at this step); active members take
// w += delta. row (9, K): E, E_data, penalty, ||g||, ||g_out||, ||w||, ||update||, sparsity_out,
// sparsity_all.
template <typename T>
void sgd_step(T* flat, const T* grad, const T* loss, const T* dloss, const T* pen, const T* lr, uint8_t* active,
              uint8_t* diverged, int64_t* div_step, int64_t* step_no, const T* share, T* row, const int64_t* dims,
              double eps) {
    const int64_t K = dims[0], P = dims[1], lo = dims[2], hi = dims[3], threads = dims[4];
    const T teps = static_cast<T>(eps);
    const int64_t now = *step_no;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        T* w = flat + k * P;
        const T* g = grad + k * P;
        const T step = -lr[k];
        // L independent partial sums per statistic (lanes of one vector), added up at the end
        constexpr int L = 16;
        T gv[L] = {}, wv[L] = {}, dv[L] = {}, sv[L] = {};
        int64_t j0 = 0;
        for (; j0 + L <= P; j0 += L)
            for (int l = 0; l < L; ++l) {
                const T gj = g[j0 + l], wj = w[j0 + l], dj = step * gj;
                gv[l] += gj * gj;
                wv[l] += wj * wj;
                dv[l] += dj * dj;
                const T aw = wj < 0 ? -wj : wj;
                sv[l] += aw < teps ? share[j0 + l] : T(0);
            }
        for (int64_t j = j0; j < P; ++j) {
            const T gj = g[j], wj = w[j], dj = step * gj;
            const int l = static_cast<int>(j - j0);
            gv[l] += gj * gj;
            wv[l] += wj * wj;
            dv[l] += dj * dj;
            const T aw = wj < 0 ? -wj : wj;
            sv[l] += aw < teps ? share[j] : T(0);
        }
        T gn = 0, go = 0, wn = 0, dn = 0, sp_all = 0;
        for (int l = 0; l < L; ++l) {
            gn += gv[l];
            wn += wv[l];
            dn += dv[l];
            sp_all += sv[l];
        }
        int64_t sp_out = 0;
        for (int64_t j = lo; j < hi; ++j) {
            go += g[j] * g[j];
            const T aw = w[j] < 0 ? -w[j] : w[j];
            sp_out += aw < teps;
        }
        const T gnorm = std::sqrt(gn), dnorm = std::sqrt(dn);
        const bool finite = std::isfinite(loss[k]) && std::isfinite(gnorm) && std::isfinite(dnorm);
        if (active[k] && !finite) {
            diverged[k] = 1;
            div_step[k] = now;
        }
        active[k] = active[k] && finite;
        if (active[k])
            for (int64_t j = 0; j < P; ++j) w[j] += step * g[j];
        const T vals[9] = {loss[k], dloss[k], pen[k], gnorm, std::sqrt(go), std::sqrt(wn),
                           active[k] ? dnorm : T(0), T(sp_out) / T(hi - lo), sp_all};
        for (int i = 0; i < 9; ++i) row[i * K + k] = vals[i];
    }
    *step_no += 1;
}

// Cross-entropy of softmax outputs (classification, ``data_loss``'s default), per member: value[k] =
// -scale * sum_n log softmax(out[k, n])[y[k, n]] and dout = scale * (softmax - onehot(y)), as
// trainer/train.py's data_loss (log-softmax with the row's max subtracted, softmax = exp(logp)).
template <typename T>
void cross_entropy(const T* out, const int64_t* y, T* value, T* dout, const int64_t* dims, double scale) {
    const int64_t K = dims[0], n = dims[1], C = dims[2], threads = dims[3];
    const T s = static_cast<T>(scale);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        T total = 0;
        for (int64_t i = 0; i < n; ++i) {
            const T* o = out + (k * n + i) * C;
            T* d = dout + (k * n + i) * C;
            T m = o[0];
            for (int64_t c = 1; c < C; ++c) m = o[c] > m ? o[c] : m;
            T sum = 0;
            for (int64_t c = 0; c < C; ++c) sum += std::exp(o[c] - m);
            const T lse = std::log(sum);
            const int64_t label = y[k * n + i];
            for (int64_t c = 0; c < C; ++c) {
                const T logp = (o[c] - m) - lse;
                d[c] = (std::exp(logp) - (c == label ? T(1) : T(0))) * s;
                if (c == label) total += logp;
            }
        }
        value[k] = -total * s;
    }
}

// The closed-form penalties of trainer/regularizers.py on the columns [lo, hi) of each member's row:
// pen[k] = sum_j c_l1 |w| + c_l2 w^2 + c_sl1 h_alpha(w) (eq. 14), and grad[k, j] += c_l1 sign(w) +
// c_l2 2w + c_sl1 h_alpha'(w). Coefficients are (K, hi - lo); a null one is a penalty no member uses.
template <typename T>
void penalty(const T* flat, T* grad, T* pen, const T* c_l1, const T* c_l2, const T* c_sl1, const T* alpha,
             const int64_t* dims) {
    const int64_t K = dims[0], P = dims[1], lo = dims[2], hi = dims[3], threads = dims[4];
    const int64_t n = hi - lo;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t k = 0; k < K; ++k) {
        const T* w = flat + k * P + lo;
        T* g = grad + k * P + lo;
        const T a = alpha[k];
        T total = 0;
        for (int64_t j = 0; j < n; ++j) {
            const T wj = w[j], aw = wj < 0 ? -wj : wj;
            const T sign = wj > 0 ? T(1) : (wj < 0 ? T(-1) : T(0));
            T value = 0, part = 0;
            if (c_l1) {
                const T c = c_l1[k * n + j];
                value += c * aw;
                part += c * sign;
            }
            if (c_l2) {
                const T c = c_l2[k * n + j];
                value += c * wj * wj;
                part += c * (T(2) * wj);
            }
            if (c_sl1) {
                const T c = c_sl1[k * n + j];
                value += c * (aw >= a ? aw : wj * wj / (T(2) * a) + a / T(2));
                part += c * (aw >= a ? sign : wj / a);
            }
            total += value;
            g[j] += part;
        }
        pen[k] = total;
    }
}

}  // namespace

extern "C" {
// dims: K, B, T, D, H, C, bias, P, offsets of Wx, Wh_zr, Wh_h, b, W_out, b_out, x's member stride (0: shared),
// threads
// hs == nullptr: forward only (nothing kept).
void gru_forward_f32(const float* flat, const float* x, float* out, float* hs, float* zr, float* rh, float* cc,
                     const int64_t* dims) {
    forward(flat, x, out, hs, zr, rh, cc, dims);
}
void gru_forward_f64(const double* flat, const double* x, double* out, double* hs, double* zr, double* rh,
                     double* cc, const int64_t* dims) {
    forward(flat, x, out, hs, zr, rh, cc, dims);
}
void gru_backward_f32(const float* flat, const float* x, const float* dout, const float* hs, const float* zr,
                      const float* rh, const float* cc, float* grad, const int64_t* dims) {
    backward(flat, x, dout, hs, zr, rh, cc, grad, dims);
}
void gru_backward_f64(const double* flat, const double* x, const double* dout, const double* hs,
                      const double* zr, const double* rh, const double* cc, double* grad, const int64_t* dims) {
    backward(flat, x, dout, hs, zr, rh, cc, grad, dims);
}
// dims: K, P, first and end column of W_out, threads. Bool tensors are bytes.
void sgd_step_f32(float* flat, const float* grad, const float* loss, const float* dloss, const float* pen,
                  const float* lr, uint8_t* active, uint8_t* diverged, int64_t* div_step, int64_t* step_no,
                  const float* share, float* row, const int64_t* dims, double eps) {
    sgd_step(flat, grad, loss, dloss, pen, lr, active, diverged, div_step, step_no, share, row, dims, eps);
}
void sgd_step_f64(double* flat, const double* grad, const double* loss, const double* dloss, const double* pen,
                  const double* lr, uint8_t* active, uint8_t* diverged, int64_t* div_step, int64_t* step_no,
                  const double* share, double* row, const int64_t* dims, double eps) {
    sgd_step(flat, grad, loss, dloss, pen, lr, active, diverged, div_step, step_no, share, row, dims, eps);
}
// dims: K, n, C, threads; y: (K, n) class indices; value (K,), dout (K, n, C).
void cross_entropy_f32(const float* out, const int64_t* y, float* value, float* dout, const int64_t* dims,
                       double scale) {
    cross_entropy(out, y, value, dout, dims, scale);
}
void cross_entropy_f64(const double* out, const int64_t* y, double* value, double* dout, const int64_t* dims,
                       double scale) {
    cross_entropy(out, y, value, dout, dims, scale);
}
// dims: K, P, first and end penalised column, threads.
void penalty_f32(const float* flat, float* grad, float* pen, const float* c_l1, const float* c_l2,
                 const float* c_sl1, const float* alpha, const int64_t* dims) {
    penalty(flat, grad, pen, c_l1, c_l2, c_sl1, alpha, dims);
}
void penalty_f64(const double* flat, double* grad, double* pen, const double* c_l1, const double* c_l2,
                 const double* c_sl1, const double* alpha, const int64_t* dims) {
    penalty(flat, grad, pen, c_l1, c_l2, c_sl1, alpha, dims);
}
}
