// SSH targets (docs/SSH.md): which arguments are SSH, daemon or local; -e
// splitting; the quoting of the remote command.
#include "ssh/target.h"
#include "ssh/transport.h"

#include <doctest/doctest.h>

using namespace sesscp;

namespace {

ssh::Target target_of(const char* text) {
  auto t = ssh::parse_target(text);
  REQUIRE(t.has_value());
  REQUIRE(t->ok());
  return t->value();
}

bool is_usage_error(const char* text) {
  auto t = ssh::parse_target(text);
  return t.has_value() && !t->ok() && t->error().kind == ErrorKind::usage;
}

} // namespace

TEST_SUITE("ssh") {
  TEST_CASE("HOST:PORT, sesscp://, URLs and local paths are not SSH targets") {
    CHECK_FALSE(ssh::parse_target("backup:7070").has_value());
    CHECK_FALSE(ssh::parse_target("[::1]:7070").has_value());
    CHECK_FALSE(ssh::parse_target("sesscp://backup:7070").has_value());
    CHECK_FALSE(ssh::parse_target("sftp://u@h/x").has_value());
    CHECK_FALSE(ssh::parse_target("./dir:with:colons").has_value());
    CHECK_FALSE(ssh::parse_target("/abs/a:b").has_value());
    CHECK_FALSE(ssh::parse_target("plainname").has_value());
    CHECK_FALSE(ssh::parse_target(":/x").has_value());
  }

  TEST_CASE("scp form: [USER@]HOST:PATH") {
    auto t = target_of("me@nas:/srv/data/");
    CHECK(t.user == "me");
    CHECK(t.host == "nas");
    CHECK(t.port == 0);
    CHECK(t.path == "/srv/data/");
    CHECK(t.trailing_slash);
    t = target_of("nas:");
    CHECK(t.user.empty());
    CHECK(t.path == ".");
    CHECK(target_of("nas:~/in").path == "in");
    CHECK(target_of("nas:7070x").path == "7070x");
    t = target_of("[fe80::1]:/d");
    CHECK(t.host == "fe80::1");
    CHECK(t.display() == "[fe80::1]:/d");
    CHECK(target_of("a@b@host:/x").user == "a@b");
  }

  TEST_CASE("ssh://[USER@]HOST[:PORT]/PATH") {
    auto t = target_of("ssh://me@nas:2222/srv/x");
    CHECK(t.user == "me");
    CHECK(t.host == "nas");
    CHECK(t.port == 2222);
    CHECK(t.path == "/srv/x");
    CHECK(target_of("ssh://nas/~/x").path == "x");
    CHECK(target_of("ssh://nas").path == ".");
    CHECK(target_of("ssh://[::1]:22/d").host == "::1");
    CHECK(is_usage_error("ssh://nas:0/x"));
    CHECK(is_usage_error("ssh://nas:99999/x"));
    CHECK(is_usage_error("ssh://nas:ab/x"));
    CHECK(is_usage_error("ssh:///x"));
  }

  TEST_CASE("a host or user that ssh could take for an option is refused") {
    CHECK(is_usage_error("-oProxyCommand=touch:/d"));
    CHECK_FALSE(ssh::parse_target("-oProxyCommand=touch /tmp/x:/d").has_value()); // a slash first: a local path
    CHECK(is_usage_error("-l@host:/d"));
    CHECK(is_usage_error("ssh://-oProxyCommand=x/d"));
    CHECK(is_usage_error("@host:/d"));
    CHECK(is_usage_error("ho st:/d"));
  }

  TEST_CASE("-e/--rsh splits like a shell, without expansions") {
    auto w = ssh::split_command("ssh -p 2222 -i '/keys/my key' -o \"UserKnownHostsFile=/a b\" x\\ y");
    REQUIRE(w.ok());
    CHECK(*w == std::vector<std::string>{"ssh", "-p", "2222", "-i", "/keys/my key", "-o", "UserKnownHostsFile=/a b", "x y"});
    CHECK_FALSE(ssh::split_command("ssh 'unterminated").ok());
    CHECK_FALSE(ssh::split_command("   ").ok());
  }

  TEST_CASE("AES-GCM first for ssh, unless the words choose a cipher") {
    using V = std::vector<std::string>;
    CHECK(ssh::prefer_aes_gcm({"ssh", "-p", "2"}) == V{"ssh", "-o", ssh::k_aes_first_ciphers, "-p", "2"});
    CHECK(ssh::prefer_aes_gcm({"/usr/bin/ssh"}) == V{"/usr/bin/ssh", "-o", ssh::k_aes_first_ciphers});
    CHECK(ssh::prefer_aes_gcm({"ssh", "-c", "chacha20-poly1305@openssh.com"}).size() == 3);
    CHECK(ssh::prefer_aes_gcm({"ssh", "-caes256-ctr"}).size() == 2);
    CHECK(ssh::prefer_aes_gcm({"ssh", "-o", "ciphers=aes256-ctr"}).size() == 3);
    CHECK(ssh::prefer_aes_gcm({"dbclient", "-p", "2"}) == V{"dbclient", "-p", "2"});
  }

  TEST_CASE("the remote command quotes the path for the remote shell") {
    CHECK(ssh::shell_quote("/plain/path") == "/plain/path");
    CHECK(ssh::shell_quote("it's $HOME") == "'it'\\''s $HOME'");
    CHECK(ssh::shell_quote("") == "''");
    ssh::Options o;
    o.target = target_of("nas:/srv/my data;rm -rf ~");
    o.remote_sesscp = "/opt/sesscp";
    CHECK(ssh::remote_command(o, "") == "/opt/sesscp recv --stdio --dir '/srv/my data;rm -rf ~' --timeout 30");
    o.mode = ssh::Options::Mode::pull;
    o.streams = 4;
    CHECK(ssh::remote_command(o, "abcdef0123456789") ==
          "/opt/sesscp recv --stdio --serve '/srv/my data;rm -rf ~' --timeout 30 --stdio-id abcdef0123456789");
    auto argv = ssh::ssh_argv({"ssh", "-x"}, target_of("ssh://me@nas:2222/d"), "cmd");
    CHECK(argv == std::vector<std::string>{"ssh", "-x", "-p", "2222", "-l", "me", "nas", "cmd"});
  }
}

