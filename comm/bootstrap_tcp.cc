// The TCP rendezvous of bootstrap.h: rank 0 serves its blob at MASTER_PORT to world_size - 1
// clients that each send a hello (rank, world size); POSIX sockets, every wait a poll() bounded by
// the deadline. Tested in tests/comm/bootstrap_test.cc (four ranks as threads on 127.0.0.1).
//
// Messages (fields big-endian):
//   hello (client -> rank 0): "LOOMBOOT", u32 protocol version, u32 rank, u32 world size
//   reply (rank 0 -> client): "LOOMBOOT", u32 status (0 ok, 1 rejected), u32 length, then
//                              `length` bytes: the blob, or the reason for the rejection
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "comm/bootstrap.h"
#include "comm/bootstrap_internal.h"

namespace loom::comm {
namespace {

using bootstrap_detail::errno_text;
using bootstrap_detail::get_u32;
using bootstrap_detail::kMaxBlobBytes;
using bootstrap_detail::put_u32;
using core::ErrorCode;
using core::Status;
using Blob = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;

constexpr char kMagic[8] = {'L', 'O', 'O', 'M', 'B', 'O', 'O', 'T'};
constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kHelloBytes = 8 + 3 * 4;
constexpr size_t kReplyHeaderBytes = 8 + 2 * 4;
constexpr uint32_t kReplyOk = 0, kReplyRejected = 1;
// A connection gets this long to send its hello before rank 0 drops it and serves the next one,
// so a silent stray connection cannot hold the rendezvous up; a real client sends its 20 bytes
// right after connecting.
constexpr std::chrono::milliseconds kHelloWait{2000};
constexpr std::chrono::milliseconds kRetryInterval{100};  // between a client's connect attempts
constexpr std::chrono::milliseconds kConnectWait{1000};   // one attempt (SYNs a firewall drops)
const std::string kTimedOut = "timed out";

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits until `fd` is ready for `events` or the deadline: "" when ready, kTimedOut, or the error.
std::string wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return kTimedOut;
    pollfd p{.fd = fd, .events = events, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "poll: " + errno_text(errno);
    if (n > 0) return "";
  }
}

// Sends or receives exactly `n` bytes on a non-blocking socket before the deadline: "" when done,
// kTimedOut, or what went wrong.
std::string transfer(int fd, uint8_t* data, size_t n, bool send, Clock::time_point deadline) {
  size_t done = 0;
  while (done < n) {
    const std::string waited = wait_fd(fd, send ? POLLOUT : POLLIN, deadline);
    if (!waited.empty()) return waited;
    const ssize_t k = send ? ::send(fd, data + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
                           : ::recv(fd, data + done, n - done, MSG_DONTWAIT);
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (k < 0) return fmt::format("{}: {}", send ? "send" : "recv", errno_text(errno));
    if (k == 0) return "the peer closed the connection";
    done += static_cast<size_t>(k);
  }
  return "";
}

std::string send_bytes(int fd, Blob bytes, Clock::time_point deadline) {
  return transfer(fd, bytes.data(), bytes.size(), true, deadline);
}

Blob reply_message(uint32_t status, const uint8_t* payload, size_t bytes) {
  Blob out(kMagic, kMagic + 8);
  put_u32(&out, status);
  put_u32(&out, static_cast<uint32_t>(bytes));
  out.insert(out.end(), payload, payload + bytes);
  return out;
}

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

// ---- rank 0 ------------------------------------------------------------------------------------

// Listens on the wildcard address: IPv6 dual-stack first (takes IPv4 clients too), else IPv4.
core::Result<Socket> listen_on(int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(nullptr, service.c_str(), &hints, &found); rc != 0) {
    return core::error(ErrorCode::kIo, "rank 0: TCP rendezvous: getaddrinfo for port {}: {}", port,
                       ::gai_strerror(rc));
  }
  std::vector<addrinfo*> candidates;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) candidates.push_back(a);
  std::stable_partition(candidates.begin(), candidates.end(),
                        [](const addrinfo* a) { return a->ai_family == AF_INET6; });
  std::string errors;
  for (const addrinfo* a : candidates) {
    const char* family = a->ai_family == AF_INET6 ? "[::]" : "0.0.0.0";
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    const int on = 1, off = 0;
    std::string failed;
    if (s.get() < 0) {
      failed = "socket: " + errno_text(errno);
    } else if (::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
               (a->ai_family == AF_INET6 &&
                ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0)) {
      failed = "setsockopt: " + errno_text(errno);
    } else if (::bind(s.get(), a->ai_addr, a->ai_addrlen) != 0) {
      failed = "bind: " + errno_text(errno);
    } else if (::listen(s.get(), SOMAXCONN) != 0 || !set_nonblocking(s.get())) {
      failed = "listen: " + errno_text(errno);
    }
    if (failed.empty()) {
      ::freeaddrinfo(found);
      return s;
    }
    errors += fmt::format("{}{}:{}: {}", errors.empty() ? "" : "; ", family, port, failed);
  }
  ::freeaddrinfo(found);
  return core::error(ErrorCode::kIo, "rank 0: TCP rendezvous cannot listen on port {} ({})", port,
                     errors);
}

