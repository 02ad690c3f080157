// `sesscp get s3://BUCKET/KEY`: url/get.cpp's ranged, journaled download,
// with every request signed for S3 (docs/S3.md).
#pragma once

#include "s3/client.h"
#include "url/get.h"

namespace sesscp::s3 {

// Download `what` with `options` (its url and url_options are set here).
Status get_object(const Config& config, const Location& what, url::GetOptions options, Events& events,
                  FileReport& report);

} // namespace sesscp::s3
