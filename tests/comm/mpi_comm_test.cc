// The MPI backend across 4 processes (run by ctest under mpirun -np 4, label mpi): every
// collective against the serial reference with bit-identical rank-order sums, split, send/recv,
// launch_env under mpirun, the bootstrap of an NCCL-id-sized blob over MPI, and the timeout path
// (rank 3 skips a collective; ranks 0-2 must get an error naming rank, group and call). Exits
// non-zero on any failed check. With --abort, rank 0 calls mpi_abort() instead.
#include "comm/mpi_comm.h"

#include <cstdio>
#include <cstring>
#include <thread>

#include "comm/bootstrap.h"
#include "comm/launch_env.h"
#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

int g_failures = 0;
int g_rank = -1;

#define CHECK(cond, ...)                                                                        \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      ++g_failures;                                                                             \
      std::fprintf(stderr, "rank %d %s:%d: check failed: %s: %s\n", g_rank, __FILE__, __LINE__, \
                   #cond, fmt::format(__VA_ARGS__).c_str());                                    \
    }                                                                                           \
  } while (0)

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
std::vector<T> input(int r, int64_t count, int64_t offset = 0) {
  std::vector<T> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = test::test_value<T>(r, offset + i);
  return v;
}

template <typename T>
void check_collectives(Communicator& comm, int64_t count) {
  const int n = comm.size(), r = comm.rank();
  std::vector<T> sum = input<T>(r, count);
  auto s = comm.all_reduce(sum.data(), count, ReduceOp::kSum);
  CHECK(s.ok(), "{}", s.message());
  CHECK(same_bits(sum, test::serial_sum<T>(n, count)), "all_reduce sum, count {}", count);
  // Every rank holds the same bits: gather them all and compare with rank 0's.
  std::vector<T> all(count * n);
  CHECK(comm.all_gather(sum.data(), all.data(), count).ok(), "all_gather of sums");
  for (int q = 1; q < n; ++q) {
    CHECK(std::memcmp(all.data(), all.data() + q * count, count * sizeof(T)) == 0,
          "rank {} sum differs from rank 0's", q);
  }
  std::vector<T> mx = input<T>(r, count);
  CHECK(comm.all_reduce(mx.data(), count, ReduceOp::kMax).ok(), "all_reduce max");
  for (int64_t i = 0; i < count; ++i) {
    T ref = test::test_value<T>(0, i);
    for (int q = 1; q < n; ++q) ref = std::max(ref, test::test_value<T>(q, i));
    CHECK(mx[i] == ref, "max element {}", i);
  }
  std::vector<T> rs_in = input<T>(r, count * n), rs_out(count);
  CHECK(comm.reduce_scatter(rs_in.data(), rs_out.data(), count).ok(), "reduce_scatter");
  CHECK(same_bits(rs_out, test::serial_sum<T>(n, count, r * count)), "reduce_scatter chunk");
  std::vector<T> gathered(count * n);
  CHECK(comm.all_gather(input<T>(r, count).data(), gathered.data(), count).ok(), "all_gather");
  for (int q = 0; q < n; ++q) {
    CHECK(
        same_bits(std::vector<T>(gathered.begin() + q * count, gathered.begin() + (q + 1) * count),
                  input<T>(q, count)),
        "all_gather chunk {}", q);
  }
  for (int root = 0; root < n; ++root) {
    std::vector<T> b = input<T>(r == root ? 10 + root : r, count);
    CHECK(comm.broadcast(b.data(), count, root).ok(), "broadcast");
    CHECK(same_bits(b, input<T>(10 + root, count)), "broadcast from {}", root);
  }
}

void check_split_and_p2p(Communicator& world) {
  const int r = world.rank();
  auto sub = world.split(r % 2, -r, r % 2 == 0 ? "even" : "odd");
  CHECK(sub.ok(), "{}", sub.status().message());
  if (!sub.ok()) return;
  CHECK((*sub)->size() == 2 && (*sub)->rank() == (r < 2 ? 1 : 0), "split rank {}", (*sub)->rank());
  double mine = r, both[2] = {-1, -1};
  CHECK((*sub)->all_gather(&mine, both, 1).ok(), "sub all_gather");
  CHECK(both[0] == r % 2 + 2 && both[1] == r % 2, "sub members {} {}", both[0], both[1]);
  const int next = (r + 1) % world.size(), prev = (r + world.size() - 1) % world.size();
  int out[3] = {r, r * r, -r}, in[3] = {};
  // Even ranks send first, odd ranks receive first: no reliance on eager buffering.
  if (r % 2 == 0) {
    CHECK(world.send(out, sizeof(out), next).ok(), "send");
    CHECK(world.recv(in, sizeof(in), prev).ok(), "recv");
  } else {
    CHECK(world.recv(in, sizeof(in), prev).ok(), "recv");
    CHECK(world.send(out, sizeof(out), next).ok(), "send");
  }
  CHECK(in[0] == prev && in[1] == prev * prev && in[2] == -prev, "ring message {}", in[0]);
  CHECK(world.barrier().ok(), "barrier");
}

