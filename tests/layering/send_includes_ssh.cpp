// Layering check (tests/CMakeLists.txt): compiled against sesscp_send only, this
// include must fail: the sending engine sees a transport only through core/transport.h.
#include "ssh/transport.h"

int layering_probe() { return 0; }
