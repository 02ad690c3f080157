// Layering check (tests/CMakeLists.txt): compiled against sesscp_base only, this
// include must fail: base/ depends on nothing of ours.
#include "checkpoint/journal.h"

int layering_probe() { return 0; }
