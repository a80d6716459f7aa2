// oneDNN's fused single-layer RNN primitives (vanilla tanh RNN, LSTM, linear-before-reset
// GRU), forward-training and backward, as XLA FFI handlers for jax.ffi (CPU).
//
// Built and loaded by jrnn/onednn.py, which also maps jrnn's params to oneDNN's layout
// (gate orders, GRU's extra bias): this file sees oneDNN's layout only.
//
// Layouts (all f32, plain row-major, one layer, one direction):
//   src_layer [T, B, C] (tnc)          dst_layer [T, B, H] (tnc)
//   src_iter / src_iter_c / dst_iter / dst_iter_c [B, H] (ldnc with l = d = 1)
//   weights_layer [C, G*H] (ldigo), weights_iter [H, G*H] (ldigo)
//   bias [Gb*H] (ldgo): Gb = G, except lbr-GRU: G + 1
//   workspace: the forward-training workspace, u8 [jrnn_onednn_workspace_size(...)]
// kind: 0 = vanilla RNN (tanh), 1 = LSTM, 2 = lbr-GRU; reverse: 0 = left2right,
// 1 = right2left.
//
// Primitives are cached per (kind, T, B, C, H, reverse). Weights go to the backward
// primitive in whatever format it asks for (a reorder when that is not ldigo), and the
// diff weights come back the same way. oneDNN's backward ADDS into diff_weights and
// diff_bias (rnn_flags::diff_weights_overwrite is not reachable through the 3.2 C++
// constructors), so they are zeroed before each call.
//
// Scratchpads are user-managed (scratchpad_mode::user, a thread-local buffer of this file):
// with the library's default global scratchpad, the scratchpad belongs to the thread that
// created the primitive, and XLA runs a cached primitive on any of its worker threads (a
// null scratchpad, a segfault in copy_bias_to_ws, when it was not the creating thread).
//
// Threads: every primitive runs on ONE dedicated thread of this file (the handlers hand
// their work to it and sleep until it is done). OpenMP gives each thread that opens a
// parallel region its own team; XLA calls the handlers from any of its worker threads, so
// without this each of them grew a team of spinning OpenMP threads, more threads than
// cores, and libgomp then throttles its spinning: every one of the primitive's per-step
// parallel regions paid a futex wake-up (LSTM-256, B=32, T=35 gradient: 25 ms instead of
// ~10 ms). One team of OMP_NUM_THREADS (default: the cores) spins within a call and
// sleeps soon after it.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

constexpr int64_t kElman = 0, kLstm = 1, kGru = 2;

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// Runs tasks one at a time on a single long-lived thread (see the header comment).
class DnnThread {
 public:
  static DnnThread& Get() {
    static DnnThread* t = new DnnThread();  // never destroyed: no join at process exit
    return *t;
  }
  // Runs `f` on the thread and waits; rethrows what it threw.
  void Run(const std::function<void()>& f) {
    std::lock_guard<std::mutex> one(submit_);  // one task in flight
    std::unique_lock<std::mutex> lock(mu_);
    task_ = &f;
    error_ = nullptr;
    done_ = false;
    cv_.notify_all();
    cv_.wait(lock, [this] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  DnnThread() : thread_([this] { Loop(); }) { thread_.detach(); }
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return task_ != nullptr; });
      const std::function<void()>* f = task_;
      lock.unlock();
      std::exception_ptr err;
      try { (*f)(); } catch (...) { err = std::current_exception(); }
      lock.lock();
      task_ = nullptr;
      error_ = err;
      done_ = true;
      cv_.notify_all();
    }
  }
  std::mutex submit_, mu_;
  std::condition_variable cv_;
  const std::function<void()>* task_ = nullptr;
  std::exception_ptr error_;
  bool done_ = false;
  std::thread thread_;
};

int64_t Gates(int64_t kind) { return kind == kLstm ? 4 : kind == kGru ? 3 : 1; }
int64_t BiasGates(int64_t kind) { return kind == kGru ? 4 : Gates(kind); }

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

