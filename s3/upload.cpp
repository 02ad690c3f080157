#include "s3/upload_detail.h"

#include "base/file_io.h"
#include "s3/xml.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <ctime>

namespace sesscp::s3 {

Result<std::uint64_t> choose_part_size(std::uint64_t size, std::uint64_t wanted, std::uint32_t chunk) {
  if (wanted != 0) {
    if (wanted % chunk != 0 || wanted < k_min_part || wanted > (5ull << 30))
      return make_error(ErrorKind::usage, "--part-size " + std::to_string(wanted) +
                                              " must be a multiple of the chunk size, from 5 MiB to 5 GiB");
    if ((size + wanted - 1) / wanted > k_max_parts)
      return make_error(ErrorKind::usage, "--part-size " + std::to_string(wanted) +
                                              " cuts the file into more than 10000 parts; choose a larger one");
    return wanted;
  }
  std::uint64_t part = std::max<std::uint64_t>(k_default_part, (size + k_max_parts - 1) / k_max_parts);
  return (part + chunk - 1) / chunk * chunk;
}

std::string multipart_etag(const std::vector<std::string>& md5s) {
  std::string raw;
  for (const auto& hex : md5s)
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
      raw += static_cast<char>(std::strtol(hex.substr(i, 2).c_str(), nullptr, 16));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(raw.data(), raw.size(), md, &len, EVP_md5(), nullptr);
  return to_hex({md, len}) + "-" + std::to_string(md5s.size());
}

Status upload_file(Client& client, const UploadOptions& o, FileReport& report) {
  detail::Upload upload(client, o, report);
  auto start = detail::Clock::now();
  auto status = upload.run();
  report.seconds = std::chrono::duration<double>(detail::Clock::now() - start).count();
  if (!status)
    report.state = status.error().kind == ErrorKind::interrupted ? FileReport::State::interrupted
                                                                   : FileReport::State::failed;
  return status;
}

namespace detail {

std::string Upload::what() const { return "s3://" + m_opt.dest.bucket + "/" + m_opt.dest.key; }

std::uint32_t Upload::part_count() const {
  auto size = m_id.size;
  return static_cast<std::uint32_t>(size == 0 ? 1 : (size + m_state.part_size - 1) / m_state.part_size);
}

std::uint64_t Upload::part_bytes(std::uint32_t n) const {
  std::uint64_t begin = std::uint64_t(n - 1) * m_state.part_size;
  return std::min(m_state.part_size, m_id.size - begin);
}

Result<std::vector<std::uint8_t>> Upload::read_part(std::uint32_t n) {
  std::vector<std::uint8_t> buf(part_bytes(n));
  auto got = pread_full(m_fd.get(), buf, std::uint64_t(n - 1) * m_state.part_size, "read " + m_opt.source);
  if (!got) return got.error();
  if (*got != buf.size())
    return make_error(ErrorKind::source_changed, m_opt.source + " became shorter while being uploaded");
  return buf;
}

Status Upload::open_source() {
  m_fd.reset(::open(m_opt.source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!m_fd) return errno_error(ErrorKind::usage, "open " + m_opt.source, errno);
  struct stat st{};
  if (::fstat(m_fd.get(), &st) != 0) return errno_error(ErrorKind::io, "stat " + m_opt.source, errno);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::usage, m_opt.source + " is not a regular file");
  m_id.size = static_cast<std::uint64_t>(st.st_size);
  m_id.ino = st.st_ino;
  m_id.dev = st.st_dev;
  m_id.mtime_ns = std::int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  char abs[PATH_MAX];
  m_abs = ::realpath(m_opt.source.c_str(), abs) ? abs : m_opt.source;
  m_report.name = basename_of(m_opt.source);
  m_report.size = m_id.size;
  auto part = choose_part_size(m_id.size, m_opt.part_size, m_opt.chunk_size);
  if (!part) return part.error();
  m_state.part_size = *part;
  m_journal_path = journal_path(m_opt.state_dir, m_client.config().endpoint, m_opt.dest, m_abs);
  return {};
}

// Objects of one part go up in one PUT, verified by its Content-MD5.
Status Upload::single_put() {
  auto data = read_part(1);
  if (!data) return data.error();
  auto d = digest_part(data->data(), data->size(), m_opt.chunk_size);
  // A re-run (of a tree cut short, say) skips an object the server holds
  // with these very bytes: same size, ETag = their MD5, from the tree's
  // listing or else a HEAD. Any other answer, 404 or an error, means PUT.
  bool held = m_opt.listed ? *m_opt.listed == std::to_string(m_id.size) + " " + d.md5_hex : bool(verify(d.md5_hex));
  if (held) {
    m_report.state = FileReport::State::already_complete;
    m_report.resumed_at = m_id.size;
    m_client.events().info(m_report.name + ": already complete (the server holds these bytes)");
    return {};
  }
  Request r = object_request("PUT", "PUT " + what());
  r.data = data->data();
  r.size = data->size();
  r.headers = {"Content-MD5: " + d.md5_base64, "Content-Type: application/octet-stream"};
  // A body the server found damaged goes up once more, as a part does.
  for (int tries = 0;; ++tries) {
    auto resp = m_client.send(r);
    if (!resp) return resp.error();
    if (resp->ok()) break;
    Error e = response_error(*resp, r.what);
    if (e.kind != ErrorKind::integrity || tries == 1) return e;
    m_client.events().info(r.what + ": the server found it damaged (" + resp->code() + "); sending it again");
  }
  m_report.bytes = data->size();
  SESSCP_TRY(verify(d.md5_hex));
  m_report.state = FileReport::State::complete;
  return {};
}

Status Upload::run() {
  SESSCP_TRY(open_source());
  m_client.events().offered(m_report.name, m_id.size);
  if (m_id.size <= m_state.part_size) return single_put();
  // Agree with the server on what it holds.
  SESSCP_TRY(resume_or_start());
  if (m_report.state == FileReport::State::already_complete) return {};
  // Send the rest, then publish the object and check it.
  SESSCP_TRY(send_parts());
  SESSCP_TRY(complete());
  m_report.state = FileReport::State::complete;
  return {};
}

Request Upload::object_request(const char* method, std::string what) const {
  Request r;
  r.method = method;
  r.bucket = m_opt.dest.bucket;
  r.key = m_opt.dest.key;
  r.what = std::move(what);
  return r;
}

Status Upload::abort_upload(const std::string& upload_id) {
  Request r = object_request("DELETE", "abort upload of " + what());
  r.query = "uploadId=" + uri_encode(upload_id, false);
  auto resp = m_client.send(r);
  if (!resp) return resp.error();
  if (!resp->ok() && resp->code() != "NoSuchUpload") return response_error(*resp, r.what);
  return {};
}

Status Upload::start_new(const std::string& why) {
  if (!why.empty()) m_client.events().info(m_report.name + ": " + why);
  Request r = object_request("POST", "start upload of " + what());
  r.query = "uploads=";
  r.headers = {"Content-Type: application/octet-stream"};
  auto resp = m_client.send(r);
  if (!resp) return resp.error();
  if (!resp->ok()) return response_error(*resp, r.what);
  std::string id = xml_text(resp->body, "UploadId");
  if (id.empty() || id.find_first_of(" \t\n") != std::string::npos)
    return make_error(ErrorKind::protocol, r.what + ": no usable UploadId in the answer");
  UploadState s;
  s.upload_id = id;
  s.part_size = m_state.part_size;
  s.source_id = m_id;
  s.bucket = m_opt.dest.bucket;
  s.key = m_opt.dest.key;
  s.source = m_abs;
  s.started = static_cast<std::int64_t>(std::time(nullptr));
  m_state = std::move(s);
  auto j = UploadJournal::create(m_journal_path, m_state);
  if (!j) return j.error();
  m_journal.emplace(std::move(*j));
  m_client.events().debug("s3: upload id " + id + ", " + std::to_string(part_count()) + " parts of " +
                          std::to_string(m_state.part_size) + " bytes");
  return {};
}

} // namespace detail

} // namespace sesscp::s3
