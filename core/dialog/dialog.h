// Dialog control between the engines: wires the receiving engine into a
// sender (for --fetch) and the sending engine into a receiver (for --serve),
// so that neither engine includes the other (core/turn.h).
#pragma once

#include "core/recv/receiver.h"
#include "core/send/sender.h"

namespace sesscp::dialog {

// Give a sender the receive turn that --fetch runs (half- or full-duplex).
void wire(SendOptions& options);

// Give a receiver the serve turn that --serve runs (half- or full-duplex).
void wire(ReceiveOptions& options);

} // namespace sesscp::dialog
