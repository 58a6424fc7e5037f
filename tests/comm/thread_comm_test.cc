// The in-process backend against serial references: every collective on 1-4 ranks with odd
// counts, rank-order (bit-identical) sums, split, timeouts that name rank, group and call, and
// mismatched calls.
#include "comm/thread_comm.h"

#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

using test::run_thread_world;
using test::serial_sum;
using test::test_value;

template <typename T>
std::vector<T> rank_input(int r, int64_t count, int64_t offset = 0) {
  std::vector<T> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = test_value<T>(r, offset + i);
  return v;
}

template <typename T>
void check_all_collectives(int n, int64_t count) {
  SCOPED_TRACE(::testing::Message() << n << " ranks, " << count << " elements");
  std::mutex mu;  // gtest assertions from several threads
  run_thread_world(n, [&](int r, Communicator& comm) {
    std::vector<T> sum = rank_input<T>(r, count);
    const auto sum_status = comm.all_reduce(sum.data(), count, ReduceOp::kSum);
    std::vector<T> mx = rank_input<T>(r, count);
    const auto max_status = comm.all_reduce(mx.data(), count, ReduceOp::kMax);
    // reduce_scatter: rank r's input covers n chunks; element j of the input is value(r, j).
    std::vector<T> rs_in = rank_input<T>(r, count * n), rs_out(count, T(-1));
    const auto rs_status = comm.reduce_scatter(rs_in.data(), rs_out.data(), count);
    std::vector<T> ag_in = rank_input<T>(r, count), ag_out(count * n, T(-1));
    const auto ag_status = comm.all_gather(ag_in.data(), ag_out.data(), count);
    std::vector<std::vector<T>> bc(n);
    bool bc_ok = true;
    for (int root = 0; root < n; ++root) {
      bc[root] = rank_input<T>(r == root ? 10 + root : r, count);
      bc_ok = bc_ok && comm.broadcast(bc[root].data(), count, root).ok();
    }
    const bool barrier_ok = comm.barrier().ok();

    std::lock_guard<std::mutex> lock(mu);
    ASSERT_TRUE(sum_status.ok()) << sum_status.message();
    ASSERT_TRUE(max_status.ok()) << max_status.message();
    ASSERT_TRUE(rs_status.ok()) << rs_status.message();
    ASSERT_TRUE(ag_status.ok()) << ag_status.message();
    ASSERT_TRUE(bc_ok);
    ASSERT_TRUE(barrier_ok);
    const std::vector<T> ref_sum = serial_sum<T>(n, count);
    for (int64_t i = 0; i < count; ++i) {
      // Bit equality: the sum must be the rank-order one, on every rank.
      EXPECT_EQ(std::memcmp(&sum[i], &ref_sum[i], sizeof(T)), 0) << "rank " << r << " i " << i;
      T ref_max = test_value<T>(0, i);
      for (int q = 1; q < n; ++q) ref_max = std::max(ref_max, test_value<T>(q, i));
      EXPECT_EQ(mx[i], ref_max);
    }
    const std::vector<T> ref_rs = serial_sum<T>(n, count, r * count);
    for (int64_t i = 0; i < count; ++i) {
      EXPECT_EQ(std::memcmp(&rs_out[i], &ref_rs[i], sizeof(T)), 0) << "rank " << r << " i " << i;
    }
    for (int q = 0; q < n; ++q) {
      for (int64_t i = 0; i < count; ++i) EXPECT_EQ(ag_out[q * count + i], test_value<T>(q, i));
    }
    for (int root = 0; root < n; ++root) EXPECT_EQ(bc[root], rank_input<T>(10 + root, count));
  });
}

TEST(ThreadComm, EveryCollectiveMatchesSerialReferenceOn1To4Ranks) {
  for (int n = 1; n <= 4; ++n) {
    for (int64_t count : {1, 7, 33}) {
      check_all_collectives<float>(n, count);
      check_all_collectives<double>(n, count);
    }
  }
}

TEST(ThreadComm, ZeroCountCollectivesSucceed) {
  run_thread_world(3, [](int, Communicator& comm) {
    float x = 1;
    EXPECT_TRUE(comm.all_reduce(&x, 0, ReduceOp::kSum).ok());
    EXPECT_TRUE(comm.all_gather(&x, &x, 0).ok());
    EXPECT_EQ(x, 1.0f);
  });
}

