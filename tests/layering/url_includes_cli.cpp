// Layering check (tests/CMakeLists.txt): compiled against sesscp_url only, this
// include must fail: url/ sits below cli/.
#include "cli/output.h"

int layering_probe() { return 0; }