struct Hello {
  int rank = -1, world_size = 0;
  uint32_t version = 0;
};

// Reads a hello within kHelloWait; false for anything that is not one (a stray connection).
bool read_hello(int fd, Clock::time_point deadline, Hello* hello) {
  uint8_t bytes[kHelloBytes];
  if (!transfer(fd, bytes, sizeof(bytes), false, std::min(deadline, Clock::now() + kHelloWait))
           .empty() ||
      std::memcmp(bytes, kMagic, 8) != 0) {
    return false;
  }
  hello->version = get_u32(bytes + 8);
  hello->rank = static_cast<int>(get_u32(bytes + 12));
  hello->world_size = static_cast<int>(get_u32(bytes + 16));
  return true;
}

// Why rank 0 must refuse this hello ("" when it is fine).
std::string check_hello(const Hello& h, int world_size, const std::vector<bool>& served) {
  if (h.version != kProtocolVersion) {
    return fmt::format("rank {} speaks bootstrap protocol version {}, rank 0 speaks {}", h.rank,
                       h.version, kProtocolVersion);
  }
  if (h.world_size != world_size) {
    return fmt::format("rank {} has world size {} but rank 0 has {}", h.rank, h.world_size,
                       world_size);
  }
  if (h.rank <= 0 || h.rank >= world_size) {
    return fmt::format("rank {} is not a client rank of a {}-rank launch (valid: 1..{})", h.rank,
                       world_size, world_size - 1);
  }
  if (served[h.rank]) {
    return fmt::format("rank {} connected twice (two processes with the same RANK?)", h.rank);
  }
  return "";
}