// 1e8, 1, -1e8, 1 in fp32: the rank-order sum is 1, any order adding the ones first gives 0 or 2.
// Ranks arrive in reverse order (rank 3 first) to show that arrival order does not matter.
TEST(ThreadComm, Fp32SumIsRankOrderWhateverTheArrivalOrder) {
  const float kRankOrderSum = ((1e8f + 1.0f) + -1e8f) + 1.0f;
  ASSERT_EQ(kRankOrderSum, 1.0f);
  ASSERT_NE((1.0f + 1.0f) + (1e8f + -1e8f), kRankOrderSum);  // the order matters for these inputs
  std::array<uint32_t, 4> bits{};
  run_thread_world(4, [&](int r, Communicator& comm) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * (3 - r)));
    float x = test_value<float>(r, 0);
    ASSERT_TRUE(comm.all_reduce(&x, 1, ReduceOp::kSum).ok());
    bits[r] = std::bit_cast<uint32_t>(x);
  });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(bits[r], std::bit_cast<uint32_t>(kRankOrderSum));
}

TEST(ThreadComm, InPlaceAllGatherAndReduceScatter) {
  run_thread_world(3, [](int r, Communicator& comm) {
    std::vector<double> buf(3 * 5, -1.0);
    for (int i = 0; i < 5; ++i) buf[r * 5 + i] = r * 100 + i;
    ASSERT_TRUE(comm.all_gather(buf.data() + r * 5, buf.data(), 5).ok());
    for (int q = 0; q < 3; ++q) {
      for (int i = 0; i < 5; ++i) EXPECT_EQ(buf[q * 5 + i], q * 100 + i);
    }
    // Every rank holds the same buf now: chunk r of the sum is 3 * chunk r, written over buf[0..5).
    ASSERT_TRUE(comm.reduce_scatter(buf.data(), buf.data(), 5).ok());
    for (int i = 0; i < 5; ++i) EXPECT_EQ(buf[i], 3.0 * (r * 100 + i));
  });
}

TEST(ThreadComm, SendRecvRingAndSizeMismatch) {
  run_thread_world(4, [](int r, Communicator& comm) {
    const int next = (r + 1) % 4, prev = (r + 3) % 4;
    const std::array<int, 3> out = {r, r * r, -r};
    std::array<int, 3> in{};
    ASSERT_TRUE(comm.send(out.data(), sizeof(out), next).ok());
    ASSERT_TRUE(comm.recv(in.data(), sizeof(in), prev).ok());
    EXPECT_EQ(in, (std::array<int, 3>{prev, prev * prev, -prev}));
    // A message of the wrong size is an error naming both sizes.
    ASSERT_TRUE(comm.send(out.data(), 8, next).ok());
    const auto status = comm.recv(in.data(), sizeof(in), prev);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find("recv of 12 bytes from rank " + std::to_string(prev)),
              std::string::npos)
        << status.message();
    EXPECT_NE(status.message().find("sent 8 bytes"), std::string::npos) << status.message();
  });
}

TEST(ThreadComm, SplitOrdersByKeyThenRank) {
  run_thread_world(4, [](int r, Communicator& comm) {
    // Even and odd ranks; key -r reverses the order inside each group.
    auto sub = comm.split(r % 2, -r, r % 2 == 0 ? "even" : "odd");
    ASSERT_TRUE(sub.ok()) << sub.status().message();
    Communicator& g = **sub;
    EXPECT_EQ(g.size(), 2);
    EXPECT_EQ(g.rank(), r < 2 ? 1 : 0);
    EXPECT_EQ(g.name(), r % 2 == 0 ? "even" : "odd");
    double mine = r, all[2] = {-1, -1};
    ASSERT_TRUE(g.all_gather(&mine, all, 1).ok());
    EXPECT_EQ(all[0], r % 2 + 2);
    EXPECT_EQ(all[1], r % 2);
    EXPECT_TRUE(comm.barrier().ok());  // the parent still works after a split
  });
}