struct Descs {
  memory::desc src_layer, iter, wl, wi, bias, dst_layer;
  Descs(int64_t kind, int64_t T, int64_t B, int64_t C, int64_t H) {
    const int64_t G = Gates(kind);
    src_layer = memory::desc({T, B, C}, dt::f32, tag::tnc);
    iter = memory::desc({1, 1, B, H}, dt::f32, tag::ldnc);
    wl = memory::desc({1, 1, C, G, H}, dt::f32, tag::ldigo);
    wi = memory::desc({1, 1, H, G, H}, dt::f32, tag::ldigo);
    bias = memory::desc({1, 1, BiasGates(kind), H}, dt::f32, tag::ldgo);
    dst_layer = memory::desc({T, B, H}, dt::f32, tag::tnc);
  }
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A 4 KiB-aligned scratch buffer of at least `bytes`, one per thread, grown on demand.
void* Scratch(size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf;
  if (bytes > buf.n) {
    std::free(buf.p);
    const size_t n = (bytes + 4095) / 4096 * 4096;
    buf.p = std::aligned_alloc(4096, n);
    if (!buf.p) { buf.n = 0; throw std::runtime_error("out of memory for the scratchpad"); }
    buf.n = n;
  }
  return buf.p;
}

memory::desc Any(const memory::desc& md) {
  return memory::desc(md.get_dims(), md.get_data_type(), tag::any);
}

struct Plan {
  int64_t kind;
  Descs d;
  std::mutex mu;  // one execution at a time per plan (guards the scratch memories)
  // forward
  dnnl::lstm_forward::primitive_desc lstm_fwd_pd;
  dnnl::lbr_gru_forward::primitive_desc gru_fwd_pd;
  dnnl::vanilla_rnn_forward::primitive_desc rnn_fwd_pd;
  dnnl::primitive fwd;
  memory::desc ws;
  memory fwd_wl_mem, fwd_wi_mem;  // the weights in the forward's formats (when not plain)
  dnnl::reorder r_fwl, r_fwi;
  size_t fwd_scratch = 0, bwd_scratch = 0;
  // backward (built on first use)
  bool have_bwd = false;
  dnnl::primitive bwd;
  memory::desc bwd_wl, bwd_wi, bwd_dwl, bwd_dwi, bwd_dbias;
  memory bwd_wl_mem, bwd_wi_mem, bwd_dwl_mem, bwd_dwi_mem;  // set when a reorder is needed
  dnnl::reorder r_wl, r_wi, r_dwl, r_dwi;                    // plain <-> the backward's formats
  size_t reorder_scratch = 0;

  // a cached reorder between `from` and `to` (user scratchpad); `scratch_mem` is the
  // non-plain side's buffer, owned by the plan
  void MakeReorder(const memory::desc& from, const memory::desc& to, memory& scratch_mem,
                   dnnl::reorder& r) {
    const bool to_plain = (to == d.wl || to == d.wi);
    scratch_mem = memory(to_plain ? from : to, Engine());
    dnnl::reorder::primitive_desc pd(Engine(), from, Engine(), to, UserScratchpad());
    reorder_scratch = std::max(reorder_scratch, pd.scratchpad_desc().get_size());
    r = dnnl::reorder(pd);
  }
  memory::desc bwd_ws;

