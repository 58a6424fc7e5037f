// The NCCL backend (comm/nccl_comm.h), label gpu: skips with the reason where cudaGetDeviceCount
// fails or finds nothing (except the missing-device error, checked everywhere). On one GPU: a
// one-rank world bootstrapped through a file, every collective against host references, messages to
// self, split, and bad arguments (host pointers, a root out of range) as errors that leave the
// group usable. On two or more GPUs (one thread per GPU): every collective against the rank-order
// serial reference, bit for bit (with two ranks each element is one addition, and a + b == b + a),
// messages both ways at once, and a timeout that names the rank, the group and the call.
#include "comm/nccl_comm.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

using core::Status;
using std::chrono::milliseconds;
using test::serial_sum;
using test::test_value;

int visible_devices() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// Empty when a device is usable; any cudaGetDeviceCount error means "no device" (no driver on
// CI machines: "CUDA driver version is insufficient", "no CUDA-capable device").
std::string gpu_unavailable_reason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return fmt::format("cudaGetDeviceCount: {}", cudaGetErrorString(e));
  return count == 0 ? "cudaGetDeviceCount found 0 devices" : "";
}

#define LOOM_REQUIRE_GPUS(n)                                                       \
  do {                                                                             \
    const std::string loom_reason_ = gpu_unavailable_reason();                     \
    if (!loom_reason_.empty()) GTEST_SKIP() << "no CUDA device: " << loom_reason_; \
    if (visible_devices() < (n))                                                   \
      GTEST_SKIP() << "needs " << (n) << " CUDA devices "                          \
                   << "(NCCL refuses two ranks on one)";                           \
  } while (0)

// A device copy of host values (cudaMalloc; freed after the communicator's work is done).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(n_, 1) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceArray() { (void)cudaFree(p_); }
  T* get() const { return p_; }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

template <typename T>
std::vector<T> rank_input(int r, int64_t count, int64_t offset = 0) {
  std::vector<T> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = test_value<T>(r, offset + i);
  return v;
}

class NcclCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "loom_nccl_XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Rank `rank` of a `size`-rank world on device `rank`, bootstrapped through a file in dir_.
  core::Result<std::unique_ptr<NcclComm>> world(int rank, int size) {
    LaunchInfo info;
    info.rank = info.local_rank = rank;
    info.world_size = size;
    auto method = parse_bootstrap_method("file:" + (dir_ / "nccl_id").string());
    if (!method.ok()) return method.status();
    return make_nccl_world(info, *method, -1, milliseconds(60'000));
  }

  std::filesystem::path dir_;
};

// Runs everywhere: without a driver cudaGetDeviceCount fails, with one the device does not exist;
// either way an error naming the rank and the call, never a crash.
TEST_F(NcclCommTest, MissingDeviceIsAnErrorNamingItOnMachinesWithOrWithoutAGpu) {
  LaunchInfo info;
  auto method = parse_bootstrap_method("file:" + (dir_ / "nccl_id").string());
  ASSERT_TRUE(method.ok());
  auto comm = make_nccl_world(info, *method, 1000, milliseconds(1000));
  ASSERT_FALSE(comm.ok());
  const std::string& m = comm.status().message();
  EXPECT_EQ(m.rfind("make_nccl_world at ", 0), 0u) << m;
  const bool no_driver = !gpu_unavailable_reason().empty();
  EXPECT_NE(m.find(no_driver ? "rank 0: cudaGetDeviceCount failed at "
                             : "rank 0: device 1000 (as asked) does not exist"),
            std::string::npos)
      << m;
}

template <typename T>
void check_one_rank_collectives(Communicator& comm, int64_t count) {
  SCOPED_TRACE(::testing::Message() << count << " elements of " << sizeof(T) << " bytes");
  const std::vector<T> x = rank_input<T>(0, count);
  DeviceArray<T> sum(x), mx(x), gathered(std::vector<T>(count, T(-1))), rs(x), bc(x);
  ASSERT_TRUE(comm.all_reduce(sum.get(), count, ReduceOp::kSum).ok());
  ASSERT_TRUE(comm.all_reduce(mx.get(), count, ReduceOp::kMax).ok());
  ASSERT_TRUE(comm.all_gather(sum.get(), gathered.get(), count).ok());
  ASSERT_TRUE(comm.reduce_scatter(rs.get(), rs.get(), count).ok());  // in place (out == in)
  ASSERT_TRUE(comm.broadcast(bc.get(), count, 0).ok());
  ASSERT_TRUE(comm.barrier().ok());
  // One rank: a sum of one contribution is that contribution, bit for bit.
  EXPECT_EQ(sum.host(), x);
  EXPECT_EQ(mx.host(), x);
  EXPECT_EQ(gathered.host(), x);
  EXPECT_EQ(rs.host(), x);
  EXPECT_EQ(bc.host(), x);
}

TEST_F(NcclCommTest, OneRankEveryCollectiveMatchesTheHostReference) {
  LOOM_REQUIRE_GPUS(1);
  auto comm = world(0, 1);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  EXPECT_EQ((*comm)->size(), 1);
  EXPECT_EQ((*comm)->name(), "world");
  for (int64_t count : {1, 7, 33, 100'003}) {
    check_one_rank_collectives<float>(**comm, count);
    check_one_rank_collectives<double>(**comm, count);
  }
  EXPECT_TRUE((*comm)->all_reduce(static_cast<float*>(nullptr), 0, ReduceOp::kSum).ok());
}

// The asynchronous reduction (the CUDA data-parallel trainer's overlap): the lane waits for the
// caller's event, not for the input stream; the returned event orders a reader after it;
// wait_async() settles everything; a synchronous collective after it runs in order.
TEST_F(NcclCommTest, OneRankAsyncReductionWaitsForItsEventAndOrdersItsReader) {
  LOOM_REQUIRE_GPUS(1);
  auto comm = world(0, 1);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  const std::vector<float> x = rank_input<float>(0, 100'003);
  DeviceArray<float> a(x), b(std::vector<float>(x.size(), 0.f));
  cudaStream_t producer, reader;
  ASSERT_EQ(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&reader, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t ready;
  ASSERT_EQ(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), cudaSuccess);
  // b is written on the producer stream; the reduction of b must see the copy.
  ASSERT_EQ(cudaMemcpyAsync(b.get(), a.get(), x.size() * 4, cudaMemcpyDeviceToDevice, producer),
            cudaSuccess);
  ASSERT_EQ(cudaEventRecord(ready, producer), cudaSuccess);
  auto done = (*comm)->all_reduce_sum_async(b.get(), static_cast<int64_t>(x.size()), ready);
  ASSERT_TRUE(done.ok()) << done.status().message();
  auto done2 = (*comm)->all_reduce_sum_async(a.get(), 0, ready);  // empty: an event all the same
  ASSERT_TRUE(done2.ok()) << done2.status().message();
  EXPECT_EQ((*comm)->pending_async(), 2u);
  // The reader copies b back into a after the reduction.
  ASSERT_EQ(cudaStreamWaitEvent(reader, *done, 0), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(a.get(), b.get(), x.size() * 4, cudaMemcpyDeviceToDevice, reader),
            cudaSuccess);
  ASSERT_TRUE((*comm)->wait_async().ok());
  EXPECT_EQ((*comm)->pending_async(), 0u);
  ASSERT_EQ(cudaStreamSynchronize(reader), cudaSuccess);
  EXPECT_EQ(b.host(), x);  // one rank: the sum of one contribution, bit for bit
  EXPECT_EQ(a.host(), x);
  ASSERT_TRUE((*comm)->all_reduce(b.get(), static_cast<int64_t>(x.size()), ReduceOp::kSum).ok());
  EXPECT_EQ(b.host(), x);
  (void)cudaEventDestroy(ready);
  (void)cudaStreamDestroy(producer);
  (void)cudaStreamDestroy(reader);
}

TEST_F(NcclCommTest, OneRankMessagesToSelfArriveInOrder) {
  LOOM_REQUIRE_GPUS(1);
  auto comm_or = world(0, 1);
  ASSERT_TRUE(comm_or.ok()) << comm_or.status().message();
  NcclComm& comm = **comm_or;
  DeviceArray<float> a(std::vector<float>{1, 2, 3}), b(std::vector<float>{4, 5, 6});
  DeviceArray<float> got(std::vector<float>(3, 0));
  ASSERT_TRUE(comm.send(a.get(), 12, 0).ok());
  ASSERT_TRUE(comm.send(b.get(), 12, 0).ok());
  ASSERT_EQ(cudaMemset(a.get(), 0, 12), cudaSuccess);  // a send is buffered: reuse is allowed
  ASSERT_TRUE(comm.recv(got.get(), 12, 0).ok());
  EXPECT_EQ(got.host(), (std::vector<float>{1, 2, 3}));
  const Status short_recv = comm.recv(got.get(), 8, 0);
  ASSERT_FALSE(short_recv.ok());
  EXPECT_NE(short_recv.message().find("recv of 8 bytes from rank 0: rank 0 sent 12 bytes"),
            std::string::npos)
      << short_recv.message();
  const Status nothing = comm.recv(got.get(), 12, 0);
  ASSERT_FALSE(nothing.ok());
  EXPECT_NE(nothing.message().find("no message from this rank to itself is pending"),
            std::string::npos)
      << nothing.message();
  EXPECT_TRUE(comm.barrier().ok());
}

TEST_F(NcclCommTest, OneRankSplitGivesANamedGroupThatWorks) {
  LOOM_REQUIRE_GPUS(1);
  auto comm = world(0, 1);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  auto sub = (*comm)->split(0, 5, "tp[0]");
  ASSERT_TRUE(sub.ok()) << sub.status().message();
  EXPECT_EQ((*sub)->name(), "tp[0]");
  EXPECT_EQ((*sub)->size(), 1);
  EXPECT_EQ((*sub)->rank(), 0);
  DeviceArray<double> x(std::vector<double>{0.25, -3});
  ASSERT_TRUE((*sub)->all_reduce(x.get(), 2, ReduceOp::kSum).ok());
  EXPECT_EQ(x.host(), (std::vector<double>{0.25, -3}));
  EXPECT_TRUE((*comm)->barrier().ok());  // the parent still works
}

TEST_F(NcclCommTest, BadArgumentsAreErrorsNamingTheCallAndLeaveTheGroupUsable) {
  LOOM_REQUIRE_GPUS(1);
  auto comm = world(0, 1);
  ASSERT_TRUE(comm.ok()) << comm.status().message();
  std::vector<float> host(4, 1.f);
  const Status on_host = (*comm)->all_reduce(host.data(), 4, ReduceOp::kSum);
  ASSERT_FALSE(on_host.ok());
  EXPECT_EQ(on_host.code(), core::ErrorCode::kInvalidArgument);
  EXPECT_NE(on_host.message().find("rank 0 of group 'world' (1 ranks): all_reduce: buffer"),
            std::string::npos)
      << on_host.message();
  EXPECT_NE(on_host.message().find("is host memory"), std::string::npos) << on_host.message();
  DeviceArray<float> x(std::vector<float>{1, 2});
  const Status root = (*comm)->broadcast(x.get(), 2, 1);
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.message().find("root 1 is not a rank"), std::string::npos) << root.message();
  ASSERT_TRUE((*comm)->all_reduce(x.get(), 2, ReduceOp::kSum).ok());
  EXPECT_EQ(x.host(), (std::vector<float>{1, 2}));
}

// Rank r of two on GPU r; returns what it saw for the main thread to check.
struct TwoRankResult {
  Status status;
  std::vector<float> sum, gathered, scattered, broadcast;
  std::vector<double> sum64;
  std::vector<int> message;
};

void run_two_rank_body(int r, NcclComm& comm, int64_t count, TwoRankResult* out) {
  DeviceArray<float> sum(rank_input<float>(r, count)), rs(rank_input<float>(r, 2 * count));
  DeviceArray<double> sum64(rank_input<double>(r, count));
  DeviceArray<float> gathered(std::vector<float>(2 * count, -1.f));
  DeviceArray<float> bc(rank_input<float>(r == 1 ? 11 : r, count));
  DeviceArray<int> mine(std::vector<int>{r, 10 * r, -r}), theirs(std::vector<int>(3, -7));
  const std::vector<std::function<Status()>> calls = {
      [&] { return comm.all_reduce(sum.get(), count, ReduceOp::kSum); },
      [&] { return comm.all_reduce(sum64.get(), count, ReduceOp::kSum); },
      [&] { return comm.all_gather(sum.get(), gathered.get(), count); },
      // In place (out == in): rank 0's is NCCL's in-place layout, rank 1's goes through scratch.
      [&] { return comm.reduce_scatter(rs.get(), rs.get(), count); },
      [&] { return comm.broadcast(bc.get(), count, 1); },
      // Both ranks send first, then receive: a send must not wait for the matching recv.
      [&] { return comm.send(mine.get(), sizeof(int) * 3, 1 - r); },
      [&] { return comm.recv(theirs.get(), sizeof(int) * 3, 1 - r); },
      [&] { return comm.barrier(); },
  };
  for (const auto& call : calls) {
    out->status = call();
    if (!out->status.ok()) return;
  }
  out->sum = sum.host();
  out->sum64 = sum64.host();
  out->gathered = gathered.host();
  out->scattered = rs.host();
  out->scattered.resize(count);
  out->broadcast = bc.host();
  out->message = theirs.host();
}

TEST_F(NcclCommTest, TwoGpusMatchTheRankOrderReferenceBitForBit) {
  LOOM_REQUIRE_GPUS(2);
  constexpr int64_t kCount = 4099;  // odd: not a multiple of NCCL's chunk sizes
  TwoRankResult results[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm = world(r, 2);
      if (!comm.ok()) {
        results[r].status = comm.status();
        return;
      }
      run_two_rank_body(r, **comm, kCount, &results[r]);
    });
  }
  for (auto& t : threads) t.join();
  const std::vector<float> ref = serial_sum<float>(2, kCount);
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    ASSERT_TRUE(results[r].status.ok()) << results[r].status.message();
    EXPECT_EQ(std::memcmp(results[r].sum.data(), ref.data(), kCount * sizeof(float)), 0);
    const std::vector<double> ref64 = serial_sum<double>(2, kCount);
    EXPECT_EQ(std::memcmp(results[r].sum64.data(), ref64.data(), kCount * sizeof(double)), 0);
    // all_gather of the sums: both halves are the (identical) sum.
    EXPECT_EQ(std::vector<float>(results[r].gathered.begin(), results[r].gathered.begin() + kCount),
              ref);
    EXPECT_EQ(std::vector<float>(results[r].gathered.begin() + kCount, results[r].gathered.end()),
              ref);
    const std::vector<float> ref_rs = serial_sum<float>(2, kCount, r * kCount);
    EXPECT_EQ(std::memcmp(results[r].scattered.data(), ref_rs.data(), kCount * sizeof(float)), 0);
    EXPECT_EQ(results[r].broadcast, rank_input<float>(11, kCount));
    EXPECT_EQ(results[r].message, (std::vector<int>{1 - r, 10 * (1 - r), -(1 - r)}));
  }
}

TEST_F(NcclCommTest, TwoGpusTimeoutNamesRankGroupAndCallAndBreaksTheGroup) {
  LOOM_REQUIRE_GPUS(2);
  std::string message, refused;
  double waited_s = 0;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm = world(r, 2);
      ASSERT_TRUE(comm.ok()) << comm.status().message();
      (*comm)->set_timeout(milliseconds(1000));
      if (r == 1) return;  // never joins the all_reduce (its destructor aborts after 1 s)
      DeviceArray<float> x(std::vector<float>{1});
      const auto start = std::chrono::steady_clock::now();
      message = (*comm)->all_reduce(x.get(), 1, ReduceOp::kSum).message();
      waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      refused = (*comm)->barrier().message();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(message.rfind("rank 0 of group 'world' (2 ranks): all_reduce timed out after 1.0 s", 0),
            0u)
      << message;
  EXPECT_LT(waited_s, 3.0);
  EXPECT_NE(refused.find("barrier refused: the group is unusable"), std::string::npos) << refused;
}

}  // namespace
}  // namespace loom::comm
