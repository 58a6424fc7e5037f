// Builds the forward and backward SDPA operation graphs of attention_cudnn_graph.h.
#include "kernels/cuda/attention_cudnn_graph.h"

#include <fmt/format.h>

#include <cmath>

namespace loom::kernels::cuda::sdpa {
namespace {

using Dims = std::vector<int64_t>;
constexpr std::size_t kRegionAlign = 256;  // cudaMalloc's alignment, kept for every region

std::size_t round_up(std::size_t bytes) { return (bytes + kRegionAlign - 1) / kRegionAlign * kRegionAlign; }

Dims packed_strides(const Dims& dims) {
  Dims s(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

// Adds descriptors to a Graph; each is finalized as it is made.
class Builder {
 public:
  Builder(Graph& g, const Variant& v) : g_(g), v_(v) {}

  const CudnnDescriptor& tensor(const std::string& name, const Dims& dims, const Dims& strides,
                                cudnnDataType_t type, int64_t uid, bool is_virtual,
                                bool by_value = false) {
    auto& t = add(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor " + name);
    t.set_data_type(CUDNN_ATTR_TENSOR_DATA_TYPE, type)
        .set_int64s(CUDNN_ATTR_TENSOR_DIMENSIONS, dims)
        .set_int64s(CUDNN_ATTR_TENSOR_STRIDES, strides)
        .set_int64(CUDNN_ATTR_TENSOR_UNIQUE_ID, uid < 0 ? g_.next_uid++ : uid)
        .set_int64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 16);
    if (is_virtual) t.set_bool(CUDNN_ATTR_TENSOR_IS_VIRTUAL, true);
    if (by_value) t.set_bool(CUDNN_ATTR_TENSOR_IS_BY_VALUE, true);
    return t.finalize();
  }
  // A virtual intermediate, packed.
  const CudnnDescriptor& inner(const std::string& name, const Dims& dims,
                               cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return tensor(name, dims, packed_strides(dims), type, -1, true);
  }
  // A by-value fp32 scalar (its variant-pack entry is a host pointer).
  const CudnnDescriptor& scalar(const std::string& name, int64_t uid) {
    return tensor(name, {1, 1, 1, 1}, {1, 1, 1, 1}, CUDNN_DATA_FLOAT, uid, false, true);
  }

  void pointwise(const std::string& name, cudnnPointwiseMode_t mode, const CudnnDescriptor& x,
                 const CudnnDescriptor* b, const CudnnDescriptor* t, const CudnnDescriptor& y,
                 cudnnDataType_t prec = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    auto& pw = add(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise " + name);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
        .set_data_type(CUDNN_ATTR_POINTWISE_MATH_PREC, prec);
    if (axis >= 0) pw.set_int64(CUDNN_ATTR_POINTWISE_AXIS, axis);
    pw.finalize();
    auto& op = add(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "operation " + name);
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw)
        .set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x)
        .set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y)
        .set_float(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, 1.f)
        .set_float(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, 1.f);
    if (b != nullptr) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
    if (t != nullptr) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, *t);
    g_.ops.push_back(&op.finalize());
  }
  void unary(const std::string& name, cudnnPointwiseMode_t mode, const CudnnDescriptor& x,
             const CudnnDescriptor& y) {
    pointwise(name, mode, x, nullptr, nullptr, y);
  }
  void binary(const std::string& name, cudnnPointwiseMode_t mode, const CudnnDescriptor& x,
              const CudnnDescriptor& b, const CudnnDescriptor& y) {
    pointwise(name, mode, x, &b, nullptr, y);
  }

  void matmul(const std::string& name, const CudnnDescriptor& a, const CudnnDescriptor& b,
              const CudnnDescriptor& c) {
    auto& mm = add(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul " + name);
    mm.set_data_type(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_DATA_FLOAT).finalize();
    auto& op = add(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "operation " + name);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    g_.ops.push_back(&op.finalize());
  }

  // Reduces over the axes where y is smaller than x.
  void reduction(const std::string& name, cudnnReduceTensorOp_t reduce, const CudnnDescriptor& x,
                 const CudnnDescriptor& y) {
    auto& red = add(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction " + name);
    red.set_data_type(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_DATA_FLOAT)
        .set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce)
        .set_bool(CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, false)
        .finalize();
    auto& op = add(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "operation " + name);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, red)
        .set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x)
        .set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    g_.ops.push_back(&op.finalize());
  }

