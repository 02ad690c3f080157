// The sender's tree walk (core/source.h, collect_sources).
#include "core/source.h"

#include "base/bytes.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace sesscp;

namespace {

// A fresh mkdtemp directory, removed with everything in it.
class Scratch {
public:
  Scratch() {
    std::string tmpl = "/tmp/sesscp-source-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string operator/(const std::string& rel) const { return m_path + "/" + rel; }
  void file(const std::string& rel, const std::string& text = "x") const { std::ofstream(*this / rel) << text; }
  void dir(const std::string& rel) const { std::filesystem::create_directories(*this / rel); }

private:
  std::string m_path;
};

std::vector<std::string> names(const std::vector<SourceEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.name);
  return out;
}

} // namespace

TEST_SUITE("source") {

TEST_CASE("DIR/ sends the contents, DIR the directory itself; parents first, names sorted") {
  Scratch s;
  s.dir("top/b/c");
  s.dir("top/a");
  s.file("top/z.txt");
  s.file("top/b/c/deep.bin");
  s.file("top/b/file");
  std::vector<std::string> warnings;
  auto contents = collect_sources({s / "top/"}, false, warnings);
  REQUIRE(contents.ok());
  CHECK(names(*contents) == std::vector<std::string>{"a", "b", "b/c", "b/c/deep.bin", "b/file", "z.txt"});
  auto itself = collect_sources({s / "top"}, false, warnings);
  REQUIRE(itself.ok());
  CHECK(names(*itself).front() == "top");
  CHECK(names(*itself).back() == "top/z.txt");
  CHECK((*itself)[0].kind == SourceEntry::Kind::directory);
  CHECK(warnings.empty());
}

TEST_CASE("symlinks are links unless followed; special files are skipped with a warning") {
  Scratch s;
  s.dir("t/d");
  s.file("t/d/f", "hello");
  REQUIRE(::symlink("d/f", (s / "t/to-file").c_str()) == 0);
  REQUIRE(::symlink("/nonexistent/x", (s / "t/dangling").c_str()) == 0);
  REQUIRE(::symlink(".", (s / "t/d/loop").c_str()) == 0);
  REQUIRE(::mkfifo((s / "t/fifo").c_str(), 0600) == 0);
  std::vector<std::string> warnings;
  auto links = collect_sources({s / "t/"}, false, warnings);
  REQUIRE(links.ok());
  CHECK(names(*links) == std::vector<std::string>{"d", "d/f", "d/loop", "dangling", "to-file"});
  CHECK((*links)[4].kind == SourceEntry::Kind::symlink);
  CHECK((*links)[4].target == "d/f");
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("FIFO") != std::string::npos);

  warnings.clear();
  auto followed = collect_sources({s / "t/"}, true, warnings);
  REQUIRE(followed.ok());
  // The loop back to d is skipped, the dangling link too; to-file is a file.
  CHECK(names(*followed) == std::vector<std::string>{"d", "d/f", "to-file"});
  CHECK((*followed)[2].kind == SourceEntry::Kind::file);
  CHECK(warnings.size() == 3);
}

TEST_CASE("metadata, clashing destinations, and names the receiver would refuse") {
  Scratch s;
  s.dir("a");
  s.dir("b");
  s.file("a/same");
  s.file("b/same");
  s.file("a/bad\nname");
  REQUIRE(::chmod((s / "a/same").c_str(), 0640) == 0);
  std::vector<std::string> warnings;
  auto one = collect_sources({s / "a/"}, false, warnings);
  REQUIRE(one.ok());
  REQUIRE(names(*one) == std::vector<std::string>{"same"});
  CHECK((*one)[0].mode_bits == 0640);
  CHECK((*one)[0].mtime_ns > 0);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("control character") != std::string::npos);
  auto clash = collect_sources({s / "a/", s / "b/"}, false, warnings);
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error().kind == ErrorKind::usage);
  auto missing = collect_sources({s / "nope"}, false, warnings);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().kind == ErrorKind::usage);
  auto fifo_top = collect_sources({"/dev/null"}, false, warnings);
  CHECK_FALSE(fifo_top.ok());
}

TEST_CASE("the fingerprint of a file within one sample is the three samples' bytes, read once") {
  Scratch s;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + i % 26);
  s.file("f", text);
  auto f = SourceFile::open(s / "f");
  REQUIRE(f.ok());
  auto fp = f->fingerprint();
  REQUIRE(fp.ok());
  ByteWriter w;
  w.u64(text.size());
  auto bytes = [&](std::string_view v) { w.bytes({reinterpret_cast<const std::uint8_t*>(v.data()), v.size()}); };
  bytes(text);
  bytes(std::string_view(text).substr(text.size() / 2));
  bytes(text);
  CHECK(*fp == xxh3_128(w.buffer()));
}

TEST_CASE("the fingerprint of a larger file is the size and its start, middle and end samples") {
  Scratch s;
  std::string text;
  for (int i = 0; i < 200 * 1024 + 7; ++i) text += static_cast<char>((i * 7919) % 251);
  s.file("f", text);
  auto f = SourceFile::open(s / "f");
  REQUIRE(f.ok());
  auto fp = f->fingerprint();
  REQUIRE(fp.ok());
  const std::size_t sample = 64 * 1024;
  ByteWriter w;
  w.u64(text.size());
  auto bytes = [&](std::string_view v) { w.bytes({reinterpret_cast<const std::uint8_t*>(v.data()), v.size()}); };
  bytes(std::string_view(text).substr(0, sample));
  bytes(std::string_view(text).substr(text.size() / 2, sample));
  bytes(std::string_view(text).substr(text.size() - sample));
  CHECK(*fp == xxh3_128(w.buffer()));
  // A change in the middle sample changes it; one outside every sample does not.
  std::string mid = text;
  mid[text.size() / 2 + 10] ^= 1;
  s.file("g", mid);
  std::string outside = text;
  outside[sample + 10] ^= 1;
  s.file("h", outside);
  CHECK(*SourceFile::open(s / "g")->fingerprint() != *fp);
  CHECK(*SourceFile::open(s / "h")->fingerprint() == *fp);
}

TEST_CASE("open_beneath: a file beneath the directory, never through a symlink or out of it") {
  Scratch s;
  s.dir("export/real");
  s.file("export/real/f.txt", "inside");
  s.file("outside.txt", "outside");
  std::filesystem::create_directory_symlink(s / "export/real", s / "export/link");
  std::filesystem::create_symlink(s / "outside.txt", s / "export/out.txt");
  int dir = ::open((s / "export").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(dir >= 0);
  auto ok = SourceFile::open_beneath(dir, "real/f.txt", "real/f.txt");
  REQUIRE(ok.ok());
  CHECK(ok->size() == 6);
  CHECK(ok->path() == "real/f.txt");
  for (const char* bad : {"link/f.txt", "out.txt", "../outside.txt", "real/missing"}) {
    CAPTURE(bad);
    auto r = SourceFile::open_beneath(dir, bad, bad);
    CHECK_FALSE(r.ok());
  }
  ::close(dir);
}

} // TEST_SUITE
