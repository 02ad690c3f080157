// Layering check (tests/CMakeLists.txt): compiled against sesscp_cli, this
// include must fail: core/send/session.h is the engine's own, not its interface.
#include "core/send/session.h"

int layering_probe() { return 0; }
