// Layering check (tests/CMakeLists.txt): compiled against sesscp_send only, this
// include must compile: core/ is below core/send (the control).
#include "core/conn.h"

int layering_probe() { return 0; }