Status serve(const LaunchInfo& info, const Blob& blob, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  LOOM_ASSIGN_OR_RETURN(Socket listener, listen_on(info.master_port));
  std::vector<bool> served(info.world_size, false);
  served[0] = true;
  for (int left = info.world_size - 1; left > 0;) {
    if (wait_fd(listener.get(), POLLIN, deadline) == kTimedOut) {
      std::string missing;
      for (int r = 1; r < info.world_size; ++r) {
        if (!served[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
      return core::error(ErrorCode::kInternal,
                         "rank 0: TCP rendezvous on port {} timed out after {} (ranks {} never "
                         "connected)",
                         info.master_port, format_duration(timeout), missing);
    }
    Socket client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (client.get() < 0) continue;  // EAGAIN, ECONNABORTED, EINTR: wait for the next one
    Hello hello;
    if (!read_hello(client.get(), deadline, &hello)) continue;
    const std::string refused = check_hello(hello, info.world_size, served);
    if (!refused.empty()) {
      const Blob why(refused.begin(), refused.end());
      (void)send_bytes(client.get(), reply_message(kReplyRejected, why.data(), why.size()),
                       std::min(deadline, Clock::now() + kHelloWait));
      return core::error(ErrorCode::kInvalidArgument,
                         "rank 0: TCP rendezvous on port {} rejected a client: {}",
                         info.master_port, refused);
    }
    // A client that vanished before taking the blob does not count; it retries if it lives.
    if (send_bytes(client.get(), reply_message(kReplyOk, blob.data(), blob.size()), deadline)
            .empty()) {
      served[hello.rank] = true;
      --left;
    }
  }
  return core::ok_status();
}

// ---- clients -----------------------------------------------------------------------------------

// One connection to addr:port, or "" with *out unset and the failure in the result.
std::string connect_once(const LaunchInfo& info, Clock::time_point deadline, Socket* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(info.master_port);
  if (const int rc = ::getaddrinfo(info.master_addr.c_str(), service.c_str(), &hints, &found);
      rc != 0) {
    return fmt::format("getaddrinfo: {}", ::gai_strerror(rc));
  }
  std::string failed = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (s.get() < 0) {
      failed = "socket: " + errno_text(errno);
      continue;
    }
    if (::connect(s.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      failed = "connect: " + errno_text(errno);
      continue;
    }
    const std::string waited =
        wait_fd(s.get(), POLLOUT, std::min(deadline, Clock::now() + kConnectWait));
    int error = 0;
    socklen_t length = sizeof(error);
    if (!waited.empty()) {
      failed = "connect: " + waited;
    } else if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
      failed = "connect: " + errno_text(error != 0 ? error : errno);
    } else {
      *out = std::move(s);
      failed.clear();
      break;
    }
  }
  ::freeaddrinfo(found);
  return failed;
}

// Result of one exchange: the blob, a rejection (fatal), or a failure worth retrying.
struct Exchange {
  bool done = false, rejected = false;
  Blob payload;
  std::string failed;
};

Exchange exchange(int fd, const LaunchInfo& info, Clock::time_point deadline) {
  Exchange x;
  Blob hello(kMagic, kMagic + 8);
  put_u32(&hello, kProtocolVersion);
  put_u32(&hello, static_cast<uint32_t>(info.rank));
  put_u32(&hello, static_cast<uint32_t>(info.world_size));
  uint8_t header[kReplyHeaderBytes];
  x.failed = send_bytes(fd, hello, deadline);
  if (x.failed.empty()) x.failed = transfer(fd, header, sizeof(header), false, deadline);
  if (!x.failed.empty()) {
    x.failed = x.failed == kTimedOut ? "connected, but no answer before the deadline"
                                     : "connected, but rank 0 did not answer: " + x.failed;
    return x;
  }
  const uint32_t status = get_u32(header + 8), length = get_u32(header + 12);
  if (std::memcmp(header, kMagic, 8) != 0 || status > kReplyRejected || length > kMaxBlobBytes) {
    x.failed = "the peer at MASTER_ADDR:MASTER_PORT is not a Loom rank 0 (bad reply header)";
    return x;
  }
  x.payload.resize(length);
  x.failed = transfer(fd, x.payload.data(), length, false, deadline);
  x.done = x.failed.empty();
  x.rejected = status == kReplyRejected;
  return x;
}

core::Result<Blob> fetch(const LaunchInfo& info, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string peer = fmt::format("{}:{}", info.master_addr, info.master_port);
  std::string last = "no attempt";
  while (Clock::now() < deadline) {
    Socket s;
    last = connect_once(info, deadline, &s);
    if (last.empty()) {
      Exchange x = exchange(s.get(), info, deadline);
      if (x.done && x.rejected) {
        return core::error(ErrorCode::kInvalidArgument,
                           "rank {}: TCP rendezvous with {} rejected by rank 0: {}", info.rank,
                           peer, std::string(x.payload.begin(), x.payload.end()));
      }
      if (x.done) return std::move(x.payload);
      last = x.failed;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(kRetryInterval, deadline - Clock::now()));
  }
  return core::error(ErrorCode::kInternal,
                     "rank {}: TCP rendezvous with {} timed out after {} (rank 0 never answered; "
                     "last attempt: {})",
                     info.rank, peer, format_duration(timeout), last);
}

}  // namespace

core::Result<Blob> bootstrap_via_tcp(const LaunchInfo& info, const Blob& blob,
                                     std::chrono::milliseconds timeout) {
  if (info.world_size <= 1) return blob;
  if (info.master_port < 1 || info.master_port > 65535 ||
      (info.rank != 0 && info.master_addr.empty())) {
    return core::error(ErrorCode::kInvalidArgument,
                       "rank {}: the tcp bootstrap needs MASTER_ADDR and MASTER_PORT (as torchrun "
                       "sets them); got MASTER_ADDR '{}', MASTER_PORT {}",
                       info.rank, info.master_addr, info.master_port);
  }
  if (info.rank != 0) return fetch(info, timeout);
  if (blob.size() > kMaxBlobBytes) {
    return core::error(ErrorCode::kInvalidArgument,
                       "rank 0: TCP rendezvous: blob of {} bytes exceeds {} bytes", blob.size(),
                       kMaxBlobBytes);
  }
  LOOM_RETURN_IF_ERROR(serve(info, blob, timeout));
  return blob;
}

}  // namespace loom::comm
