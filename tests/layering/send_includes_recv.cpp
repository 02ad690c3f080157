// Layering check (tests/CMakeLists.txt): compiled against sesscp_send only, this
// include must fail: the engines do not see each other.
#include "core/recv/receiver.h"

int layering_probe() { return 0; }