TEST(ThreadComm, MissingRankTimesOutNamingRankGroupAndCall) {
  std::array<std::string, 4> messages;
  const auto start = std::chrono::steady_clock::now();
  run_thread_world(
      4,
      [&](int r, Communicator& comm) {
        float x = 1;
        if (r != 3) {
          messages[r] = comm.all_reduce(&x, 1, ReduceOp::kSum).message();
        } else {
          // Rank 3 skips the call, then finds the group unusable rather than hanging.
          std::this_thread::sleep_for(std::chrono::milliseconds(1300));
          messages[r] = comm.all_reduce(&x, 1, ReduceOp::kSum).message();
        }
      },
      std::chrono::milliseconds(1000));
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(elapsed_s, 3.0);  // 1 s timeout + 0.3 s for rank 3's late call, plus slack
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(messages[r], "rank " + std::to_string(r) +
                               " of group 'world' (4 ranks): all_reduce timed out after 1.0 s "
                               "waiting for ranks 3");
  }
  EXPECT_NE(messages[3].find("rank 3 of group 'world' (4 ranks): all_reduce refused"),
            std::string::npos)
      << messages[3];
}

TEST(ThreadComm, MissingRankInSubGroupNamesTheSubGroup) {
  std::array<std::string, 4> messages;
  run_thread_world(
      4,
      [&](int r, Communicator& comm) {
        auto sub = comm.split(r / 2, r, r < 2 ? "tp[0,1]" : "tp[2,3]");
        ASSERT_TRUE(sub.ok());
        double x = 0;
        if (r != 1) messages[r] = (*sub)->broadcast(&x, 1, 0).message();
      },
      std::chrono::milliseconds(300));
  EXPECT_EQ(messages[0],
            "rank 0 of group 'tp[0,1]' (2 ranks): broadcast timed out after 300 ms waiting for "
            "ranks 1");
  EXPECT_EQ(messages[2], "");  // the other group is unaffected
}

TEST(ThreadComm, RecvFromSilentPeerTimesOut) {
  std::string message;
  run_thread_world(
      2,
      [&](int r, Communicator& comm) {
        char c;
        if (r == 1) message = comm.recv(&c, 1, 0).message();
      },
      std::chrono::milliseconds(200));
  EXPECT_EQ(message,
            "rank 1 of group 'world' (2 ranks): recv of 1 bytes from rank 0 timed out after "
            "200 ms (rank 0 never sent)");
}

TEST(ThreadComm, MismatchedCallsAreErrorsNamingBothRanks) {
  std::array<std::string, 3> messages;
  run_thread_world(3, [&](int r, Communicator& comm) {
    float x[4] = {};
    messages[r] = r == 0 ? comm.all_reduce(x, 4, ReduceOp::kSum).message()
                         : comm.broadcast(x, 4, 0).message();
    // Same call, different counts.
    const std::string counts = comm.all_gather(x, x, r == 2 ? 1 : 2).message();
    EXPECT_NE(counts.find("rank 0 called all_gather(fp32, 2 elements) but rank 2 called "
                          "all_gather(fp32, 1 elements)"),
              std::string::npos)
        << counts;
    EXPECT_TRUE(comm.barrier().ok());  // a mismatch fails the call, not the group
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(messages[r], "rank " + std::to_string(r) + " of group 'world' (3 ranks): " +
                               (r == 0 ? "all_reduce" : "broadcast") +
                               ": mismatched collective calls: rank 0 called all_reduce(fp32, 4 "
                               "elements, sum) but rank 1 called broadcast(fp32, 4 elements, "
                               "root 0)");
  }
}

TEST(ThreadComm, BadArgumentsAreErrors) {
  auto world = make_thread_world(2);
  float x = 0;
  EXPECT_NE(world[0]->all_reduce(&x, -1, ReduceOp::kSum).message().find("count -1 is negative"),
            std::string::npos);
  EXPECT_NE(world[0]->broadcast(&x, 1, 2).message().find("root 2 is not a rank (valid: 0..1)"),
            std::string::npos);
  EXPECT_NE(world[1]->send(&x, 4, -1).message().find("peer -1 is not a rank"), std::string::npos);
  EXPECT_NE(world[1]->split(-2, 0).status().message().find("color -2 is negative"),
            std::string::npos);
  EXPECT_EQ(world[0]->timeout(), Communicator::kDefaultTimeout);
}

}  // namespace
}  // namespace loom::comm
