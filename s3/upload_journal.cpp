#include "s3/upload_journal.h"

#include "base/file_io.h"
#include "base/hash.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace sesscp::s3 {

namespace {

constexpr const char* k_magic = "sesscp-s3-upload";
constexpr int k_version = 1;

std::string checksum(const std::string& fields) {
  auto h = xxh3_64({reinterpret_cast<const std::uint8_t*>(fields.data()), fields.size()});
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string line_of(const std::string& fields) { return fields + "\t" + checksum(fields) + "\n"; }

// The fields of a line whose checksum holds, nullopt otherwise.
std::optional<std::string> check_line(const std::string& line) {
  auto tab = line.rfind('\t');
  if (tab == std::string::npos) return std::nullopt;
  std::string fields = line.substr(0, tab);
  if (checksum(fields) != line.substr(tab + 1)) return std::nullopt;
  return fields;
}

std::string header_fields(const UploadState& s) {
  std::ostringstream o;
  o << k_magic << ' ' << k_version << ' ' << s.upload_id << ' ' << s.part_size << ' ' << s.source_id.size << ' '
    << s.source_id.mtime_ns << ' ' << s.source_id.ino << ' ' << s.source_id.dev << ' ' << s.started << ' '
    << s.bucket << ' ' << uri_encode(s.key, false) << ' ' << uri_encode(s.source, false);
  return o.str();
}

std::string decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::strtol(s.substr(i + 1, 2).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool parse_header(const std::string& fields, UploadState& s) {
  std::istringstream in(fields);
  std::string magic, key, source;
  int version = 0;
  in >> magic >> version >> s.upload_id >> s.part_size >> s.source_id.size >> s.source_id.mtime_ns >>
      s.source_id.ino >> s.source_id.dev >> s.started >> s.bucket >> key >> source;
  if (!in || magic != k_magic || version != k_version) return false;
  s.key = decode(key);
  s.source = decode(source);
  return true;
}

bool parse_part(const std::string& fields, PartRecord& p) {
  std::istringstream in(fields);
  std::string word;
  in >> word >> p.number >> p.etag >> p.md5 >> p.xxh;
  return in && word == "part" && p.number >= 1 && p.number <= 10000;
}

Status write_line(int fd, const std::string& line, const std::string& path) {
  std::size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(ErrorKind::io, "write " + path, errno);
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status make_dirs(const std::string& dir) {
  std::string path;
  std::istringstream in(dir);
  std::string part;
  if (!dir.empty() && dir[0] == '/') path = "/";
  while (std::getline(in, part, '/')) {
    if (part.empty()) continue;
    path += part + "/";
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return errno_error(ErrorKind::cannot_create, "mkdir " + path, errno);
  }
  return {};
}

} // namespace

std::string default_state_dir() {
  const char* xdg = std::getenv("XDG_STATE_HOME");
  if (xdg && *xdg) return std::string(xdg) + "/sesscp";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.local/state/sesscp";
}

std::string journal_path(const std::string& state_dir, const std::string& endpoint, const Location& dest,
                         const std::string& source) {
  std::string id = endpoint + "\n" + dest.bucket + "\n" + dest.key + "\n" + source;
  return state_dir + "/s3/" + checksum(id) + ".journal";
}

Result<std::optional<UploadState>> read_journal(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::optional<UploadState>();
  std::string line;
  UploadState s;
  if (!std::getline(in, line)) return std::optional<UploadState>();
  auto header = check_line(line);
  if (!header || !parse_header(*header, s)) return std::optional<UploadState>();
  // Every complete line whose checksum holds; the first bad one ends it.
  while (std::getline(in, line) && !in.eof()) {
    auto fields = check_line(line);
    PartRecord p;
    if (fields && fields->rfind("complete ", 0) == 0) {
      s.completed_etag = fields->substr(9);
      continue;
    }
    if (!fields || !parse_part(*fields, p)) break;
    s.parts[p.number] = p;
  }
  if (in.eof() && !line.empty()) { // a last line without its newline: torn unless it checks
    auto fields = check_line(line);
    PartRecord p;
    if (fields && parse_part(*fields, p)) s.parts[p.number] = p;
  }
  return std::optional<UploadState>(std::move(s));
}

std::vector<std::pair<std::string, UploadState>> list_journals(const std::string& state_dir) {
  std::vector<std::pair<std::string, UploadState>> out;
  std::string dir = state_dir + "/s3";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 9 || name.substr(name.size() - 8) != ".journal") continue;
    auto s = read_journal(dir + "/" + name);
    if (s && *s) out.emplace_back(dir + "/" + name, std::move(**s));
  }
  ::closedir(d);
  return out;
}

Result<UploadJournal> UploadJournal::create(const std::string& path, const UploadState& state) {
  std::string dir = dirname_of(path);
  SESSCP_TRY(make_dirs(dir));
  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return errno_error(ErrorKind::cannot_create, "create " + tmp, errno);
  SESSCP_TRY(write_line(fd.get(), line_of(header_fields(state)), tmp));
  for (const auto& [n, p] : state.parts)
    SESSCP_TRY(write_line(fd.get(), line_of("part " + std::to_string(n) + " " + p.etag + " " + p.md5 + " " + p.xxh), tmp));
  if (::fsync(fd.get()) != 0) return errno_error(ErrorKind::io, "fsync " + tmp, errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error(ErrorKind::io, "rename " + tmp, errno);
  SESSCP_TRY(fsync_dir(dir));
  return append_to(path);
}

Result<UploadJournal> UploadJournal::append_to(const std::string& path) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (!fd) return errno_error(ErrorKind::io, "open " + path, errno);
  return UploadJournal(std::move(fd), path);
}

Status UploadJournal::complete(const std::string& etag) {
  SESSCP_TRY(write_line(m_fd.get(), line_of("complete " + etag), m_path));
  if (::fdatasync(m_fd.get()) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_path, errno);
  return {};
}

Status UploadJournal::add(const PartRecord& p) {
  SESSCP_TRY(write_line(m_fd.get(), line_of("part " + std::to_string(p.number) + " " + p.etag + " " + p.md5 + " " + p.xxh), m_path));
  if (::fdatasync(m_fd.get()) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_path, errno);
  return {};
}

} // namespace sesscp::s3
