#include "core/recv/syncer.h"

#include <unistd.h>

namespace sesscp::recv {

Syncer::Syncer(int part_fd, checkpoint::Journal& journal, std::string part_path)
    : m_part_fd(part_fd), m_journal(journal), m_part_path(std::move(part_path)),
      m_worker([this](std::vector<Job>& jobs) { run(jobs); }, Worker<Job>::OnQuit::finish,
               Worker<Job>::k_unbounded,
               // The last record's wake: once the jobs count as run, so that
               // the network thread woken finds the syncer idle.
               [this](std::vector<Job>&) { poke(); }) {}

void Syncer::fail(Error error) {
  {
    std::lock_guard lock(m_mutex);
    if (!m_error) m_error = std::move(error);
  }
  poke();
  m_worker.cancel();
}

void Syncer::run(std::vector<Job>& jobs) {
  for (std::size_t next = 0; next < jobs.size();) {
    if (error()) return; // after a failure the rest are dropped
    Job& merged = jobs[next++];
    while (next < jobs.size() && merged.hashes.size() + jobs[next].hashes.size() <= checkpoint::k_max_record_hashes) {
      auto& more = jobs[next++];
      merged.hashes.insert(merged.hashes.end(), more.hashes.begin(), more.hashes.end());
      merged.serial = more.serial;
    }
    auto status = make_durable(merged);
    {
      std::lock_guard lock(m_mutex);
      if (!status) m_error = status.error();
      else m_confirmed = {merged.serial, merged.first_chunk + merged.hashes.size()};
    }
    if (!status) {
      m_worker.cancel();
      return;
    }
    if (next < jobs.size()) poke(); // (the batch's last record wakes once published)
  }
}

Status Syncer::make_durable(const Job& job) {
  // fdatasync before the journal append: a record must never point past
  // durable data, or a power cut could leave the journal vouching for
  // bytes the disk never got.
  if (fdatasync(m_part_fd) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_part_path, errno);
  return m_journal.append({job.serial, job.first_chunk, job.hashes});
}

} // namespace sesscp::recv
