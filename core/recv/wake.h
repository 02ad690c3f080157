// Wake: an eventfd that wakes a thread waiting in poll (the network thread).
#pragma once

#include "base/fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace sesscp::recv {

// poke() from any thread makes fd() readable until clear(); a failed write
// only means it is readable already.
class Wake {
public:
  Wake() : m_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  int fd() const { return m_fd.get(); }
  void poke() const {
    std::uint64_t one = 1;
    (void)!write(m_fd.get(), &one, sizeof one);
  }
  void clear() const {
    std::uint64_t v;
    (void)!read(m_fd.get(), &v, sizeof v);
  }

private:
  Fd m_fd;
};

} // namespace sesscp::recv
