// IncomingFile: proving the chunks confirmed in earlier sessions (re-verification, REPAIR, --checksum).
#include "core/recv/incoming_file.h"

#include "core/conn.h"

#include <algorithm>

namespace sesscp::recv {

namespace {

// REPAIRs awaiting their DATA at once: enough to keep a link busy when a
// whole partial was replaced, few enough that the sender is never flooded.
constexpr std::size_t k_max_repairs_out = 64;
// A VERIFIED at least this often while the partial is being read back: the
// sender shows it, and it is the receiver's heartbeat after FILE_END.
constexpr auto k_verified_period = std::chrono::milliseconds(500);

} // namespace

void IncomingFile::start_reverifier() {
  m_verify_done = false;
  m_reverifier = std::make_unique<checkpoint::Reverifier>(
      m_part.get(), m_chunk_size, m_offer.size, std::vector<Hash128>(m_hashes.begin(), m_hashes.begin() + m_first),
      [this] { m_syncer->poke(); }, [this] { return m_writer->backlogged(); });
}

void IncomingFile::want_repair(std::uint64_t index) {
  auto& state = m_earlier[index];
  if (state == Earlier::wanted || state == Earlier::asked) return;
  if (state == Earlier::good) --m_earlier_good;
  state = Earlier::wanted;
  m_repair_queue.push_back(index);
  ++m_report.damaged_chunks;
}

void IncomingFile::take_reverified() {
  if (!m_reverifier) return;
  auto news = m_reverifier->take();
  if (news.error) {
    m_syncer->fail(make_error(news.error->kind, m_offer.name + ": " + news.error->message));
    return;
  }
  const std::uint64_t before = m_verify_checked;
  std::size_t damaged = 0;
  auto it = news.damaged.begin();
  for (std::uint64_t i = before; i < news.checked; ++i) {
    bool bad = it != news.damaged.end() && *it == i;
    if (bad) ++it;
    // A chunk already wanted (--checksum) or repaired is not the reader's to judge.
    if (m_earlier[i] != Earlier::unchecked) continue;
    if (bad) {
      want_repair(i);
      ++damaged;
      ++m_verify_damaged;
    } else {
      m_earlier[i] = Earlier::good;
      ++m_earlier_good;
    }
  }
  m_report.reverified_bytes = std::min(news.checked * m_chunk_size, m_offer.size);
  m_verify_checked = news.checked;
  m_verify_done = news.done;
  if (damaged > 0)
    m_events.info(m_offer.name + ": " + std::to_string(damaged) + " chunk(s) of the partial file damaged at rest " +
                  "(from chunk " + std::to_string(news.damaged.front()) + "); asking for them again");
}

Status IncomingFile::send_repairs() {
  std::vector<std::uint64_t> ask;
  bool verified = false;
  frame::Verified progress;
  {
    std::lock_guard lock(m_mx);
    take_reverified();
    while (!m_repair_queue.empty() && m_repairs_out < k_max_repairs_out) {
      auto index = m_repair_queue.front();
      m_repair_queue.pop_front();
      m_earlier[index] = Earlier::asked;
      ++m_repairs_out;
      ask.push_back(index);
    }
    auto now = Clock::now();
    if (m_reverifier && (m_verify_done || now - m_last_verified >= k_verified_period)) {
      m_last_verified = now;
      verified = true;
      progress = {m_verify_checked, m_first, m_verify_damaged};
      if (m_verify_done) m_reverifier.reset(); // its thread has ended
    }
  }
  for (auto index : ask) {
    m_events.debug(m_offer.name + ": chunk " + std::to_string(index) + " damaged in the partial file; REPAIR");
    SESSCP_TRY(m_conn.send(frame::encode(frame::Repair{index})));
  }
  if (verified) {
    m_events.verify_progress(m_offer.name, std::min(progress.checked * m_chunk_size, m_offer.size),
                             std::min(progress.total * m_chunk_size, m_offer.size));
    SESSCP_TRY(m_conn.send(frame::encode(progress)));
  }
  return {};
}

Status IncomingFile::on_source_hashes(std::span<const std::uint8_t> payload) {
  auto sh = frame::decode_source_hashes(payload);
  if (!sh) return sh.error();
  std::lock_guard lock(m_mx);
  if (!m_checksum || m_small || sh->first_chunk != m_source_next || sh->first_chunk + sh->hashes.size() > m_first)
    return make_error(ErrorKind::protocol, "SOURCE_HASHES out of order or beyond the resume point");
  for (std::size_t k = 0; k < sh->hashes.size(); ++k) {
    const auto index = sh->first_chunk + k;
    const auto& source = sh->hashes[k];
    if (source == m_hashes[index]) continue;
    // The source differs from what the part holds (or is to hold): send again.
    m_expect[index] = source;
    if (m_earlier[index] == Earlier::asked) continue; // its DATA is on the way; checked against `source` then
    want_repair(index);
  }
  m_source_next += sh->hashes.size();
  if (m_syncer) m_syncer->poke();
  return {};
}

} // namespace sesscp::recv
