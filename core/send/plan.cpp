#include "core/send/plan.h"

#include <algorithm>
#include <utility>

namespace sesscp::send {

Plan::Plan(std::vector<SourceEntry> sources) {
  entries.resize(sources.size());
  for (std::size_t i = 0; i < sources.size(); ++i) {
    entries[i].report.name = sources[i].name;
    entries[i].source = std::move(sources[i]);
  }
}

std::size_t Plan::files() const {
  return static_cast<std::size_t>(std::count_if(entries.begin(), entries.end(), [](const PlanEntry& e) {
    return e.source.kind == SourceEntry::Kind::file;
  }));
}

Result<Plan> make_plan(const SendOptions& options, Events& events) {
  std::vector<std::string> sources = options.paths;
  if (sources.empty() && !options.path.empty()) sources.push_back(options.path);
  std::vector<std::string> warnings;
  auto entries = collect_sources(sources, options.follow_links, warnings);
  if (!entries) return entries.error();
  for (const auto& w : warnings) events.info("warning: " + w);
  if (!options.name.empty()) {
    if (entries->size() != 1 || (*entries)[0].kind != SourceEntry::Kind::file)
      return make_error(ErrorKind::usage, "--name applies only to a single-file send");
    if (auto why = frame::check_name(options.name); !why.empty())
      return make_error(ErrorKind::usage, "cannot send as '" + options.name + "' (" + why + ")");
    (*entries)[0].name = options.name;
  }
  if (entries->empty() && options.fetch.empty()) return make_error(ErrorKind::usage, "nothing to send");
  return Plan(std::move(*entries));
}

void FetchEvents::file_report(bool sending, const FileReport& r) {
  if (!sending) {
    m_plan.fetched_files += r.state == FileReport::State::complete;
    m_plan.fetched_already += r.state == FileReport::State::already_complete;
    m_plan.fetched_bytes += r.bytes;
  }
  m_out.file_report(sending, r);
}

} // namespace sesscp::send
