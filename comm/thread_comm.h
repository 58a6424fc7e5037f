// The in-process Communicator backend: n ranks on n threads of one process, sharing memory.
// Used by the tests and by single-machine CPU runs of the parallel trainer. Each collective is a
// generation-counted rendezvous (mutex + condition variable): every rank deposits its buffer
// pointers and waits for all; each then reads the others' buffers in rank order; a second
// rendezvous keeps the buffers alive until all have read. Tested in tests/comm/thread_comm_test.cc.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace loom::comm {

// One Communicator per rank (index = rank), all in group "world". Hand world[r] to the thread
// that runs rank r; the objects may be destroyed in any order.
std::vector<std::unique_ptr<Communicator>> make_thread_world(int n);

}  // namespace loom::comm
