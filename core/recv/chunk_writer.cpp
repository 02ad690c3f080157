#include "core/recv/chunk_writer.h"

namespace sesscp::recv {

ChunkWriter::ChunkWriter(std::size_t buffers, std::size_t buffer_size, Store store, Failed failed)
    : m_store(std::move(store)), m_failed(std::move(failed)), m_buffers(buffers), m_ticket(buffers, 0),
      m_worker([this](std::vector<Item>& items) { run(items); }, Worker<Item>::OnQuit::drop) {
  for (auto& b : m_buffers) b.resize(buffer_size);
}

void ChunkWriter::run(std::vector<Item>& items) {
  for (auto& item : items) {
    if (m_dropping) continue;
    auto status = m_store(item.buf->span(item.len), item.chunk);
    if (!status) {
      m_dropping = true;
      m_failed(status.error());
    }
  }
}

} // namespace sesscp::recv
