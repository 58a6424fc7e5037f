// The bootstrap of NCCL's unique id (comm/bootstrap.h) without a GPU: four ranks as threads get
// rank 0's blob over a TCP rendezvous on 127.0.0.1, over a shared file in a temp dir and over the
// thread backend; every failure (missing rank 0, world-size mismatch, foreign, truncated or stale
// file, bad method name) is an error naming the rank and the address or path, within the deadline.
#include "comm/bootstrap.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

using Blob = std::vector<uint8_t>;
using BlobResult = core::Result<Blob>;
using std::chrono::milliseconds;

// gtest without gmock: `text` contains `part`, else both are printed.
::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "'\n  does not contain\n'" << part << "'";
}

// 128 bytes like an ncclUniqueId, covering every byte value's neighbourhood, with an all-ones
// word (a NaN as fp64) and a signalling-NaN word, which a bit-copying transport must keep.
Blob test_blob(size_t bytes = 128) {
  Blob b(bytes);
  for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(i * 37 + 11);
  const uint8_t snan[8] = {0x01, 0, 0, 0, 0, 0, 0xF0, 0x7F};  // 0x7FF0000000000001 little-endian
  for (size_t i = 0; i < 8 && 16 + i < bytes; ++i) b[8 + i] = 0xFF, b[16 + i] = snan[i];
  return b;
}

// A TCP port nobody listens on right now: bind port 0 and ask the kernel which it gave.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t length = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length) == 0;
  ::close(fd);
  return ok ? ntohs(a.sin_port) : 0;
}

LaunchInfo launch(int rank, int world_size, int port = 0) {
  LaunchInfo info;
  info.rank = rank;
  info.world_size = world_size;
  info.master_addr = "127.0.0.1";
  info.master_port = port;
  info.source = "test";
  return info;
}

// Runs body(rank) on one thread per rank and returns each rank's result.
std::vector<BlobResult> run_ranks(int n, const std::function<BlobResult(int)>& body) {
  std::vector<std::optional<BlobResult>> results(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&, r] { results[r].emplace(body(r)); });
  for (auto& t : threads) t.join();
  std::vector<BlobResult> out;
  for (auto& r : results) out.push_back(std::move(*r));
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(BootstrapMethod, ParsesTheThreeSpellings) {
  auto tcp = parse_bootstrap_method("tcp");
  ASSERT_TRUE(tcp.ok()) << tcp.status().message();
  EXPECT_EQ(tcp->kind, BootstrapKind::kTcp);
  auto file = parse_bootstrap_method("file:/shared/run42/nccl_id");
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(file->kind, BootstrapKind::kFile);
  EXPECT_EQ(file->path, "/shared/run42/nccl_id");
  EXPECT_EQ(to_string(*file), "file:/shared/run42/nccl_id");
  auto mpi = parse_bootstrap_method("mpi");
#ifdef LOOM_WITH_MPI
  ASSERT_TRUE(mpi.ok()) << mpi.status().message();
  EXPECT_EQ(to_string(*mpi), "mpi");
#else
  ASSERT_FALSE(mpi.ok());
  EXPECT_TRUE(contains(mpi.status().message(), "needs MPI"));
#endif
}

TEST(BootstrapMethod, BadNamesAreErrorsNamingTheValueAndTheChoices) {
  auto unknown = parse_bootstrap_method("gloo");
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(contains(unknown.status().message(), "'gloo'"));
  EXPECT_TRUE(contains(unknown.status().message(), "'mpi', 'tcp' or 'file:<path>'"));
  auto no_path = parse_bootstrap_method("file:");
  ASSERT_FALSE(no_path.ok());
  EXPECT_TRUE(contains(no_path.status().message(), "names no path"));
  EXPECT_FALSE(parse_bootstrap_method("").ok());
  EXPECT_FALSE(parse_bootstrap_method("TCP").ok());
}

TEST(BootstrapTcp, FourRanksOnLoopbackGetRank0sBlob) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  const Blob blob = test_blob();
  const auto results = run_ranks(4, [&](int r) {
    // Rank 0 comes late, so the clients' first connects are refused and must be retried.
    if (r == 0) std::this_thread::sleep_for(milliseconds(300));
    return bootstrap_via_tcp(launch(r, 4, port), r == 0 ? blob : Blob{}, milliseconds(10'000));
  });
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status().message();
    EXPECT_EQ(*results[r], blob) << "rank " << r;
  }
}

