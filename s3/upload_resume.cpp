// The upload's agreement with the server before and after the parts:
// journal against ListParts, then CompleteMultipartUpload and the HEAD check.
#include "s3/upload_detail.h"

#include "s3/xml.h"

#include <cstdio>
#include <unistd.h>

namespace sesscp::s3::detail {

Status Upload::resume_or_start() {
  auto old = read_journal(m_journal_path);
  if (!old) return old.error();
  if (!*old) return start_new("");
  UploadState& j = **old;
  if (j.source_id != m_id || j.part_size != m_state.part_size) {
    // A stale upload costs money and can never complete: abort it.
    SESSCP_TRY(abort_upload(j.upload_id));
    return start_new("the source changed since the interrupted upload (or the part size did): aborted upload " +
                     j.upload_id + ", starting over");
  }
  m_state = std::move(j);
  if (!m_state.completed_etag.empty()) {
    auto done = already_complete();
    if (!done) return done.error();
    if (*done) return {};
    return start_new("the object is no longer the one uploaded before; uploading again");
  }
  bool gone = false;
  auto held = list_parts(gone);
  if (!held) return held.error();
  if (gone) {
    std::string id = m_state.upload_id;
    return start_new("upload id " + id + " no longer exists on the server (expired or aborted): starting a new upload");
  }
  auto j2 = UploadJournal::append_to(m_journal_path);
  if (!j2) return j2.error();
  m_journal.emplace(std::move(*j2));
  return reconcile(*held);
}

// The parts the server holds, over every page of ListParts.
Result<std::map<std::uint32_t, ServerPart>> Upload::list_parts(bool& no_such_upload) {
  std::map<std::uint32_t, ServerPart> held;
  std::string marker;
  while (true) {
    Request r = object_request("GET", "list parts of " + what());
    r.query = "max-parts=1000" + (marker.empty() ? "" : "&part-number-marker=" + marker) +
              "&uploadId=" + uri_encode(m_state.upload_id, false);
    auto resp = m_client.send(r);
    if (!resp) return resp.error();
    // RGW answers an aborted upload id with NoSuchKey, AWS with NoSuchUpload.
    if (resp->code() == "NoSuchUpload" || (resp->status == 404 && resp->code() == "NoSuchKey")) {
      no_such_upload = true;
      return held;
    }
    if (!resp->ok()) return response_error(*resp, r.what);
    for (auto part : xml_elements(resp->body, "Part")) {
      auto n = std::strtoul(xml_text(part, "PartNumber").c_str(), nullptr, 10);
      if (n < 1 || n > k_max_parts) continue;
      held[static_cast<std::uint32_t>(n)] = {unquote(xml_text(part, "ETag")),
                                            std::strtoull(xml_text(part, "Size").c_str(), nullptr, 10)};
    }
    std::string next = xml_text(resp->body, "NextPartNumberMarker");
    if (xml_text(resp->body, "IsTruncated") != "true" || next.empty() || next == marker) return held;
    marker = next;
  }
}

// Keep the parts the server holds with the size and MD5 of ours: from the
// journal, or (a part confirmed just before a kill) hashed again here.
Status Upload::reconcile(const std::map<std::uint32_t, ServerPart>& held) {
  std::map<std::uint32_t, PartRecord> kept;
  for (const auto& [n, sp] : held) {
    if (n > part_count() || sp.size != part_bytes(n)) continue;
    auto it = m_state.parts.find(n);
    PartRecord rec;
    if (it != m_state.parts.end()) {
      rec = it->second;
    } else {
      auto data = read_part(n);
      if (!data) return data.error();
      auto d = digest_part(data->data(), data->size(), m_opt.chunk_size);
      rec = {n, sp.etag, d.md5_hex, d.xxh_hex};
      SESSCP_TRY(m_journal->add(rec));
    }
    if (rec.md5 == sp.etag) kept[n] = rec;
  }
  m_state.parts = std::move(kept);
  for (const auto& [n, rec] : m_state.parts) m_done_bytes += part_bytes(n);
  m_report.resumed_at = m_done_bytes;
  m_client.events().resumed(m_report.name, m_done_bytes, m_id.size);
  m_client.events().info(m_report.name + ": resuming upload " + m_state.upload_id + ": the server holds " +
                         std::to_string(m_state.parts.size()) + " of " + std::to_string(part_count()) + " parts");
  return {};
}

// The journal says this object was completed: true if it still is.
Result<bool> Upload::already_complete() {
  auto st = verify(m_state.completed_etag);
  if (!st && st.error().kind != ErrorKind::integrity && st.error().kind != ErrorKind::refused) return st.error();
  if (!st) return false;
  m_report.state = FileReport::State::already_complete;
  m_report.resumed_at = m_id.size;
  return true;
}

Status Upload::complete() {
  std::string body = "<CompleteMultipartUpload>";
  std::vector<std::string> md5s;
  for (std::uint32_t n = 1; n <= part_count(); ++n) {
    const auto& p = m_state.parts.at(n);
    body += "<Part><PartNumber>" + std::to_string(n) + "</PartNumber><ETag>\"" + xml_escape(p.etag) +
            "\"</ETag></Part>";
    md5s.push_back(p.md5);
  }
  body += "</CompleteMultipartUpload>";
  Request r = object_request("POST", "complete upload of " + what());
  r.query = "uploadId=" + uri_encode(m_state.upload_id, false);
  r.body = body;
  r.headers = {"Content-Type: application/xml"};
  m_client.events().phase(m_report.name, Events::Phase::finalising, "");
  auto resp = m_client.send(r);
  if (!resp) return resp.error();
  // A 200 may still carry an <Error> (S3 sends headers before it is done).
  if (!resp->ok() || !xml_elements(resp->body, "Error").empty()) return response_error(*resp, r.what);
  std::string etag = multipart_etag(md5s);
  SESSCP_TRY(verify(etag));
  SESSCP_TRY(m_journal->complete(etag));
  return {};
}

// HEAD the object: its size and ETag must be those of what we sent.
Status Upload::verify(const std::string& expected_etag) {
  Request r = object_request("HEAD", "check of " + what());
  auto resp = m_client.send(r);
  if (!resp) return resp.error();
  if (!resp->ok()) return response_error(*resp, r.what);
  auto size = std::strtoull(resp->header("content-length").c_str(), nullptr, 10);
  auto etag = unquote(resp->header("etag"));
  if (size != m_id.size || etag != expected_etag)
    return make_error(ErrorKind::integrity, what() + ": the server's object is " + std::to_string(size) +
                                                " bytes with ETag " + etag + ", expected " +
                                                std::to_string(m_id.size) + " bytes with ETag " + expected_etag);
  m_client.events().debug("s3: verified " + what() + ": " + std::to_string(size) + " bytes, ETag " + etag);
  return {};
}

} // namespace sesscp::s3::detail
