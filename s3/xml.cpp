#include "s3/xml.h"

namespace sesscp::s3 {

namespace {

// Position after the '>' of the next opening tag `tag` at or after `from`,
// and whether it was self-closing; npos when none.
std::size_t open_tag(std::string_view doc, std::string_view tag, std::size_t from, bool& empty) {
  while (true) {
    auto lt = doc.find('<', from);
    if (lt == std::string_view::npos || lt + 1 + tag.size() >= doc.size()) return std::string_view::npos;
    from = lt + 1;
    if (doc.compare(lt + 1, tag.size(), tag) != 0) continue;
    char next = doc[lt + 1 + tag.size()];
    if (next != '>' && next != ' ' && next != '/' && next != '\t' && next != '\n' && next != '\r') continue;
    auto gt = doc.find('>', lt);
    if (gt == std::string_view::npos) return std::string_view::npos;
    empty = doc[gt - 1] == '/';
    return gt + 1;
  }
}

} // namespace

std::vector<std::string_view> xml_elements(std::string_view doc, std::string_view tag) {
  std::vector<std::string_view> out;
  std::string close = "</" + std::string(tag) + ">";
  std::size_t pos = 0;
  while (true) {
    bool empty = false;
    auto start = open_tag(doc, tag, pos, empty);
    if (start == std::string_view::npos) break;
    if (empty) {
      out.emplace_back();
      pos = start;
      continue;
    }
    auto end = doc.find(close, start);
    if (end == std::string_view::npos) break;
    out.push_back(doc.substr(start, end - start));
    pos = end + close.size();
  }
  return out;
}

std::string xml_text(std::string_view doc, std::string_view tag) {
  auto all = xml_elements(doc, tag);
  if (all.empty()) return {};
  std::string out;
  std::string_view s = all.front();
  static constexpr std::pair<std::string_view, char> k_entities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&#34;", '"'}, {"&#39;", '\''}};
  for (std::size_t i = 0; i < s.size();) {
    bool matched = false;
    if (s[i] == '&')
      for (auto [name, ch] : k_entities)
        if (s.compare(i, name.size(), name) == 0) {
          out += ch;
          i += name.size();
          matched = true;
          break;
        }
    if (!matched) out += s[i++];
  }
  return out;
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    case '\'': out += "&apos;"; break;
    default: out += ch;
    }
  }
  return out;
}

std::string unquote(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

} // namespace sesscp::s3