TEST(BootstrapTcp, StrayConnectionIsDroppedAndTheRendezvousCompletes) {
  const int port = free_port();
  const Blob blob = test_blob(1000);
  const auto results = run_ranks(3, [&](int r) -> BlobResult {
    if (r == 2) {  // a stray peer first (a port scanner): garbage instead of a hello
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(port));
      for (int i = 0; i < 100 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0;
           ++i) {
        std::this_thread::sleep_for(milliseconds(20));
      }
      const char junk[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
      (void)::send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
      std::this_thread::sleep_for(milliseconds(100));
      ::close(fd);
    }
    return bootstrap_via_tcp(launch(r, 3, port), r == 0 ? blob : Blob{}, milliseconds(10'000));
  });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status().message();
    EXPECT_EQ(*results[r], blob);
  }
}

TEST(BootstrapTcp, MissingRank0IsATimeoutNamingTheAddressWithinTheDeadline) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  auto got = bootstrap_via_tcp(launch(2, 4, port), {}, milliseconds(500));
  const double waited_s = seconds_since(start);
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(),
                       fmt::format("rank 2: TCP rendezvous with 127.0.0.1:{} timed out after "
                                   "500 ms (rank 0 never answered; last attempt: connect:",
                                   port)));
  EXPECT_GE(waited_s, 0.45);
  EXPECT_LT(waited_s, 2.0);  // the deadline plus one retry interval and scheduling slack
}

TEST(BootstrapTcp, Rank0TimesOutNamingTheRanksThatNeverConnected) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  auto got = bootstrap_via_tcp(launch(0, 3, port), test_blob(), milliseconds(300));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(),
                       fmt::format("rank 0: TCP rendezvous on port {} timed out after 300 ms "
                                   "(ranks 1, 2 never connected)",
                                   port)));
  EXPECT_LT(seconds_since(start), 2.0);
}

TEST(BootstrapTcp, WorldSizeMismatchIsRejectedOnBothSides) {
  const int port = free_port();
  const auto results = run_ranks(2, [&](int r) {
    return bootstrap_via_tcp(launch(r, r == 0 ? 2 : 3, port), test_blob(), milliseconds(10'000));
  });
  ASSERT_FALSE(results[0].ok());
  ASSERT_FALSE(results[1].ok());
  EXPECT_TRUE(contains(results[0].status().message(),
                       "rejected a client: rank 1 has world size 3 but rank 0 has 2"));
  EXPECT_TRUE(contains(results[1].status().message(),
                       fmt::format("rank 1: TCP rendezvous with 127.0.0.1:{} rejected by rank 0: "
                                   "rank 1 has world size 3 but rank 0 has 2",
                                   port)));
}

TEST(BootstrapTcp, MissingMasterVariablesAreAnErrorAndOneRankNeedsNone) {
  LaunchInfo info = launch(1, 2, 0);
  info.master_addr.clear();
  auto got = bootstrap_via_tcp(info, {}, milliseconds(100));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(), "needs MASTER_ADDR and MASTER_PORT"));
  auto single = bootstrap_via_tcp(launch(0, 1, 0), test_blob(), milliseconds(100));
  ASSERT_TRUE(single.ok()) << single.status().message();
  EXPECT_EQ(*single, test_blob());
}

class BootstrapFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "loom_bootstrap_XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = (dir_ / "nccl_id").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_raw(const std::string& bytes) { std::ofstream(path_, std::ios::binary) << bytes; }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(BootstrapFile, FourRanksGetRank0sBlobAndNoTempFileIsLeft) {
  const Blob blob = test_blob();
  const auto results = run_ranks(4, [&](int r) {
    if (r == 0) std::this_thread::sleep_for(milliseconds(200));  // readers poll first
    return bootstrap_via_file(launch(r, 4), path_, "run-7", r == 0 ? blob : Blob{},
                              milliseconds(10'000));
  });
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status().message();
    EXPECT_EQ(*results[r], blob) << "rank " << r;
  }
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename(), "nccl_id");
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(BootstrapFile, ForeignFileIsAnErrorNamingThePathAtOnce) {
  write_raw("not a bootstrap file at all");
  const auto start = std::chrono::steady_clock::now();
  auto got = bootstrap_via_file(launch(1, 2), path_, "", {}, milliseconds(10'000));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(),
                       "rank 1: bootstrap file " + path_ + " is not a Loom bootstrap file"));
  EXPECT_LT(seconds_since(start), 1.0);  // an error, not a wait for the deadline
}

