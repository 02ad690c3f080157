// Layering check (tests/CMakeLists.txt): compiled against sesscp_checkpoint only, this
// include must fail: checkpoint/ sits below core/.
#include "core/frame.h"

int layering_probe() { return 0; }
