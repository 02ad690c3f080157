#include "url/put.h"

namespace sesscp::url {

Status put_sftp(const PutOptions&, Events&, FileReport&) {
  return make_error(ErrorKind::usage, "sftp upload is not implemented yet");
}

} // namespace sesscp::url