void check_launch_env(Communicator& world) {
  auto info = launch_info_from_env();
  CHECK(info.ok(), "{}", info.status().message());
  if (!info.ok()) return;
  CHECK(info->source == "openmpi" || info->source == "torchrun" || info->source == "slurm",
        "source {}", info->source);
  if (info->source == "openmpi") {
    CHECK(info->rank == world.rank() && info->world_size == world.size(), "rank {} size {}",
          info->rank, info->world_size);
  }
}

// Rank 0's 128-byte blob (an ncclUniqueId's size, with bytes that are NaNs as fp64) reaches every
// rank, through the chooser's "mpi" method and through a split group.
void check_bootstrap(Communicator& world) {
  std::vector<uint8_t> blob(128, 0xFF);
  for (size_t i = 16; i < blob.size(); ++i) blob[i] = static_cast<uint8_t>(i * 29 + 3);
  const std::vector<uint8_t> mine = world.rank() == 0 ? blob : std::vector<uint8_t>(5, 1);
  auto info = launch_info_from_env();
  auto method = parse_bootstrap_method("mpi");
  CHECK(info.ok() && method.ok(), "launch info / method");
  if (!info.ok() || !method.ok()) return;
  auto got = bootstrap_blob(*info, *method, mine, std::chrono::seconds(20));
  CHECK(got.ok(), "{}", got.status().message());
  CHECK(got.ok() && *got == blob, "mpi bootstrap delivered other bytes");
  auto sub = world.split(world.rank() % 2, world.rank(), "bootstrap-half");
  CHECK(sub.ok(), "{}", sub.status().message());
  if (!sub.ok()) return;
  const std::vector<uint8_t> half_blob(3, static_cast<uint8_t>(world.rank() % 2 + 7));
  auto half = bootstrap_via_communicator(**sub, (*sub)->rank() == 0 ? half_blob : mine);
  CHECK(half.ok() && *half == half_blob, "bootstrap over a split group");
}

// Rank 3 skips an all_reduce on a sub-communicator with a 1 s timeout; ranks 0-2 must fail
// naming themselves, the group and the call. Rank 3 then joins late so the abandoned requests
// complete and every process can finalize (instead of MPI_Abort).
void check_timeout(Communicator& world) {
  auto group = world.split(0, world.rank(), "timeout-test");
  CHECK(group.ok(), "{}", group.status().message());
  if (!group.ok()) return;
  auto* comm = dynamic_cast<MpiComm*>(group->get());
  comm->set_timeout(std::chrono::milliseconds(1000));
  float x = 1;
  if (world.rank() != 3) {
    const auto start = std::chrono::steady_clock::now();
    const auto s = comm->all_reduce(&x, 1, ReduceOp::kSum);
    const double waited_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string expected =
        fmt::format("rank {} of group 'timeout-test' (4 ranks): all_reduce timed out after 1.0 s",
                    world.rank());
    CHECK(!s.ok() && s.message().rfind(expected, 0) == 0, "message '{}'", s.message());
    CHECK(waited_s < 2.5, "waited {:.2f} s", waited_s);
    CHECK(!comm->barrier().ok(), "the group must be unusable after a timeout");
    comm->set_timeout(std::chrono::seconds(10));
    const auto drained = comm->finish_abandoned();
    CHECK(drained.ok(), "{}", drained.message());
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    comm->set_timeout(std::chrono::seconds(10));
    const auto s = comm->all_reduce(&x, 1, ReduceOp::kSum);
    CHECK(s.ok(), "{}", s.message());
  }
  CHECK(world.barrier().ok(), "world barrier after the timeout test");
}

}  // namespace
}  // namespace loom::comm

int main(int argc, char** argv) {
  using namespace loom::comm;
  auto world_or = make_mpi_world(&argc, &argv);
  if (!world_or.ok()) {
    std::fprintf(stderr, "%s\n", world_or.status().message().c_str());
    return 1;
  }
  {
    std::unique_ptr<Communicator> world = std::move(world_or).value();
    g_rank = world->rank();
    if (argc > 1 && std::string(argv[1]) == "--abort") {
      // What main() does with a failed collective; ctest checks the message (CommMpi.Abort).
      if (g_rank == 0) {
        mpi_abort(loom::core::Status(loom::core::ErrorCode::kInternal, "deliberate abort"));
      }
      std::this_thread::sleep_for(std::chrono::seconds(30));  // killed by mpirun first
    }
    if (world->size() != 4) {  // the split, ring and timeout checks are written for 4 ranks
      CHECK(false, "run under mpirun -np 4 (got {} ranks)", world->size());
    } else {
      for (int64_t count : {1, 7, 33}) {
        check_collectives<float>(*world, count);
        check_collectives<double>(*world, count);
      }
      check_split_and_p2p(*world);
      check_launch_env(*world);
      check_bootstrap(*world);
      check_timeout(*world);
    }
    int failures = g_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    g_failures = total;
    if (g_rank == 0) {
      std::printf("mpi_comm_test: %d ranks, %d failed checks\n", world->size(), total);
    }
  }
  mpi_finalize();
  return g_failures == 0 ? 0 : 1;
}