TEST_SUITE("ssh") {
  TEST_CASE("a failed session over ssh is explained by ssh's exit status and words") {
    const Error lost{ErrorKind::disconnected, "connection closed by peer"};
    const std::string cmd = "sesscp recv --stdio --dir /d --timeout 30";
    auto e = ssh::classify(lost, "root@h: Permission denied (publickey).\n", 255, "h", cmd);
    CHECK(e.kind == ErrorKind::auth);
    CHECK(e.message.find("Permission denied (publickey)") != std::string::npos);
    CHECK(ssh::classify(lost, "Host key verification failed.\n", 255, "h", cmd).kind == ErrorKind::auth);
    e = ssh::classify(lost, "ssh: connect to host h port 22: Connection refused\n", 255, "h", cmd);
    CHECK(e.kind == ErrorKind::unreachable);
    e = ssh::classify(lost, "bash: line 1: sesscp: command not found\n", 127, "h", cmd);
    CHECK(e.kind == ErrorKind::refused);
    CHECK(e.message.find(cmd) != std::string::npos);
    CHECK(e.message.find("--remote-sesscp") != std::string::npos);
    // The remote sesscp's own "Permission denied" is a directory's, not a login's: 73, not 77.
    e = ssh::classify(lost, "sesscp: error: cannot write to /d (Permission denied)\n", 73, "h", cmd);
    CHECK(e.kind == ErrorKind::cannot_create);
    CHECK(e.message == "on h: cannot write to /d (Permission denied)");
    e = ssh::classify(lost, "sesscp: error: bad command line for 'sesscp recv' (--stdio)\n", 64, "h", cmd);
    CHECK(e.kind == ErrorKind::version);
    // Killed mid-transfer (no words, a signal or 255): the session's own error, retryable.
    CHECK(ssh::classify(lost, "", -1, "h", cmd).kind == ErrorKind::disconnected);
    CHECK(ssh::classify(lost, "Connection to h closed by remote host.\n", 255, "h", cmd).kind == ErrorKind::disconnected);
    // Garbage on the channel (a chatty .bashrc): a protocol error that names the likely cause.
    e = ssh::classify({ErrorKind::protocol, "expected ACCEPT, got 0x57"},
                      "sesscp: error: connection closed by peer\n", 75, "h", cmd);
    CHECK(e.kind == ErrorKind::protocol);
    CHECK(e.message.find(".bashrc") != std::string::npos);
  }
}
