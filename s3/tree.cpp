#include "s3/tree.h"

#include "s3/get.h"

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace sesscp::s3 {

void run_parallel(std::size_t n, int width, const std::function<bool(std::size_t)>& job) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stopped{false};
  auto loop = [&] {
    for (;;) {
      if (stopped.load()) return;
      std::size_t i = next.fetch_add(1);
      if (i >= n) return;
      if (!job(i)) stopped.store(true);
    }
  };
  std::size_t threads = std::min<std::size_t>(n, static_cast<std::size_t>(std::max(width, 1)));
  if (threads <= 1) return loop();
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(loop);
  for (auto& t : pool) t.join();
}

namespace {

// True when `path` goes up in one PUT (what Upload::run decides, from the
// same part size); a file that cannot be stat'ed counts as large, so that
// its error comes from upload_file in order.
bool one_put(const std::string& path, const UploadOptions& o) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return false;
  auto size = static_cast<std::uint64_t>(st.st_size);
  auto part = choose_part_size(size, o.part_size, o.chunk_size);
  return part && size <= *part;
}

// "SIZE ETAG" of every object under the tree's destination prefix, listed
// once so that its small files need no HEAD each; nullopt (HEAD each) for a
// single file, or when the listing fails (the PUTs will say why).
std::optional<std::map<std::string, std::string>> list_destination(Client& client, const UploadOptions& o,
                                                                   std::size_t small) {
  if (small < 2) return std::nullopt;
  auto list = list_objects(client, o.dest);
  if (!list) {
    client.events().debug("s3: listing " + o.dest.key + " failed (" + list.error().message + "); HEAD each file");
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  for (const auto& e : *list) out[e.key] = std::to_string(e.size) + " " + e.etag;
  return out;
}

} // namespace

Status upload_tree(Client& client, const std::vector<TreeEntry>& plan, const UploadOptions& options,
                   const UploadDone& done) {
  std::vector<const TreeEntry*> small, large;
  for (const auto& e : plan) (one_put(e.path, options) ? small : large).push_back(&e);
  auto listed = list_destination(client, options, small.size());
  std::mutex mutex;
  std::optional<Error> first;
  auto one = [&](const TreeEntry& e) {
    UploadOptions o = options;
    o.source = e.path;
    o.dest = {options.dest.bucket, e.key};
    if (listed) o.listed = listed->count(e.key) ? listed->at(e.key) : std::string();
    FileReport report;
    report.name = e.path;
    auto st = upload_file(client, o, report);
    done(report, st);
    if (st) return !(options.stop && options.stop->load());
    std::lock_guard lock(mutex);
    if (!first) first = st.error();
    return false;
  };
  run_parallel(small.size(), options.connections, [&](std::size_t i) { return one(*small[i]); });
  if (!first)
    for (const auto* e : large)
      if (!one(*e)) break;
  if (first) return *first;
  if (options.stop && options.stop->load()) return make_error(ErrorKind::interrupted, "interrupted");
  return {};
}

} // namespace sesscp::s3
