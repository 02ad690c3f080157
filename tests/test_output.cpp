#include "cli/output.h"

#include <doctest/doctest.h>

using sesscp::cli::printable;

TEST_SUITE("output") {

TEST_CASE("text from the network cannot forge log lines or steer the terminal") {
  CHECK(printable("disk.img") == "disk.img");
  CHECK(printable("a\nsesscp: recv forged") == "a\\x0asesscp: recv forged");
  CHECK(printable("x\r") == "x\\x0d");
  CHECK(printable("\x1b[2Jclear") == "\\x1b[2Jclear");
  CHECK(printable(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(printable("\x7f") == "\\x7f");
  // Well-formed UTF-8 stays readable; C1 controls and broken sequences do not pass.
  CHECK(printable("caf\xc3\xa9 \xe2\x82\xac") == "caf\xc3\xa9 \xe2\x82\xac");
  CHECK(printable("\xc2\x9b" "31m") == "\\xc2\\x9b31m");
  CHECK(printable("\x9b") == "\\x9b");
  CHECK(printable("\xc0\xaf") == "\\xc0\\xaf"); // overlong '/'
  CHECK(printable("\xe2\x82") == "\\xe2\\x82"); // truncated
}

TEST_CASE("human_bytes") {
  CHECK(sesscp::cli::human_bytes(512) == "512 B");
  CHECK(sesscp::cli::human_bytes(3u << 20) == "3.0 MiB");
  CHECK(sesscp::cli::human_bytes(1536ull << 20) == "1.5 GiB");
}

} // TEST_SUITE
