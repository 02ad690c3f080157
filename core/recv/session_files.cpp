// Session: the files, directories and links of a session, and the batch of small files.
#include "core/recv/session.h"

#include "core/recv/destination.h"

#include <sys/stat.h>

namespace sesscp::recv {

namespace {

// Offers a sender may have outstanding (planned files, each holding a lease
// and a part file), and small files committed together at most (each holds
// its lease and its unnamed part: two descriptors).
constexpr std::size_t k_max_planned_files = 64;
constexpr std::size_t k_max_batch = 512;

} // namespace

Status Session::on_offer(std::span<const std::uint8_t> payload) {
  auto offer = frame::decode_offer(payload);
  if (!offer) return offer.error();
  SESSCP_TRY(check_name("name", offer->name));
  if (m_opt.max_size && offer->size > m_opt.max_size) {
    std::string why = "file of " + std::to_string(offer->size) + " bytes exceeds the receiver's --max-size " +
                      std::to_string(m_opt.max_size);
    m_conn.send_abort(frame::Reason::too_large, why);
    return make_error(ErrorKind::refused, "refused " + offer->name + ": " + why);
  }
  if (m_files.size() >= k_max_planned_files)
    return make_error(ErrorKind::protocol, "more than " + std::to_string(k_max_planned_files) + " files offered ahead");
  SESSCP_TRY(enter_parent(offer->name));
  std::string dir_path = m_parent_path.empty() ? m_opt.dir : "/proc/self/fd/" + std::to_string(m_parent->get());
  auto file = std::make_unique<IncomingFile>(m_parent, dir_path, m_opt, m_umask, m_events, m_conn, m_small_writer);
  file->set_features(m_features);
  auto resume = file->open(*offer);
  if (!resume) {
    file->report().name = offer->name;
    m_files.push_back(std::move(file)); // reported with the others when the session ends
    return resume.error();
  }
  if (m_hub && resume->status != frame::ResumeStatus::complete) {
    // With extra streams, the file takes their DATA before the sender can
    // have the RESUME that lets it send any.
    file->begin(*resume);
    m_files.push_back(std::move(file));
    update_target();
    return send_ctl(frame::Type::resume, frame::encode(*resume));
  }
  // Sent at once, not queued (Conn::send_later): the sender waits for it to
  // send the file's data, and holding RESUMEs until this side ran out of
  // input made the two sides take turns; the receiver then found the socket
  // quiet more often and committed small files in batches of a few, at
  // 15-20x the disk writes (measured with bench/manyfiles.sh).
  SESSCP_TRY(send_ctl(frame::Type::resume, frame::encode(*resume)));
  if (resume->status == frame::ResumeStatus::complete) {
    m_events.file_report(false, file->report());
    return {};
  }
  file->begin(*resume);
  m_files.push_back(std::move(file));
  return {};
}

Status Session::check_name(const char* what, const std::string& path) {
  auto why = frame::check_path(path);
  if (why.empty()) return {};
  m_conn.send_abort(frame::Reason::bad_name, why);
  return make_error(ErrorKind::refused, std::string("refused ") + what + " '" + path + "': " + why);
}

Status Session::enter_parent(const std::string& name) {
  // Consecutive files of one directory share its descriptor.
  auto slash = name.find_last_of('/');
  std::string parent = slash == std::string::npos ? "" : name.substr(0, slash);
  if (m_parent && m_parent_path == parent) return {};
  auto dir = make_dirs(m_dir_fd, m_opt.dir, parent);
  if (!dir) return dir.error();
  m_parent = std::make_shared<const Fd>(std::move(*dir));
  m_parent_path = parent;
  return {};
}

Status Session::on_mkdir(std::span<const std::uint8_t> payload) {
  auto m = frame::decode_mkdir(payload);
  if (!m) return m.error();
  SESSCP_TRY(check_name("directory name", m->path));
  auto dir = make_dirs(m_dir_fd, m_opt.dir, m->path);
  if (!dir) return dir.error();
  // Files must go in while it is sent; its own mode is applied at release.
  struct stat st{};
  if (fstat(dir->get(), &st) == 0 && (st.st_mode & 0700) != 0700) fchmod(dir->get(), (st.st_mode & 07777) | 0700);
  if (m_dirs.size() >= (1u << 20)) return make_error(ErrorKind::protocol, "too many directories in one session");
  m_dirs.push_back(*m);
  return {};
}

Status Session::on_symlink(std::span<const std::uint8_t> payload) {
  auto m = frame::decode_symlink(payload);
  if (!m) return m.error();
  SESSCP_TRY(check_name("link name", m->path));
  auto slash = m->path.find_last_of('/');
  std::string leaf = slash == std::string::npos ? m->path : m->path.substr(slash + 1);
  auto dir = make_dirs(m_dir_fd, m_opt.dir,
                       slash == std::string::npos ? std::string_view() : std::string_view(m->path).substr(0, slash));
  if (!dir) return dir.error();
  return place_symlink(dir->get(), leaf, *m);
}

// The front file's major sync point: journaled files at once (after the
// small files before them, so FILE_DONEs stay in order), small ones into the
// batch.
Status Session::finish_front() {
  auto file = std::move(m_files.front());
  m_files.pop_front();
  // No stream may hold it past this point (it is done, or the session ends).
  update_target();
  if (file->small()) {
    SESSCP_TRY(file->prepare_small());
    if (m_batch.empty()) m_batch_start = Clock::now();
    m_batch.push_back(std::move(file));
    if (m_batch.size() >= k_max_batch) SESSCP_TRY(commit_batch());
    return {};
  }
  SESSCP_TRY(commit_batch());
  SESSCP_TRY(confirm_all_commits());
  SESSCP_TRY(m_machine.on_send(frame::Type::file_done));
  auto status = file->finish_file();
  if (!status) {
    m_files.push_front(std::move(file));
    return status;
  }
  m_events.file_report(false, file->report());
  return {};
}

// Hand the batch to the committer; its FILE_DONEs go out from confirm_commits.
Status Session::commit_batch() {
  if (!m_batch.empty()) {
    if (!m_committer) m_committer.emplace(m_dir_fd, m_opt.dir);
    m_committer->submit(std::move(m_batch));
    m_batch.clear();
  }
  return {};
}

// The batches the committer finished, in order, each file handed to `each`.
template <class Each>
Status Session::take_commits(Each each) {
  while (auto done = m_committer->take_done()) {
    if (!done->second) return done->second.error();
    for (auto& f : done->first) {
      SESSCP_TRY(each(*f));
      m_events.file_report(false, f->report());
    }
  }
  return {};
}

Status Session::confirm_commits() {
  if (!m_committer) return {};
  return take_commits([&](IncomingFile& f) -> Status {
    SESSCP_TRY(m_machine.on_send(frame::Type::file_done));
    return f.send_file_done();
  });
}

Status Session::confirm_all_commits() {
  if (m_committer) m_committer->drain();
  return confirm_commits();
}

Status Session::keep_commits() {
  if (!m_committer) return {};
  m_committer->drain();
  return take_commits([](IncomingFile& f) -> Status {
    f.report().state = FileReport::State::complete;
    return {};
  });
}

Status Session::apply_directory_metadata() {
  // Deepest first: setting a child's metadata touches its parent's mtime.
  for (auto it = m_dirs.rbegin(); it != m_dirs.rend(); ++it) {
    auto dir = make_dirs(m_dir_fd, m_opt.dir, it->path);
    if (!dir) return dir.error();
    fchmod(dir->get(), it->mode_bits & 07777 & ~m_umask);
    auto times = mtime_times(it->mtime_ns);
    if (it->mtime_ns >= 0 && futimens(dir->get(), times.data()) != 0)
      return errno_error(ErrorKind::io, "set mtime of " + it->path, errno);
  }
  m_dirs.clear();
  return {};
}

} // namespace sesscp::recv