  Plan(int64_t kind_, int64_t T, int64_t B, int64_t C, int64_t H, int64_t reverse)
      : kind(kind_), d(kind_, T, B, C, H) {
    auto& eng = Engine();
    const auto dir = reverse ? dnnl::rnn_direction::unidirectional_right2left
                             : dnnl::rnn_direction::unidirectional_left2right;
    const auto fwd_kind = dnnl::prop_kind::forward_training;
    const auto attr = UserScratchpad();
    // weights in the primitive's own (blocked) formats: the plain ones select the slower
    // reference implementation; the plain weights are reordered once per call
    const auto awl = Any(d.wl), awi = Any(d.wi);
    memory::desc fwl, fwi;
    if (kind == kLstm) {
      lstm_fwd_pd = dnnl::lstm_forward::primitive_desc(eng, fwd_kind, dir, d.src_layer, d.iter,
                                                       d.iter, awl, awi, d.bias, d.dst_layer,
                                                       d.iter, d.iter, attr);
      fwd = dnnl::lstm_forward(lstm_fwd_pd);
      ws = lstm_fwd_pd.workspace_desc();
      fwd_scratch = lstm_fwd_pd.scratchpad_desc().get_size();
      fwl = lstm_fwd_pd.weights_layer_desc(); fwi = lstm_fwd_pd.weights_iter_desc();
    } else if (kind == kGru) {
      gru_fwd_pd = dnnl::lbr_gru_forward::primitive_desc(eng, fwd_kind, dir, d.src_layer, d.iter,
                                                         awl, awi, d.bias, d.dst_layer, d.iter,
                                                         attr);
      fwd = dnnl::lbr_gru_forward(gru_fwd_pd);
      ws = gru_fwd_pd.workspace_desc();
      fwd_scratch = gru_fwd_pd.scratchpad_desc().get_size();
      fwl = gru_fwd_pd.weights_layer_desc(); fwi = gru_fwd_pd.weights_iter_desc();
    } else {
      rnn_fwd_pd = dnnl::vanilla_rnn_forward::primitive_desc(
          eng, fwd_kind, dnnl::algorithm::eltwise_tanh, dir, d.src_layer, d.iter, awl, awi,
          d.bias, d.dst_layer, d.iter, attr);
      fwd = dnnl::vanilla_rnn_forward(rnn_fwd_pd);
      ws = rnn_fwd_pd.workspace_desc();
      fwd_scratch = rnn_fwd_pd.scratchpad_desc().get_size();
      fwl = rnn_fwd_pd.weights_layer_desc(); fwi = rnn_fwd_pd.weights_iter_desc();
    }
    if (fwl != d.wl) MakeReorder(d.wl, fwl, fwd_wl_mem, r_fwl);
    if (fwi != d.wi) MakeReorder(d.wi, fwi, fwd_wi_mem, r_fwi);
  }