TEST_F(BootstrapFile, TruncatedFileIsAnErrorNamingThePath) {
  ASSERT_TRUE(bootstrap_via_file(launch(0, 2), path_, "", test_blob(), milliseconds(100)).ok());
  const auto full = std::filesystem::file_size(path_);
  std::filesystem::resize_file(path_, full - 5);
  auto got = bootstrap_via_file(launch(1, 2), path_, "", {}, milliseconds(10'000));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(),
                       fmt::format("bootstrap file {} is truncated or corrupt: {} bytes, but its "
                                   "header announces {}",
                                   path_, full - 5, full)));
  std::filesystem::resize_file(path_, 10);  // shorter than the header
  got = bootstrap_via_file(launch(1, 2), path_, "", {}, milliseconds(10'000));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(), path_ + " is truncated: 10 bytes"));
}

TEST_F(BootstrapFile, MissingRank0IsATimeoutNamingThePathWithinTheDeadline) {
  const auto start = std::chrono::steady_clock::now();
  auto got = bootstrap_via_file(launch(3, 4), path_, "", {}, milliseconds(300));
  const double waited_s = seconds_since(start);
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(
      got.status().message(),
      "rank 3: bootstrap file " + path_ + " did not appear within 300 ms (rank 0 never wrote it)"));
  EXPECT_GE(waited_s, 0.28);
  EXPECT_LT(waited_s, 1.5);
}

TEST_F(BootstrapFile, StaleFileFromAnotherRunIsIgnoredUntilRank0ReplacesIt) {
  ASSERT_TRUE(
      bootstrap_via_file(launch(0, 2), path_, "run-1", test_blob(16), milliseconds(100)).ok());
  auto stale = bootstrap_via_file(launch(1, 2), path_, "run-2", {}, milliseconds(200));
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(contains(stale.status().message(),
                       "found a stale one from run 'run-1', but this run is 'run-2'"));
  const Blob fresh = test_blob(128);
  const auto results = run_ranks(2, [&](int r) {
    if (r == 0) std::this_thread::sleep_for(milliseconds(200));  // rank 1 sees the stale file first
    return bootstrap_via_file(launch(r, 2), path_, "run-2", r == 0 ? fresh : Blob{},
                              milliseconds(10'000));
  });
  ASSERT_TRUE(results[1].ok()) << results[1].status().message();
  EXPECT_EQ(*results[1], fresh);
}

TEST_F(BootstrapFile, SameRunButAnotherWorldSizeIsAnError) {
  ASSERT_TRUE(bootstrap_via_file(launch(0, 2), path_, "", test_blob(), milliseconds(100)).ok());
  auto got = bootstrap_via_file(launch(1, 3), path_, "", {}, milliseconds(10'000));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(),
                       path_ + " was written for a 2-rank launch but this launch has 3 ranks"));
}

TEST_F(BootstrapFile, UnwritableDirectoryIsAnErrorOnRank0) {
  auto got = bootstrap_via_file(launch(0, 2), (dir_ / "no" / "such" / "dir").string(), "",
                                test_blob(), milliseconds(100));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(contains(got.status().message(), "rank 0: cannot create bootstrap file"));
}

TEST_F(BootstrapFile, ChooserRunsTheFileMethodWithTheEnvironmentsRunToken) {
  ::setenv("LOOM_RUN_ID", "chooser-test", 1);
  EXPECT_EQ(bootstrap_run_token_from_env(), "chooser-test");
  auto method = parse_bootstrap_method("file:" + path_);
  ASSERT_TRUE(method.ok());
  const auto results = run_ranks(3, [&](int r) {
    return bootstrap_blob(launch(r, 3), *method, r == 0 ? test_blob() : Blob{},
                          milliseconds(10'000));
  });
  ::unsetenv("LOOM_RUN_ID");
  for (const auto& got : results) {
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(*got, test_blob());
  }
  auto bad = bootstrap_blob(launch(3, 3), *method, {}, milliseconds(100));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(contains(bad.status().message(), "rank 3 of world size 3 is not a rank"));
}

TEST(BootstrapRunToken, TorchrunsDefaultRunIdIsNoToken) {
  ::unsetenv("LOOM_RUN_ID");
  ::setenv("TORCHELASTIC_RUN_ID", "none", 1);
  EXPECT_NE(bootstrap_run_token_from_env(), "none");
  ::setenv("TORCHELASTIC_RUN_ID", "abc123", 1);
  EXPECT_EQ(bootstrap_run_token_from_env(), "abc123");
  ::unsetenv("TORCHELASTIC_RUN_ID");
}

TEST(BootstrapCommunicator, ThreadWorldOfFourGetsRank0sBlobBitForBit) {
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{128}, size_t{1001}}) {
    const Blob blob = test_blob(bytes);
    std::vector<std::optional<BlobResult>> results(4);
    test::run_thread_world(4, [&](int r, Communicator& comm) {
      results[r].emplace(bootstrap_via_communicator(comm, r == 0 ? blob : test_blob(7)));
    });
    for (int r = 0; r < 4; ++r) {
      ASSERT_TRUE(results[r]->ok()) << results[r]->status().message();
      EXPECT_EQ(**results[r], blob) << bytes << " bytes, rank " << r;
    }
  }
}

TEST(BootstrapCommunicator, MissingRankIsATimeoutNamingTheGroup) {
  std::vector<std::optional<BlobResult>> results(2);
  test::run_thread_world(
      2,
      [&](int r, Communicator& comm) {
        if (r == 0) results[0].emplace(bootstrap_via_communicator(comm, test_blob()));
      },
      milliseconds(200));
  ASSERT_FALSE(results[0]->ok());
  EXPECT_TRUE(contains(results[0]->status().message(),
                       "bootstrap over group 'world': rank 0 of group 'world' (2 ranks): "
                       "broadcast timed out after 200 ms"));
}

}  // namespace
}  // namespace loom::comm