  // y is a view of x through y's dims and strides (a transpose when the strides swap).
  void reshape(const std::string& name, const CudnnDescriptor& x, const CudnnDescriptor& y) {
    auto& op = add(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "operation " + name);
    op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x).set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    g_.ops.push_back(&op.finalize());
  }

  // Causal mask (top-left diagonal: key j visible to query i iff i >= j) on scores x -> y.
  void causal_mask(const std::string& name, const CudnnDescriptor& x, const CudnnDescriptor& neginf,
                   const CudnnDescriptor& y, const Dims& scores) {
    const cudnnDataType_t prec = v_.gen_index_int32_prec ? CUDNN_DATA_INT32 : CUDNN_DATA_FLOAT;
    const auto& row = inner(name + " row", scores, CUDNN_DATA_INT32);
    const auto& col = inner(name + " col", scores, CUDNN_DATA_INT32);
    const auto& keep = inner(name + " keep", scores, CUDNN_DATA_BOOLEAN);
    pointwise(name + " row index", CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, row, prec, 2);
    pointwise(name + " col index", CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, col, prec, 3);
    pointwise(name + " row >= col", CUDNN_POINTWISE_CMP_GE, row, &col, nullptr, keep,
              CUDNN_DATA_BOOLEAN);
    // BINARY_SELECT: y = keep ? x : -inf.
    pointwise(name + " select", CUDNN_POINTWISE_BINARY_SELECT, x, &neginf, &keep, y);
  }

 private:
  CudnnDescriptor& add(cudnnBackendDescriptorType_t type, std::string name) {
    g_.keep.push_back(std::make_unique<CudnnDescriptor>(*g_.api, type, std::move(name)));
    return *g_.keep.back();
  }
  Graph& g_;
  const Variant& v_;
};

// Our rows [B, T, H, D] seen as [b, h, s, d].
Dims bhsd_strides(const AttentionShape& a, int64_t heads) {
  return {a.t * heads * a.d, a.d, heads * a.d, 1};
}

}  // namespace

std::string Variant::name() const {
  return fmt::format("gen_index {}, backward K view {}", gen_index_int32_prec ? "int32" : "fp32",
                     reshape_k_bf16 ? "bf16" : "fp32");
}

std::vector<Variant> variants() {
  return {Variant{}, Variant{.gen_index_int32_prec = false, .reshape_k_bf16 = true},
          Variant{.gen_index_int32_prec = true, .reshape_k_bf16 = true}};
}