  void BuildBackward(int64_t reverse) {
    if (have_bwd) return;
    auto& eng = Engine();
    const auto dir = reverse ? dnnl::rnn_direction::unidirectional_right2left
                             : dnnl::rnn_direction::unidirectional_left2right;
    const auto bk = dnnl::prop_kind::backward;
    const auto attr = UserScratchpad();
    const auto awl = Any(d.wl), awi = Any(d.wi);
    if (kind == kLstm) {
      dnnl::lstm_backward::primitive_desc pd(
          eng, bk, dir, d.src_layer, d.iter, d.iter, awl, awi, d.bias, d.dst_layer, d.iter,
          d.iter, d.src_layer, d.iter, d.iter, awl, awi, d.bias, d.dst_layer, d.iter, d.iter,
          lstm_fwd_pd, attr);
      bwd = dnnl::lstm_backward(pd);
      bwd_wl = pd.weights_layer_desc(); bwd_wi = pd.weights_iter_desc();
      bwd_dwl = pd.diff_weights_layer_desc(); bwd_dwi = pd.diff_weights_iter_desc();
      bwd_dbias = pd.diff_bias_desc(); bwd_ws = pd.workspace_desc();
      bwd_scratch = pd.scratchpad_desc().get_size();
    } else if (kind == kGru) {
      dnnl::lbr_gru_backward::primitive_desc pd(
          eng, bk, dir, d.src_layer, d.iter, awl, awi, d.bias, d.dst_layer, d.iter, d.src_layer,
          d.iter, awl, awi, d.bias, d.dst_layer, d.iter, gru_fwd_pd, attr);
      bwd = dnnl::lbr_gru_backward(pd);
      bwd_wl = pd.weights_layer_desc(); bwd_wi = pd.weights_iter_desc();
      bwd_dwl = pd.diff_weights_layer_desc(); bwd_dwi = pd.diff_weights_iter_desc();
      bwd_dbias = pd.diff_bias_desc(); bwd_ws = pd.workspace_desc();
      bwd_scratch = pd.scratchpad_desc().get_size();
    } else {
      dnnl::vanilla_rnn_backward::primitive_desc pd(
          eng, bk, dnnl::algorithm::eltwise_tanh, dir, d.src_layer, d.iter, awl, awi, d.bias,
          d.dst_layer, d.iter, d.src_layer, d.iter, awl, awi, d.bias, d.dst_layer, d.iter,
          rnn_fwd_pd, attr);
      bwd = dnnl::vanilla_rnn_backward(pd);
      bwd_wl = pd.weights_layer_desc(); bwd_wi = pd.weights_iter_desc();
      bwd_dwl = pd.diff_weights_layer_desc(); bwd_dwi = pd.diff_weights_iter_desc();
      bwd_dbias = pd.diff_bias_desc(); bwd_ws = pd.workspace_desc();
      bwd_scratch = pd.scratchpad_desc().get_size();
    }
    if (bwd_ws != ws) throw std::runtime_error("backward workspace differs from the forward's");
    if (bwd_dbias != d.bias) throw std::runtime_error("diff_bias is not in ldgo format");
    if (bwd_wl != d.wl) MakeReorder(d.wl, bwd_wl, bwd_wl_mem, r_wl);
    if (bwd_wi != d.wi) MakeReorder(d.wi, bwd_wi, bwd_wi_mem, r_wi);
    if (bwd_dwl != d.wl) MakeReorder(bwd_dwl, d.wl, bwd_dwl_mem, r_dwl);
    if (bwd_dwi != d.wi) MakeReorder(bwd_dwi, d.wi, bwd_dwi_mem, r_dwi);
    have_bwd = true;
  }
};

std::mutex g_cache_mu;
std::map<Key, std::unique_ptr<Plan>>& Cache() {
  static std::map<Key, std::unique_ptr<Plan>> cache;
  return cache;
}

Plan& GetPlan(int64_t kind, int64_t T, int64_t B, int64_t C, int64_t H, int64_t reverse) {
  if (kind != kElman && kind != kLstm && kind != kGru)
    throw std::runtime_error("unknown cell kind " + std::to_string(kind));
  if (T < 1 || B < 1 || C < 1 || H < 1) throw std::runtime_error("all dims must be >= 1");
  Key key{kind, T, B, C, H, reverse ? 1 : 0};
  std::lock_guard<std::mutex> lock(g_cache_mu);
  auto& cache = Cache();
  auto it = cache.find(key);
  if (it == cache.end())
    it = cache.emplace(key, std::make_unique<Plan>(kind, T, B, C, H, reverse)).first;
  return *it->second;
}

// One stream per thread: XLA calls the handlers from several worker threads, and a oneDNN
// stream is not meant to be shared between threads.
dnnl::stream& Stream() {
  thread_local dnnl::stream s(Engine());
  return s;
}

memory Mem(const memory::desc& md, const void* p) {
  return memory(md, Engine(), const_cast<void*>(p));
}

memory ScratchMem(size_t bytes) {
  return memory(memory::desc({static_cast<memory::dim>(bytes)}, dt::u8, tag::a), Engine(),
                Scratch(bytes ? bytes : 1));
}

void Reorder(dnnl::reorder& r, const memory& from, const memory& to, size_t scratch) {
  std::unordered_map<int, memory> args{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  if (scratch) args.insert({DNNL_ARG_SCRATCHPAD, ScratchMem(scratch)});
  r.execute(Stream(), args);
}

struct Dims {
  int64_t T, B, C, H;
};

template <typename Buf>
int64_t Dim(const Buf& b, size_t i) {
  return static_cast<int64_t>(b.dimensions()[i]);
}

// --- forward -----------------------------------------------------------------------------

ffi::Error Forward(int64_t kind, int64_t reverse, const Dims& n, const float* src_layer,
                   const float* src_iter, const float* src_iter_c, const float* wl,
                   const float* wi, const float* bias, float* dst_layer, float* dst_iter,
                   float* dst_iter_c, uint8_t* ws, size_t ws_bytes) {
  try {
    Plan& p = GetPlan(kind, n.T, n.B, n.C, n.H, reverse);
    if (p.ws.get_size() != ws_bytes)
      return ffi::Error::InvalidArgument("workspace has " + std::to_string(ws_bytes) +
                                         " bytes, oneDNN wants " +
                                         std::to_string(p.ws.get_size()));
    DnnThread::Get().Run([&] {
    std::lock_guard<std::mutex> lock(p.mu);
    memory wlm = Mem(p.d.wl, wl), wim = Mem(p.d.wi, wi);
    if (p.fwd_wl_mem) { Reorder(p.r_fwl, wlm, p.fwd_wl_mem, p.reorder_scratch); wlm = p.fwd_wl_mem; }
    if (p.fwd_wi_mem) { Reorder(p.r_fwi, wim, p.fwd_wi_mem, p.reorder_scratch); wim = p.fwd_wi_mem; }
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC_LAYER, Mem(p.d.src_layer, src_layer)},
        {DNNL_ARG_SRC_ITER, Mem(p.d.iter, src_iter)},
        {DNNL_ARG_WEIGHTS_LAYER, wlm},
        {DNNL_ARG_WEIGHTS_ITER, wim},
        {DNNL_ARG_BIAS, Mem(p.d.bias, bias)},
        {DNNL_ARG_DST_LAYER, Mem(p.d.dst_layer, dst_layer)},
        {DNNL_ARG_DST_ITER, Mem(p.d.iter, dst_iter)},
        {DNNL_ARG_WORKSPACE, Mem(p.ws, ws)}};
    if (p.fwd_scratch) args.insert({DNNL_ARG_SCRATCHPAD, ScratchMem(p.fwd_scratch)});
    if (kind == kLstm) {
      args.insert({DNNL_ARG_SRC_ITER_C, Mem(p.d.iter, src_iter_c)});
      args.insert({DNNL_ARG_DST_ITER_C, Mem(p.d.iter, dst_iter_c)});
    }
    p.fwd.execute(Stream(), args);
    Stream().wait();
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jrnn oneDNN forward: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error CheckShapes(const Dims& n, int64_t wl_rows, int64_t wi_rows, int64_t kind,
                       int64_t wl_cols, int64_t wi_cols, int64_t bias_n) {
  const int64_t G = Gates(kind);
  if (wl_rows != n.C || wl_cols != G * n.H || wi_rows != n.H || wi_cols != G * n.H ||
      bias_n != BiasGates(kind) * n.H)
    return ffi::Error::InvalidArgument("jrnn oneDNN: weight/bias shapes do not match the dims");
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::Buffer<ffi::F32> src_layer, ffi::Buffer<ffi::F32> src_iter,
                   ffi::Buffer<ffi::F32> wl, ffi::Buffer<ffi::F32> wi, ffi::Buffer<ffi::F32> bias,
                   ffi::ResultBuffer<ffi::F32> dst_layer, ffi::ResultBuffer<ffi::F32> dst_iter,
                   ffi::ResultBuffer<ffi::U8> ws, int64_t kind, int64_t reverse) {
  if (kind == kLstm) return ffi::Error::InvalidArgument("LSTM goes through the _lstm handler");
  Dims n{Dim(src_layer, 0), Dim(src_layer, 1), Dim(src_layer, 2), Dim(src_iter, 1)};
  auto err = CheckShapes(n, Dim(wl, 0), Dim(wi, 0), kind, Dim(wl, 1), Dim(wi, 1),
                         static_cast<int64_t>(bias.element_count()));
  if (!err.success()) return err;
  return Forward(kind, reverse, n, src_layer.typed_data(), src_iter.typed_data(), nullptr,
                 wl.typed_data(), wi.typed_data(), bias.typed_data(), dst_layer->typed_data(),
                 dst_iter->typed_data(), nullptr, ws->typed_data(), ws->size_bytes());
}

ffi::Error LstmFwdImpl(ffi::Buffer<ffi::F32> src_layer, ffi::Buffer<ffi::F32> src_iter,
                       ffi::Buffer<ffi::F32> src_iter_c, ffi::Buffer<ffi::F32> wl,
                       ffi::Buffer<ffi::F32> wi, ffi::Buffer<ffi::F32> bias,
                       ffi::ResultBuffer<ffi::F32> dst_layer, ffi::ResultBuffer<ffi::F32> dst_iter,
                       ffi::ResultBuffer<ffi::F32> dst_iter_c, ffi::ResultBuffer<ffi::U8> ws,
                       int64_t reverse) {
  Dims n{Dim(src_layer, 0), Dim(src_layer, 1), Dim(src_layer, 2), Dim(src_iter, 1)};
  auto err = CheckShapes(n, Dim(wl, 0), Dim(wi, 0), kLstm, Dim(wl, 1), Dim(wi, 1),
                         static_cast<int64_t>(bias.element_count()));
  if (!err.success()) return err;
  return Forward(kLstm, reverse, n, src_layer.typed_data(), src_iter.typed_data(),
                 src_iter_c.typed_data(), wl.typed_data(), wi.typed_data(), bias.typed_data(),
                 dst_layer->typed_data(), dst_iter->typed_data(), dst_iter_c->typed_data(),
                 ws->typed_data(), ws->size_bytes());
}

// --- backward ----------------------------------------------------------------------------

struct BwdIn {
  const float *src_layer, *src_iter, *src_iter_c, *wl, *wi, *bias, *dst_layer, *dst_iter,
      *dst_iter_c, *diff_dst_layer, *diff_dst_iter, *diff_dst_iter_c;
  const uint8_t* ws;
  size_t ws_bytes;
};
struct BwdOut {
  float *diff_src_layer, *diff_src_iter, *diff_src_iter_c, *diff_wl, *diff_wi, *diff_bias;
};

ffi::Error Backward(int64_t kind, int64_t reverse, const Dims& n, const BwdIn& in,
                    const BwdOut& out) {
  try {
    Plan& p = GetPlan(kind, n.T, n.B, n.C, n.H, reverse);
    if (p.ws.get_size() != in.ws_bytes)
      return ffi::Error::InvalidArgument("workspace size does not match the forward's");
    DnnThread::Get().Run([&] {
    std::lock_guard<std::mutex> lock(p.mu);
    p.BuildBackward(reverse);
    auto& s = Stream();
    memory wl = Mem(p.d.wl, in.wl), wi = Mem(p.d.wi, in.wi);
    if (p.bwd_wl_mem) { Reorder(p.r_wl, wl, p.bwd_wl_mem, p.reorder_scratch); wl = p.bwd_wl_mem; }
    if (p.bwd_wi_mem) { Reorder(p.r_wi, wi, p.bwd_wi_mem, p.reorder_scratch); wi = p.bwd_wi_mem; }
    memory dwl_plain = Mem(p.d.wl, out.diff_wl), dwi_plain = Mem(p.d.wi, out.diff_wi);
    memory dwl = p.bwd_dwl_mem ? p.bwd_dwl_mem : dwl_plain;
    memory dwi = p.bwd_dwi_mem ? p.bwd_dwi_mem : dwi_plain;
    // oneDNN accumulates into the weight gradients: start them at zero
    std::memset(dwl.get_data_handle(), 0, dwl.get_desc().get_size());
    std::memset(dwi.get_data_handle(), 0, dwi.get_desc().get_size());
    std::memset(out.diff_bias, 0, p.d.bias.get_size());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC_LAYER, Mem(p.d.src_layer, in.src_layer)},
        {DNNL_ARG_SRC_ITER, Mem(p.d.iter, in.src_iter)},
        {DNNL_ARG_WEIGHTS_LAYER, wl},
        {DNNL_ARG_WEIGHTS_ITER, wi},
        {DNNL_ARG_BIAS, Mem(p.d.bias, in.bias)},
        {DNNL_ARG_DST_LAYER, Mem(p.d.dst_layer, in.dst_layer)},
        {DNNL_ARG_DST_ITER, Mem(p.d.iter, in.dst_iter)},
        {DNNL_ARG_WORKSPACE, Mem(p.ws, in.ws)},
        {DNNL_ARG_DIFF_DST_LAYER, Mem(p.d.dst_layer, in.diff_dst_layer)},
        {DNNL_ARG_DIFF_DST_ITER, Mem(p.d.iter, in.diff_dst_iter)},
        {DNNL_ARG_DIFF_SRC_LAYER, Mem(p.d.src_layer, out.diff_src_layer)},
        {DNNL_ARG_DIFF_SRC_ITER, Mem(p.d.iter, out.diff_src_iter)},
        {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi},
        {DNNL_ARG_DIFF_BIAS, Mem(p.d.bias, out.diff_bias)}};
    if (kind == kLstm) {
      args.insert({DNNL_ARG_SRC_ITER_C, Mem(p.d.iter, in.src_iter_c)});
      args.insert({DNNL_ARG_DST_ITER_C, Mem(p.d.iter, in.dst_iter_c)});
      args.insert({DNNL_ARG_DIFF_DST_ITER_C, Mem(p.d.iter, in.diff_dst_iter_c)});
      args.insert({DNNL_ARG_DIFF_SRC_ITER_C, Mem(p.d.iter, out.diff_src_iter_c)});
    }
    if (p.bwd_scratch) args.insert({DNNL_ARG_SCRATCHPAD, ScratchMem(p.bwd_scratch)});
    p.bwd.execute(s, args);
    if (p.bwd_dwl_mem) Reorder(p.r_dwl, p.bwd_dwl_mem, dwl_plain, p.reorder_scratch);
    if (p.bwd_dwi_mem) Reorder(p.r_dwi, p.bwd_dwi_mem, dwi_plain, p.reorder_scratch);
    s.wait();
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jrnn oneDNN backward: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error BwdImpl(ffi::Buffer<ffi::F32> src_layer, ffi::Buffer<ffi::F32> src_iter,
                   ffi::Buffer<ffi::F32> wl, ffi::Buffer<ffi::F32> wi, ffi::Buffer<ffi::F32> bias,
                   ffi::Buffer<ffi::F32> dst_layer, ffi::Buffer<ffi::F32> dst_iter,
                   ffi::Buffer<ffi::U8> ws, ffi::Buffer<ffi::F32> diff_dst_layer,
                   ffi::Buffer<ffi::F32> diff_dst_iter, ffi::ResultBuffer<ffi::F32> diff_src_layer,
                   ffi::ResultBuffer<ffi::F32> diff_src_iter, ffi::ResultBuffer<ffi::F32> diff_wl,
                   ffi::ResultBuffer<ffi::F32> diff_wi, ffi::ResultBuffer<ffi::F32> diff_bias,
                   int64_t kind, int64_t reverse) {
  if (kind == kLstm) return ffi::Error::InvalidArgument("LSTM goes through the _lstm handler");
  Dims n{Dim(src_layer, 0), Dim(src_layer, 1), Dim(src_layer, 2), Dim(src_iter, 1)};
  auto err = CheckShapes(n, Dim(wl, 0), Dim(wi, 0), kind, Dim(wl, 1), Dim(wi, 1),
                         static_cast<int64_t>(bias.element_count()));
  if (!err.success()) return err;
  BwdIn in{src_layer.typed_data(), src_iter.typed_data(), nullptr, wl.typed_data(),
           wi.typed_data(), bias.typed_data(), dst_layer.typed_data(), dst_iter.typed_data(),
           nullptr, diff_dst_layer.typed_data(), diff_dst_iter.typed_data(), nullptr,
           ws.typed_data(), ws.size_bytes()};
  BwdOut out{diff_src_layer->typed_data(), diff_src_iter->typed_data(), nullptr,
             diff_wl->typed_data(), diff_wi->typed_data(), diff_bias->typed_data()};
  return Backward(kind, reverse, n, in, out);
}

ffi::Error LstmBwdImpl(
    ffi::Buffer<ffi::F32> src_layer, ffi::Buffer<ffi::F32> src_iter,
    ffi::Buffer<ffi::F32> src_iter_c, ffi::Buffer<ffi::F32> wl, ffi::Buffer<ffi::F32> wi,
    ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> dst_layer, ffi::Buffer<ffi::F32> dst_iter,
    ffi::Buffer<ffi::F32> dst_iter_c, ffi::Buffer<ffi::U8> ws,
    ffi::Buffer<ffi::F32> diff_dst_layer, ffi::Buffer<ffi::F32> diff_dst_iter,
    ffi::Buffer<ffi::F32> diff_dst_iter_c, ffi::ResultBuffer<ffi::F32> diff_src_layer,
    ffi::ResultBuffer<ffi::F32> diff_src_iter, ffi::ResultBuffer<ffi::F32> diff_src_iter_c,
    ffi::ResultBuffer<ffi::F32> diff_wl, ffi::ResultBuffer<ffi::F32> diff_wi,
    ffi::ResultBuffer<ffi::F32> diff_bias, int64_t reverse) {
  Dims n{Dim(src_layer, 0), Dim(src_layer, 1), Dim(src_layer, 2), Dim(src_iter, 1)};
  auto err = CheckShapes(n, Dim(wl, 0), Dim(wi, 0), kLstm, Dim(wl, 1), Dim(wi, 1),
                         static_cast<int64_t>(bias.element_count()));
  if (!err.success()) return err;
  BwdIn in{src_layer.typed_data(), src_iter.typed_data(), src_iter_c.typed_data(),
           wl.typed_data(), wi.typed_data(), bias.typed_data(), dst_layer.typed_data(),
           dst_iter.typed_data(), dst_iter_c.typed_data(), diff_dst_layer.typed_data(),
           diff_dst_iter.typed_data(), diff_dst_iter_c.typed_data(), ws.typed_data(),
           ws.size_bytes()};
  BwdOut out{diff_src_layer->typed_data(), diff_src_iter->typed_data(),
             diff_src_iter_c->typed_data(), diff_wl->typed_data(), diff_wi->typed_data(),
             diff_bias->typed_data()};
  return Backward(kLstm, reverse, n, in, out);
}

}  // namespace

using F32 = ffi::Buffer<ffi::F32>;
using U8 = ffi::Buffer<ffi::U8>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnOnednnFwd, FwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // src_layer
                                  .Arg<F32>()  // src_iter
                                  .Arg<F32>()  // weights_layer
                                  .Arg<F32>()  // weights_iter
                                  .Arg<F32>()  // bias
                                  .Ret<F32>()  // dst_layer
                                  .Ret<F32>()  // dst_iter
                                  .Ret<U8>()   // workspace
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnOnednnLstmFwd, LstmFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // src_layer
                                  .Arg<F32>()  // src_iter
                                  .Arg<F32>()  // src_iter_c
                                  .Arg<F32>()  // weights_layer
                                  .Arg<F32>()  // weights_iter
                                  .Arg<F32>()  // bias
                                  .Ret<F32>()  // dst_layer
                                  .Ret<F32>()  // dst_iter
                                  .Ret<F32>()  // dst_iter_c
                                  .Ret<U8>()   // workspace
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnOnednnBwd, BwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // src_layer
                                  .Arg<F32>()  // src_iter
                                  .Arg<F32>()  // weights_layer
                                  .Arg<F32>()  // weights_iter
                                  .Arg<F32>()  // bias
                                  .Arg<F32>()  // dst_layer
                                  .Arg<F32>()  // dst_iter
                                  .Arg<U8>()   // workspace
                                  .Arg<F32>()  // diff_dst_layer
                                  .Arg<F32>()  // diff_dst_iter
                                  .Ret<F32>()  // diff_src_layer
                                  .Ret<F32>()  // diff_src_iter
                                  .Ret<F32>()  // diff_weights_layer
                                  .Ret<F32>()  // diff_weights_iter
                                  .Ret<F32>()  // diff_bias
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnOnednnLstmBwd, LstmBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // src_layer
                                  .Arg<F32>()  // src_iter
                                  .Arg<F32>()  // src_iter_c
                                  .Arg<F32>()  // weights_layer
                                  .Arg<F32>()  // weights_iter
                                  .Arg<F32>()  // bias
                                  .Arg<F32>()  // dst_layer
                                  .Arg<F32>()  // dst_iter
                                  .Arg<F32>()  // dst_iter_c
                                  .Arg<U8>()   // workspace
                                  .Arg<F32>()  // diff_dst_layer
                                  .Arg<F32>()  // diff_dst_iter
                                  .Arg<F32>()  // diff_dst_iter_c
                                  .Ret<F32>()  // diff_src_layer
                                  .Ret<F32>()  // diff_src_iter
                                  .Ret<F32>()  // diff_src_iter_c
                                  .Ret<F32>()  // diff_weights_layer
                                  .Ret<F32>()  // diff_weights_iter
                                  .Ret<F32>()  // diff_bias
                                  .Attr<int64_t>("reverse"));

// The forward-training workspace size in bytes for these dims (to shape the u8 output at
// trace time); -1 on error, with the message in `err` (up to err_len bytes, NUL-terminated).
extern "C" int64_t jrnn_onednn_workspace_size(int64_t kind, int64_t T, int64_t B, int64_t C,
                                              int64_t H, int64_t reverse, char* err,
                                              int64_t err_len) {
  try {
    return static_cast<int64_t>(GetPlan(kind, T, B, C, H, reverse).ws.get_size());
  } catch (const std::exception& e) {
    if (err && err_len > 0) {
      std::strncpy(err, e.what(), static_cast<size_t>(err_len - 1));
      err[err_len - 1] = '\0';
    }
    return -1;
  }
}

// oneDNN's version, "major.minor.patch" (for the Python side's messages).
extern "C" const char* jrnn_onednn_version() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    return std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." +
           std::to_string(ver->patch);
  }();
  return v.c_str();
}
