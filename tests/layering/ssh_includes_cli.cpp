// Layering check (tests/CMakeLists.txt): compiled against sesscp_ssh only, this
// include must fail: ssh/ sits below cli/.
#include "cli/output.h"

int layering_probe() { return 0; }
