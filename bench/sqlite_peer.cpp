// SQLite doing what durable ipcfs does for a message queue, as the peer of the durable
// figures: writers INSERT a 64-byte message each in its own transaction, readers take the
// oldest with DELETE ... RETURNING, in WAL mode with synchronous=FULL (every commit is on
// disk before it returns, like an acknowledged ipcfs send). Each process has its own
// connection, as separate programs sharing a queue would. A reader looks for the oldest
// message with a read transaction (which never waits for writers in WAL mode) and takes it
// with a write transaction, so that polling an empty queue does not hold the write lock.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"

namespace bench {

namespace {

constexpr int kMsg = 64;
constexpr char kData = 'm';
constexpr char kStop = 'S';

class Db {
 public:
  explicit Db(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) failPlain("sqlite3_open " + path);
    // Retry a busy write lock at once rather than with sqlite3_busy_timeout's sleeps of up to
    // 100 ms, which starve a reader polling beside a writer (7 msg/s measured): the queue
    // then runs at the pace of SQLite's own commits.
    sqlite3_busy_handler(
        db_,
        [](void*, int attempts) {
          if (attempts > 1'000'000) return 0;
          std::this_thread::yield();
          return 1;
        },
        nullptr);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
  }
  ~Db() {
    for (auto* s : {insert_, oldest_, take_})
      if (s) sqlite3_finalize(s);
    sqlite3_close(db_);
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string what = std::string(sql) + ": " + (err ? err : "?");
      sqlite3_free(err);
      failPlain(what);
    }
  }

  void push(const char* body) {
    if (!insert_) prepare("INSERT INTO q(body) VALUES (?)", &insert_);
    sqlite3_bind_blob(insert_, 1, body, kMsg, SQLITE_STATIC);
    if (sqlite3_step(insert_) != SQLITE_DONE) failPlain(std::string("INSERT: ") + sqlite3_errmsg(db_));
    sqlite3_reset(insert_);
  }

  // The oldest message's first byte, or 0 if the queue is empty (or another reader took it).
  char take() {
    if (!oldest_) prepare("SELECT min(id) FROM q", &oldest_);
    if (!take_) prepare("DELETE FROM q WHERE id = ? RETURNING body", &take_);
    int rc = sqlite3_step(oldest_);
    const bool found = rc == SQLITE_ROW && sqlite3_column_type(oldest_, 0) != SQLITE_NULL;
    const sqlite3_int64 id = found ? sqlite3_column_int64(oldest_, 0) : 0;
    sqlite3_reset(oldest_);
    if (!found) return 0;
    sqlite3_bind_int64(take_, 1, id);
    char first = 0;
    rc = sqlite3_step(take_);
    if (rc == SQLITE_ROW) {
      first = static_cast<const char*>(sqlite3_column_blob(take_, 0))[0];
      rc = sqlite3_step(take_);
    }
    if (rc != SQLITE_DONE) failPlain(std::string("DELETE: ") + sqlite3_errmsg(db_));
    sqlite3_reset(take_);
    return first;
  }

 private:
  void prepare(const char* sql, sqlite3_stmt** stmt) {
    if (sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr) != SQLITE_OK)
      failPlain(std::string(sql) + ": " + sqlite3_errmsg(db_));
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* oldest_ = nullptr;
  sqlite3_stmt* take_ = nullptr;
};

}  // namespace

Value sqliteQueue(const std::string& dir, int writers, int readers, double seconds) {
  static int serial = 0;
  const std::string path = dir + "/queue-" + std::to_string(::getpid()) + "-" + std::to_string(++serial) + ".db";
  {
    Db db(path);
    db.exec("CREATE TABLE q(id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)");
  }
  std::vector<Role> roles;
  for (int i = 0; i < writers; ++i) {
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       Db db(path);
                       char body[kMsg];
                       std::fill(body, body + kMsg, kData);
                       auto deadline = start();
                       for (long long n = 0;; ++n) {
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                         db.push(body);
                       }
                       body[0] = kStop;
                       db.push(body);
                       return 0;
                     },
                     false});
  }
  for (int i = 0; i < readers; ++i) {
    roles.push_back({[&](int, const StartFn& start) -> long long {
                       Db db(path);
                       auto deadline = start();
                       long long n = 0;
                       for (;;) {
                         const char first = db.take();
                         if (first == kStop) break;
                         if (first == 0) {  // empty: a polling reader, as SQLite has no blocking read
                           if (Clock::now() >= deadline + std::chrono::seconds(5)) break;
                           std::this_thread::yield();
                           continue;
                         }
                         ++n;
                         if ((n & 15) == 0 && Clock::now() >= deadline) break;
                       }
                       return n;
                     },
                     true});
  }
  Value v = runTeam(roles, seconds, 30);
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());
  return v;
}

}  // namespace bench
