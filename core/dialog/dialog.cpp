#include "core/dialog/dialog.h"

namespace sesscp::dialog {

void wire(SendOptions& options) { options.receive_turn = receive_turn; }

void wire(ReceiveOptions& options) { options.serve_turn = serve_turn; }

} // namespace sesscp::dialog
