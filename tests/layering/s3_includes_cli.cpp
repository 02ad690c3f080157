// Layering check (tests/CMakeLists.txt): compiled against sesscp_s3 only, this
// include must fail: s3/ sits below cli/.
#include "cli/output.h"

int layering_probe() { return 0; }
