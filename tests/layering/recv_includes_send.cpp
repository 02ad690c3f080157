// Layering check (tests/CMakeLists.txt): compiled against sesscp_recv only, this
// include must fail: the engines do not see each other.
#include "core/send/sender.h"

int layering_probe() { return 0; }
