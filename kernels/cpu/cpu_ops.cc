// Implementation pending (owner: kernels CPU ops).
#include "kernels/cpu/cpu_ops.h"