std::unique_ptr<Graph> build_forward(const CudnnApi& api, const AttentionShape& a,
                                     const Variant& v) {
  auto g = std::make_unique<Graph>(api);
  Builder x(*g, v);
  const Dims scores{a.b, a.hq, a.t, a.t}, rows{a.b, a.hq, a.t, 1};
  const Dims kv = bhsd_strides(a, a.hkv);
  const auto& q = x.tensor("q", {a.b, a.hq, a.t, a.d}, bhsd_strides(a, a.hq), CUDNN_DATA_BFLOAT16, kQ, false);
  const auto& kt = x.tensor("k^T", {a.b, a.hkv, a.d, a.t}, {kv[0], kv[1], 1, kv[2]},
                            CUDNN_DATA_BFLOAT16, kK, false);
  const auto& vv = x.tensor("v", {a.b, a.hkv, a.t, a.d}, kv, CUDNN_DATA_BFLOAT16, kV, false);
  const auto& o = x.tensor("o", {a.b, a.hq, a.t, a.d}, bhsd_strides(a, a.hq), CUDNN_DATA_BFLOAT16, kO, false);
  const auto& stats = x.tensor("stats", rows, packed_strides(rows), CUDNN_DATA_FLOAT, kStats, false);
  const auto& scale = x.scalar("scale", kScale);
  const auto& neginf = x.scalar("-inf", kNegInf);

  const auto& s0 = x.inner("q k^T", scores);
  x.matmul("q k^T", q, kt, s0);
  const auto& s1 = x.inner("scaled scores", scores);
  x.binary("scale", CUDNN_POINTWISE_MUL, s0, scale, s1);
  const auto& s2 = x.inner("masked scores", scores);
  x.causal_mask("causal", s1, neginf, s2, scores);
  const auto& m = x.inner("row max", rows);
  x.reduction("row max", CUDNN_REDUCE_TENSOR_MAX, s2, m);
  const auto& z0 = x.inner("scores - max", scores);
  x.binary("scores - max", CUDNN_POINTWISE_SUB, s2, m, z0);
  const auto& e = x.inner("exp", scores);
  x.unary("exp", CUDNN_POINTWISE_EXP, z0, e);
  const auto& z = x.inner("row sum", rows);
  x.reduction("row sum", CUDNN_REDUCE_TENSOR_ADD, e, z);
  const auto& logz = x.inner("log sum", rows);
  x.unary("log sum", CUDNN_POINTWISE_LOG, z, logz);
  x.binary("log-sum-exp", CUDNN_POINTWISE_ADD, m, logz, stats);
  // P is rounded to bf16: the second product's A operand is the I/O type.
  const auto& p = x.inner("probabilities", scores, CUDNN_DATA_BFLOAT16);
  x.binary("normalise", CUDNN_POINTWISE_DIV, e, z, p);
  x.matmul("p v", p, vv, o);
  return g;
}

