// The S3 side of the command line: `send ... s3://`, `get s3://`,
// `status --s3` and `s3-abort` (docs/S3.md). Parsed here with its own
// options, so that main.cpp only hands such command lines over.
#pragma once

#include <atomic>
#include <optional>

namespace sesscp::cli {

// When argv is an S3 command, run it and return its exit code; otherwise
// nullopt (main.cpp parses it as usual).
std::optional<int> run_s3_command(int argc, char** argv, const std::atomic<bool>* stop);

} // namespace sesscp::cli
