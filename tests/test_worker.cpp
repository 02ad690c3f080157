#include "base/worker.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using sesscp::Worker;

TEST_CASE("worker: items run in order, wait() and drain() wait for them") {
  std::vector<int> ran;
  Worker<int> w([&](std::vector<int>& batch) {
    CHECK(batch.size() == 1);
    for (int v : batch) ran.push_back(v);
  }, Worker<int>::OnQuit::finish);
  CHECK(w.idle());
  std::uint64_t t = 0;
  for (int i = 0; i < 100; ++i) t = w.submit(i);
  CHECK(t == 100);
  const auto done = w.wait(50);
  CHECK(done >= 50);
  CHECK(ran.size() >= done); // (ran grows on the worker's thread: at least what wait() counted)
  CHECK(w.wait(0) >= done);
  w.drain();
  REQUIRE(ran.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(ran[static_cast<std::size_t>(i)] == i);
  CHECK(w.pending() == 0);
}

TEST_CASE("worker: a batch takes what queued up, at most the batch size") {
  std::atomic<bool> go{false};
  std::vector<std::size_t> sizes;
  std::vector<int> ran;
  Worker<int> w([&](std::vector<int>& batch) {
    while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    sizes.push_back(batch.size());
    for (int v : batch) ran.push_back(v);
  }, Worker<int>::OnQuit::finish, 4);
  w.submit(0); // the thread takes this one alone and blocks on `go`
  while (w.pending() != 1) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int i = 1; i <= 9; ++i) w.submit(i);
  CHECK(w.pending() == 10);
  go = true;
  w.drain();
  REQUIRE(ran.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(ran[static_cast<std::size_t>(i)] == i);
  REQUIRE(sizes.size() == 4); // 1, then 4, 4, 1
  CHECK(sizes[0] == 1);
  CHECK(sizes[1] == 4);
  CHECK(sizes[2] == 4);
  CHECK(sizes[3] == 1);
}

TEST_CASE("worker: at destruction, finish runs what is queued and drop does not") {
  for (auto on_quit : {Worker<int>::OnQuit::finish, Worker<int>::OnQuit::drop}) {
    std::atomic<int> count{0};
    std::atomic<bool> started{false}, go{false};
    auto w = std::make_unique<Worker<int>>([&](std::vector<int>&) {
      started = true;
      while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ++count;
    }, on_quit);
    for (int i = 0; i < 5; ++i) w->submit(i);
    while (!started.load()) std::this_thread::yield();
    // The first item runs and waits; the other four are queued when the
    // destructor asks the thread to quit, and `go` comes only after that.
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      go = true;
    });
    w.reset();
    release.join();
    CHECK(count.load() == (on_quit == Worker<int>::OnQuit::finish ? 5 : 1));
  }
}

TEST_CASE("worker: no thread until the first item") {
  bool ran = false;
  { Worker<int> w([&](std::vector<int>&) { ran = true; }, Worker<int>::OnQuit::drop); }
  CHECK_FALSE(ran);
}

TEST_CASE("worker: publish hands over under the lock, before the items count as run") {
  std::vector<int> published; // written by publish only, read once wait(), drain() or pending() say so
  Worker<int> w([](std::vector<int>& batch) {
    for (int& v : batch) v *= 10;
  }, Worker<int>::OnQuit::finish, 1, [&](std::vector<int>& batch) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // a slow hand-over
    for (int v : batch) published.push_back(v);
  });
  for (int i = 1; i <= 3; ++i) {
    auto ticket = w.submit(i);
    w.wait(ticket);
    REQUIRE(published.size() == static_cast<std::size_t>(i));
    CHECK(published.back() == 10 * i); // it sees what run did to the item
  }
  w.submit(4);
  while (w.pending() != 0) std::this_thread::yield();
  CHECK(published.size() == 4);
  w.submit(5);
  w.drain();
  CHECK(published.size() == 5);
}
