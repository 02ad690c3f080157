// Just enough XML for S3's answers: the text of named elements. S3 sends
// flat, namespace-default documents without CDATA or comments in the places
// read here; anything else is simply not found.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sesscp::s3 {

// Return the content of every <tag>...</tag> (or <tag attr=...>) in `doc`,
// in document order, not unescaped: elements inside may be searched again.
std::vector<std::string_view> xml_elements(std::string_view doc, std::string_view tag);

// Return the unescaped text of the first <tag> in `doc`, "" when absent.
std::string xml_text(std::string_view doc, std::string_view tag);

// An ETag without its surrounding double quotes (S3 quotes them in headers
// and listings alike).
std::string unquote(std::string etag);

// Escape &, <, >, " and ' for element text.
std::string xml_escape(std::string_view text);

} // namespace sesscp::s3