std::unique_ptr<Graph> build_backward(const CudnnApi& api, const AttentionShape& a,
                                      const Variant& v) {
  auto g = std::make_unique<Graph>(api);
  Builder x(*g, v);
  const Dims scores{a.b, a.hq, a.t, a.t}, rows{a.b, a.hq, a.t, 1};
  const Dims qd{a.b, a.hq, a.t, a.d}, kvd{a.b, a.hkv, a.t, a.d};
  const Dims qs = bhsd_strides(a, a.hq), kv = bhsd_strides(a, a.hkv);
  const Dims transposed{a.hq * a.t * a.t, a.t * a.t, 1, a.t};  // [b, h, s, s] read as its transpose
  const auto bf16 = CUDNN_DATA_BFLOAT16;
  const auto& q = x.tensor("q", qd, qs, bf16, kQ, false);
  const auto& kt = x.tensor("k^T", {a.b, a.hkv, a.d, a.t}, {kv[0], kv[1], 1, kv[2]}, bf16, kK, false);
  const auto& vt = x.tensor("v^T", {a.b, a.hkv, a.d, a.t}, {kv[0], kv[1], 1, kv[2]}, bf16, kV, false);
  const auto& o = x.tensor("o", qd, qs, bf16, kO, false);
  const auto& stats = x.tensor("stats", rows, packed_strides(rows), CUDNN_DATA_FLOAT, kStats, false);
  const auto& dout = x.tensor("do", qd, qs, bf16, kDO, false);
  const auto& dq = x.tensor("dq", qd, qs, bf16, kDQ, false);
  const auto& dk = x.tensor("dk", kvd, kv, bf16, kDK, false);
  const auto& dv = x.tensor("dv", kvd, kv, bf16, kDV, false);
  const auto& softmax_sum = x.tensor("softmax_sum", rows, packed_strides(rows), CUDNN_DATA_FLOAT, kSoftmaxSum, false);
  const auto& dq_accum = x.tensor("dq accumulator", qd, packed_strides(qd), CUDNN_DATA_FLOAT, kDQAccum, false);
  const auto& one = x.scalar("1", kOne);
  const auto& scale = x.scalar("scale", kScale);
  const auto& neginf = x.scalar("-inf", kNegInf);

  // softmax_sum = rowsum(dO * O) (FlashAttention-2's D_i), through cuDNN's x 1 (dropout) step.
  const auto& t0 = x.inner("do * o", qd);
  x.binary("do * o", CUDNN_POINTWISE_MUL, dout, o, t0);
  const auto& t1 = x.inner("rowsum do * o", rows);
  x.reduction("rowsum do * o", CUDNN_REDUCE_TENSOR_ADD, t0, t1);
  x.binary("softmax_sum", CUDNN_POINTWISE_MUL, t1, one, softmax_sum);

  // P = exp(scale q k^T - stats), masked.
  const auto& s0 = x.inner("q k^T", scores);
  x.matmul("q k^T", q, kt, s0);
  const auto& s1 = x.inner("scaled scores", scores);
  x.binary("scale", CUDNN_POINTWISE_MUL, s0, scale, s1);
  const auto& s2 = x.inner("scores - lse", scores);
  x.binary("scores - lse", CUDNN_POINTWISE_SUB, s1, stats, s2);
  const auto& s3 = x.inner("masked", scores);
  x.causal_mask("causal", s2, neginf, s3, scores);
  const auto& p = x.inner("probabilities", scores);
  x.unary("exp", CUDNN_POINTWISE_EXP, s3, p);

  // dV = P^T dO (per query head, summed over the GQA group).
  const auto& pt = x.tensor("p^T", scores, transposed, bf16, -1, true);
  x.reshape("p^T", p, pt);
  if (a.hq == a.hkv) {
    x.matmul("p^T do", pt, dout, dv);
  } else {
    const auto& dv_full = x.inner("dv per query head", qd, bf16);
    x.matmul("p^T do", pt, dout, dv_full);
    x.reduction("dv over the group", CUDNN_REDUCE_TENSOR_ADD, dv_full, dv);
  }

  // dS = P (dO V^T - softmax_sum) scale.
  const auto& dp = x.inner("do v^T", scores);
  x.matmul("do v^T", dout, vt, dp);
  const auto& d1 = x.inner("dp - softmax_sum", scores);
  x.binary("dp - softmax_sum", CUDNN_POINTWISE_SUB, dp, softmax_sum, d1);
  const auto& d2 = x.inner("p (dp - softmax_sum)", scores);
  x.binary("p (dp - softmax_sum)", CUDNN_POINTWISE_MUL, d1, p, d2);
  const auto& ds = x.inner("ds", scores);
  x.binary("ds scale", CUDNN_POINTWISE_MUL, d2, scale, ds);

  // dK = dS^T Q (summed over the group).
  const auto& dst = x.tensor("ds^T", scores, transposed, bf16, -1, true);
  x.reshape("ds^T", ds, dst);
  if (a.hq == a.hkv) {
    x.matmul("ds^T q", dst, q, dk);
  } else {
    const auto& dk_full = x.inner("dk per query head", qd, bf16);
    x.matmul("ds^T q", dst, q, dk_full);
    x.reduction("dk over the group", CUDNN_REDUCE_TENSOR_ADD, dk_full, dk);
  }

  // dQ = dS K, accumulated in fp32, then rounded to bf16.
  const auto& kview = x.tensor("k", kvd, kv, v.reshape_k_bf16 ? bf16 : CUDNN_DATA_FLOAT, -1, true);
  x.reshape("k", kt, kview);
  x.matmul("ds k", ds, kview, dq_accum);
  x.unary("dq", CUDNN_POINTWISE_IDENTITY, dq_accum, dq);
  return g;
}

std::size_t backward_softmax_sum_offset(const AttentionShape& a) {
  return round_up(static_cast<std::size_t>(a.b * a.hq * a.t * a.d) * sizeof(float));
}

std::size_t backward_scratch_bytes(const AttentionShape& a) {
  return backward_softmax_sum_offset(a) +
         round_up(static_cast<std::size_t>(a.b * a.hq * a.t) * sizeof(float));
}

}  // namespace loom::kernels::cuda::sdpa
