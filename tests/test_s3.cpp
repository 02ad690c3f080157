#include "s3/config.h"
#include "s3/get.h"
#include "s3/tree.h"
#include "s3/upload.h"
#include "s3/upload_journal.h"
#include "s3/xml.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace sesscp;
using namespace sesscp::s3;

TEST_SUITE("s3") {
  TEST_CASE("xml elements and text") {
    std::string doc = "<?xml version=\"1.0\"?><ListPartsResult xmlns=\"http://s3\"><IsTruncated>true</IsTruncated>"
                      "<Part><PartNumber>1</PartNumber><ETag>&quot;abc&quot;</ETag><Size>5</Size></Part>"
                      "<PartNumberMarker/><Part><PartNumber>2</PartNumber><ETag>\"d&amp;e\"</ETag></Part>"
                      "<Parts>x</Parts></ListPartsResult>";
    auto parts = xml_elements(doc, "Part");
    REQUIRE(parts.size() == 2); // <Parts> and <PartNumber> are other elements
    CHECK(xml_text(parts[0], "ETag") == "\"abc\"");
    CHECK(xml_text(parts[1], "ETag") == "\"d&e\"");
    CHECK(xml_text(doc, "IsTruncated") == "true");
    CHECK(xml_text(doc, "PartNumberMarker").empty());
    CHECK(xml_text(doc, "Missing").empty());
    CHECK(xml_text("<a>unterminated", "a").empty());
    CHECK(xml_escape("<\"a&b\">") == "&lt;&quot;a&amp;b&quot;&gt;");
  }

  TEST_CASE("s3 URLs and request URLs") {
    auto l = parse_s3_url("s3://my-bucket/dir/a b+c.img");
    REQUIRE(l);
    CHECK(l->bucket == "my-bucket");
    CHECK(l->key == "dir/a b+c.img");
    CHECK(!parse_s3_url("s3://ab/x"));
    CHECK(!parse_s3_url("s3://Upper/x"));
    CHECK(!parse_s3_url("https://x/y"));
    Config c;
    c.endpoint = "http://127.0.0.1:7480";
    c.path_style = true;
    CHECK(request_url(c, "b1b", "dir/a b+c.img", "uploads=") == "http://127.0.0.1:7480/b1b/dir/a%20b%2Bc.img?uploads=");
    c.endpoint = "https://s3.eu-west-1.amazonaws.com";
    c.path_style = false;
    CHECK(request_url(c, "b1b", "k") == "https://b1b.s3.eu-west-1.amazonaws.com/k");
  }

  TEST_CASE("config from the environment and a profile") {
    auto dir = std::filesystem::temp_directory_path() / ("sesscp-s3-cfg-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "credentials") << "[default]\naws_access_key_id = A\naws_secret_access_key = S\n"
                                          "[other]\naws_access_key_id = OA\naws_secret_access_key = OS\n";
    std::ofstream(dir / "config") << "[profile other]\nregion = eu-central-1\n";
    ::setenv("AWS_SHARED_CREDENTIALS_FILE", (dir / "credentials").c_str(), 1);
    ::setenv("AWS_CONFIG_FILE", (dir / "config").c_str(), 1);
    for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION",
                          "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"})
      ::unsetenv(v);
    ConfigFlags f;
    f.profile = "other";
    auto c = load_config(f);
    REQUIRE(c);
    CHECK(c->credentials.access_key == "OA");
    CHECK(c->region == "eu-central-1");
    CHECK(!c->path_style);
    f.endpoint = "http://127.0.0.1:1/";
    c = load_config(f);
    REQUIRE(c);
    CHECK(c->path_style);
    CHECK(c->endpoint == "http://127.0.0.1:1");
    f.profile = "missing";
    CHECK(load_config(f).error().kind == ErrorKind::auth);
    ::unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    ::unsetenv("AWS_CONFIG_FILE");
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("prefix downloads: where each key lands, and the keys refused") {
    CHECK(tree_path("p/", "p/a/b c.txt").value() == "a/b c.txt");
    CHECK(tree_path("p/", "p/dir/").value() == "dir");  // a folder marker
    CHECK(tree_path("p/", "p/").value().empty());       // the prefix's own marker
    CHECK(tree_path("", "top").value() == "top");
    for (const char* bad : {"p/../evil", "p/a/../../evil", "p/./a", "p/a//b", "p//a", "p/a\x01" "b",
                            "p/a.sesscp.part", "q/other"}) {
      auto r = tree_path("p/", bad);
      REQUIRE_FALSE(r);
      CHECK(r.error().kind == ErrorKind::refused);
    }
    CHECK_FALSE(tree_path("", "/abs"));
    CHECK_FALSE(tree_path("p/", std::string("p/a\0b", 5)));
    CHECK(default_tree_dir({"bkt", "a/b/"}) == "b");
    CHECK(default_tree_dir({"bkt", "a/"}) == "a");
    CHECK(default_tree_dir({"bkt", ""}) == "bkt");
    CHECK(default_tree_dir({"bkt", "../"}) == "bkt");
  }

  TEST_CASE("run_parallel: every job once, at most `width` at a time; one thread stops at the first false") {
    std::vector<std::atomic<int>> runs(200);
    std::atomic<int> now{0}, peak{0};
    run_parallel(runs.size(), 4, [&](std::size_t i) {
      int in = ++now;
      for (int p = peak.load(); in > p && !peak.compare_exchange_weak(p, in);) {}
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ++runs[i];
      --now;
      return true;
    });
    int once = 0;
    for (auto& r : runs) once += r.load() == 1;
    CHECK(once == 200);
    CHECK(peak.load() <= 4);
    CHECK(peak.load() >= 2); // 200 sleeping jobs on 4 threads overlap
    // One thread: the jobs run in order, and none after the first false.
    std::vector<std::size_t> seen;
    run_parallel(10, 1, [&](std::size_t i) {
      seen.push_back(i);
      return i != 3;
    });
    CHECK(seen == std::vector<std::size_t>{0, 1, 2, 3});
    std::atomic<int> none{0};
    run_parallel(0, 4, [&](std::size_t) { return ++none, true; });
    CHECK(none.load() == 0);
  }

  TEST_CASE("part sizes fit 10000 parts in whole chunks") {
    CHECK(*choose_part_size(1ull << 30, 0, 1u << 20) == 8u << 20);
    auto big = *choose_part_size(500ull << 30, 0, 1u << 20);
    CHECK(big % (1u << 20) == 0);
    CHECK((500ull << 30) / big < 10000);
    CHECK(!choose_part_size(1ull << 30, (5u << 20) + 4096, 1u << 20));
    CHECK(!choose_part_size(100ull << 30, 5u << 20, 1u << 20)); // 20480 parts
    // S3's ETag of a two-part object: MD5 of the two binary MD5s, "-2".
    CHECK(multipart_etag({"d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e"}) ==
          "5873dd45edd01f09c1ef2e7819369e8e-2");
    CHECK(multipart_etag({"0cc175b9c0f1b6a831c399e269772661"}).size() == 34);
  }

  TEST_CASE("upload journal: parts survive, a torn last line is dropped") {
    auto dir = std::filesystem::temp_directory_path() / ("sesscp-s3-j-" + std::to_string(::getpid()));
    std::string path = journal_path(dir.string(), "http://e", {"bkt", "k y"}, "/src/a");
    UploadState s;
    s.upload_id = "2~abc";
    s.part_size = 8u << 20;
    s.source_id = {100, 7, 8, 123456789};
    s.bucket = "bkt";
    s.key = "k y";
    s.source = "/src/a b";
    auto j = UploadJournal::create(path, s);
    REQUIRE(j);
    REQUIRE(j->add({1, "e1", "m1", "x1"}));
    REQUIRE(j->add({2, "e2", "m2", "x2"}));
    std::ofstream(path, std::ios::app) << "part 3 e3 m3 x3\t0123"; // torn: no valid checksum
    auto r = read_journal(path);
    REQUIRE(r);
    REQUIRE(*r);
    CHECK((*r)->upload_id == "2~abc");
    CHECK((*r)->source_id == s.source_id);
    CHECK((*r)->key == "k y");
    CHECK((*r)->source == "/src/a b");
    CHECK((*r)->parts.size() == 2);
    CHECK((*r)->parts.at(2).md5 == "m2");
    CHECK(list_journals(dir.string()).size() == 1);
    std::filesystem::remove_all(dir);
  }
}
