// Layering check (tests/CMakeLists.txt): compiled against sesscp_core only, this
// include must fail: core/ sits below the engines.
#include "core/send/sender.h"

int layering_probe() { return 0; }
