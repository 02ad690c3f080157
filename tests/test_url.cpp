// URL helpers: credential-free messages, scheme detection, digests.
#include "url/curl.h"
#include "url/get.h"

#include <doctest/doctest.h>

using namespace sesscp;

TEST_SUITE("url") {
  TEST_CASE("redact drops the password, keeps the rest") {
    CHECK(url::redact("https://alice:s3cret@example.org:8443/a/b.img") == "https://alice@example.org:8443/a/b.img");
    CHECK(url::redact("sftp://bob@host/~/x") == "sftp://bob@host/~/x");
    CHECK(url::redact("http://example.org/x?y=1") == "http://example.org/x?y=1");
    CHECK(url::redact("http://u:p@").find("p@") == std::string::npos);
  }

  TEST_CASE("has_inline_password") {
    CHECK(url::has_inline_password("ftp://u:pw@h/f"));
    CHECK_FALSE(url::has_inline_password("ftp://u@h/f"));
    CHECK_FALSE(url::has_inline_password("ftp://h/f"));
  }

  TEST_CASE("URL targets are told apart from HOST:PORT") {
    CHECK(url::looks_like_url("sftp://h/x"));
    CHECK(url::looks_like_url("HTTPS://h/x"));
    CHECK(url::scheme_of("HTTPS://h/x") == "https");
    CHECK_FALSE(url::looks_like_url("backup:7070"));
    CHECK_FALSE(url::looks_like_url("[::1]:7070"));
    CHECK_FALSE(url::looks_like_url("gopher://h/x"));
    CHECK_FALSE(url::looks_like_url("://h"));
  }

  TEST_CASE("file_name_of decodes the last path component") {
    CHECK(url::file_name_of("http://h/dir/disk%20image.img") == "disk image.img");
    CHECK(url::file_name_of("http://h/dir/") == "");
    CHECK(url::file_name_of("http://h") == "");
  }

  TEST_CASE("normalise_hex") {
    auto ok = url::normalise_hex(std::string(64, 'A'), 256, "--sha256");
    REQUIRE(ok);
    CHECK(*ok == std::string(64, 'a'));
    CHECK_FALSE(url::normalise_hex(std::string(63, 'a'), 256, "--sha256"));
    CHECK_FALSE(url::normalise_hex(std::string(32, 'g'), 128, "--xxh128"));
  }

  TEST_CASE("transfer errors map to the documented exit codes") {
    CHECK(exit_code_for(url::transfer_error(CURLE_COULDNT_CONNECT, 0, "", "GET x").kind) == 69);
    CHECK(exit_code_for(url::transfer_error(CURLE_PEER_FAILED_VERIFICATION, 0, "", "GET x").kind) == 77);
    CHECK(exit_code_for(url::transfer_error(CURLE_OPERATION_TIMEDOUT, 0, "", "GET x").kind) == 75);
    CHECK(exit_code_for(url::transfer_error(CURLE_PARTIAL_FILE, 0, "", "GET x").kind) == 75);
    CHECK(exit_code_for(url::transfer_error(CURLE_HTTP_RETURNED_ERROR, 404, "", "GET x").kind) == 69);
    CHECK(exit_code_for(url::transfer_error(CURLE_HTTP_RETURNED_ERROR, 403, "", "GET x").kind) == 77);
    CHECK(exit_code_for(url::transfer_error(CURLE_URL_MALFORMAT, 0, "", "GET x").kind) == 64);
    CHECK(url::transfer_error(CURLE_HTTP_RETURNED_ERROR, 503, "", "GET x").kind == ErrorKind::busy);
  }
}
