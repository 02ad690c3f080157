// Layering check (tests/CMakeLists.txt): compiled against sesscp_cli, this
// include must fail: s3/upload_detail.h is s3/'s own, not its interface.
#include "s3/upload_detail.h"

int layering_probe() { return 0; }
