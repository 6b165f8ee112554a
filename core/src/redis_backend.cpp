// The Redis backend (--backend redis://...): shared mailboxes and semaphores kept in one
// Redis server or a Redis Cluster, through hiredis.
//
// Connections: a small pool per server, used by whichever thread calls (the engine's remote
// worker, or a FUSE thread for a namespace call), plus one subscriber connection that
// delivers events. Every connection has a connect and reply timeout, so a call never waits
// longer than that; after a failure calls fail fast with EIO for a moment instead of each
// waiting out the timeout again.
//
// Redis Cluster: the slot map comes from CLUSTER SLOTS; a MOVED reply refreshes it and the
// call is retried once (ASK is followed for that one call). hiredis 0.14 (Debian 12) has no
// cluster support of its own; a mailbox's keys share one hash tag, so every script runs on
// one node.
#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "ipcfs/backend.hpp"
#include "redis_scripts.hpp"

namespace ipcfs {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kEvents = "ipcfs:events";
constexpr const char* kMailboxIndex = "ipcfs:mailboxes";
constexpr const char* kSemIndex = "ipcfs:sems";
constexpr const char* kIds = "ipcfs:ids";
constexpr size_t kSlots = 16384;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

// CRC16-CCITT (XMODEM), as Redis Cluster hashes keys.
uint16_t crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char ch : s) {
    crc ^= static_cast<uint16_t>(ch << 8);
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
  }
  return crc;
}

size_t slotOf(std::string_view key) {
  if (auto open = key.find('{'); open != std::string_view::npos) {
    if (auto close = key.find('}', open + 1); close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) % kSlots;
}

std::string str(const redisReply* r) {
  if (!r) return {};
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return {};
}

int64_t num(const redisReply* r) {
  if (!r) return 0;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  int64_t v = 0;
  const std::string s = str(r);
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

int64_t num(std::string_view s) {
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// A message's header: "name/pid/uid/gid/mode/sentNs".
void parseHeader(std::string_view h, RemoteMessage& m) {
  std::array<std::string_view, 6> f{};
  for (size_t i = 0; i < f.size(); ++i) {
    const size_t slash = h.find('/');
    f[i] = h.substr(0, slash);
    if (slash == std::string_view::npos) break;
    h.remove_prefix(slash + 1);
  }
  m.name = std::string(f[0]);
  m.pid = static_cast<uint32_t>(num(f[1]));
  m.uid = static_cast<uint32_t>(num(f[2]));
  m.gid = static_cast<uint32_t>(num(f[3]));
  m.mode = static_cast<uint32_t>(num(f[4]));
  m.sentNs = num(f[5]);
}

// seq, header, payload, redeliveries at `e[0..3]`.
RemoteMessage parseMessage(redisReply* const* e) {
  RemoteMessage m;
  m.seq = static_cast<uint64_t>(num(e[0]));
  parseHeader(str(e[1]), m);
  m.payload = str(e[2]);
  m.redeliveries = static_cast<uint32_t>(num(e[3]));
  return m;
}

// {seq, header, payload, redeliveries} x n
std::vector<RemoteMessage> parseMessages(const redisReply* r) {
  std::vector<RemoteMessage> out;
  if (!r || r->type != REDIS_REPLY_ARRAY) return out;
  for (size_t i = 0; i + 3 < r->elements; i += 4) out.push_back(parseMessage(r->element + i));
  return out;
}

std::string mailboxTag(uint64_t id) { return fmt::format("ipcfs:{{m{}}}", id); }
std::string semKey(uint64_t id) { return fmt::format("ipcfs:{{s{}}}", id); }

std::vector<std::string> mailboxKeys(uint64_t id) {
  const std::string tag = mailboxTag(id);
  std::vector<std::string> keys;
  for (const char* k : {"meta", "q", "fl", "rx", "d", "h", "r", "n", "x", "p"}) keys.push_back(tag + ":" + k);
  return keys;
}

struct Script {
  std::string text;
  std::string sha;  // learned from SCRIPT LOAD; the same on every server
};

struct Server {
  std::string host;
  int port = 0;
  std::mutex mutex;
  std::vector<Context> idle;
};

class RedisBackend final : public Backend {
 public:
  RedisBackend(std::vector<std::pair<std::string, int>> seeds, const RedisOptions& options, std::string url)
      : Backend(options.leaseMs), options_(options), url_(std::move(url)), daemon_(makeDaemonId()) {
    for (auto& [host, port] : seeds) seeds_.push_back(serverFor(host, port));
    using namespace redis;
    const std::string now = kNow, forget = kForget;
    push_.text = now + kPush;
    const std::string reclaimFn = now + kReclaimFn;
    const std::string claimFn = reclaimFn + kClaimFn;
    claim_.text = claimFn + kClaim;
    reclaim_.text = reclaimFn + kReclaim;
    ack_.text = claimFn + kAck;
    giveBack_.text = kGiveBack;
    renew_.text = now + kRenew;
    setWaiting_.text = now + kSetWaiting;
    queued_.text = reclaimFn + kQueued;
    peek_.text = kPeek;
    removeQueued_.text = forget + kRemoveQueued;
    dropMailbox_.text = kDropMailbox;
    stats_.text = reclaimFn + kStats;
    hold_.text = now + kHold;
    bind_.text = now + kBind;
    post_.text = kPost;
    tryWait_.text = kTryWait;
  }

  ~RedisBackend() override { stop(); }

  std::string describe() const override { return url_; }

  // ---- mailboxes/ ----

  Result<std::vector<std::pair<std::string, uint64_t>>> mailboxIndex() override {
    auto r = call(kMailboxIndex, {"HGETALL", kMailboxIndex});
    if (!r) return fail(r.error());
    std::vector<std::pair<std::string, uint64_t>> out;
    for (size_t i = 0; i + 1 < (*r)->elements; i += 2)
      out.emplace_back(str((*r)->element[i]), static_cast<uint64_t>(num((*r)->element[i + 1])));
    return out;
  }

  Result<RemoteMailbox> mailbox(uint64_t id) override {
    const std::string meta = mailboxTag(id) + ":meta";
    auto r = call(meta, {"HGETALL", meta});
    if (!r) return fail(r.error());
    if ((*r)->elements == 0) return fail(ENOENT);
    RemoteMailbox box;
    box.id = id;
    for (size_t i = 0; i + 1 < (*r)->elements; i += 2) {
      const std::string k = str((*r)->element[i]);
      const redisReply* v = (*r)->element[i + 1];
      if (k == "name") box.name = str(v);
      else if (k == "mode") box.mode = static_cast<uint32_t>(num(v));
      else if (k == "uid") box.uid = static_cast<uint32_t>(num(v));
      else if (k == "gid") box.gid = static_cast<uint32_t>(num(v));
      else if (k == "ctime") box.ctimeNs = num(v);
      else if (k == "mtime") box.mtimeNs = num(v);
      else if (k == "capacity") box.capacity = num(v) < 0 ? kUnlimited : static_cast<uint64_t>(num(v));
      else if (k == "policy") box.policy = str(v);
      else if (k == "maxmsg") box.maxMsgSize = static_cast<uint64_t>(num(v));
    }
    return box;
  }

  Result<RemoteMailbox> createMailbox(RemoteMailbox box) override {
    auto id = call(kIds, {"INCR", kIds});
    if (!id) return fail(id.error());
    box.id = static_cast<uint64_t>(num(id->get()));
    if (auto w = writeMeta(box, true); !w) return fail(w.error());
    auto taken = call(kMailboxIndex, {"HSETNX", kMailboxIndex, box.name, std::to_string(box.id)});
    if (!taken) return fail(taken.error());
    if (num(taken->get()) == 0) {
      (void)runScript(dropMailbox_, mailboxKeys(box.id), {std::to_string(box.id)});
      return fail(EEXIST);
    }
    publish("n");
    return box;
  }

  Status removeMailbox(const RemoteMailbox& box) override {
    auto owner = call(kMailboxIndex, {"HGET", kMailboxIndex, box.name});
    if (!owner) return fail(owner.error());
    if (static_cast<uint64_t>(num(owner->get())) == box.id) {
      if (auto r = call(kMailboxIndex, {"HDEL", kMailboxIndex, box.name}); !r) return fail(r.error());
    }
    if (auto r = runScript(dropMailbox_, mailboxKeys(box.id), {std::to_string(box.id)}); !r) return fail(r.error());
    publish("n");
    return {};
  }

  Status renameMailbox(uint64_t id, const std::string& from, const std::string& to) override {
    auto taken = call(kMailboxIndex, {"HSETNX", kMailboxIndex, to, std::to_string(id)});
    if (!taken) return fail(taken.error());
    if (num(taken->get()) == 0) return fail(EEXIST);
    if (auto r = call(kMailboxIndex, {"HDEL", kMailboxIndex, from}); !r) return fail(r.error());
    const std::string meta = mailboxTag(id) + ":meta";
    if (auto r = call(meta, {"HSET", meta, "name", to}); !r) return fail(r.error());
    publish("n");
    return {};
  }

  Status updateMailbox(const RemoteMailbox& box, const std::vector<Field>& fields) override {
    const std::string meta = mailboxTag(box.id) + ":meta";
    std::vector<std::string> args{"HSET", meta};
    auto put = [&](const char* k, std::string v) {
      args.emplace_back(k);
      args.push_back(std::move(v));
    };
    for (Field f : fields) {
      switch (f) {
        case Field::Mode: put("mode", std::to_string(box.mode)); break;
        case Field::Owner:
          put("uid", std::to_string(box.uid));
          put("gid", std::to_string(box.gid));
          break;
        case Field::Times:
          put("ctime", std::to_string(box.ctimeNs));
          put("mtime", std::to_string(box.mtimeNs));
          break;
        case Field::Capacity: put("capacity", box.capacity == kUnlimited ? "-1" : std::to_string(box.capacity)); break;
        case Field::Policy: put("policy", box.policy); break;
        case Field::MaxMsgSize: put("maxmsg", std::to_string(box.maxMsgSize)); break;
      }
    }
    if (args.size() == 2) return {};
    if (auto r = call(meta, std::move(args)); !r) return fail(r.error());
    if (std::find(fields.begin(), fields.end(), Field::Policy) != fields.end()) {
      // A new policy starts with nobody holding or bound, as on one host.
      const std::string tag = mailboxTag(box.id);
      if (auto r = call(tag, {"DEL", tag + ":x", tag + ":p"}); !r) return fail(r.error());
    }
    publish(fmt::format("c {}", box.id));
    return {};
  }

  // ---- messages ----

  Result<Pushed> push(uint64_t box, const std::vector<RemoteMessage>& msgs) override {
    std::vector<std::string> args{std::to_string(box), std::to_string(msgs.size())};
    args.reserve(2 + msgs.size() * 8);
    for (const auto& m : msgs) {
      args.push_back(m.name);
      args.push_back(m.payload);
      args.push_back(std::to_string(m.pid));
      args.push_back(std::to_string(m.uid));
      args.push_back(std::to_string(m.gid));
      args.push_back(std::to_string(m.mode));
      args.push_back(std::to_string(m.sentNs));
      args.push_back(m.receipt ? "1" : "0");
    }
    auto r = runScript(push_, mailboxKeys(box), std::move(args));
    if (!r) return fail(r.error());
    const redisReply* a = r->get();
    if (a->type != REDIS_REPLY_ARRAY || a->elements == 0) return fail(EIO);
    Pushed out;
    switch (num(a->element[0])) {
      case 0: break;
      case 1: out.refused = EAGAIN; break;
      case 2: return fail(EIDRM);
      default: out.refused = EEXIST; break;
    }
    for (size_t i = 1; i + 1 < a->elements; i += 2) out.seqs.push_back(static_cast<uint64_t>(num(a->element[i])));
    return out;
  }

  Result<std::vector<RemoteMessage>> claim(uint64_t box, size_t max) override {
    auto r = runScript(claim_, mailboxKeys(box), {std::to_string(box), std::to_string(max), std::to_string(leaseMs())});
    if (!r) return fail(r.error());
    return parseMessages(r->get());
  }

  Status reclaim(uint64_t box) override {
    auto r = runScript(reclaim_, mailboxKeys(box), {std::to_string(box)});
    if (!r) return fail(r.error());
    return {};
  }

  Result<Acked> ack(uint64_t box, const std::vector<std::pair<uint64_t, uint32_t>>& taken, size_t thenClaim) override {
    std::vector<std::string> args{std::to_string(box), std::to_string(thenClaim), std::to_string(leaseMs())};
    for (auto [seq, reader] : taken) {
      args.push_back(std::to_string(seq));
      args.push_back(std::to_string(reader));
    }
    auto r = runScript(ack_, mailboxKeys(box), std::move(args));
    if (!r) return fail(r.error());
    const redisReply* a = r->get();
    if (a->type != REDIS_REPLY_ARRAY || a->elements == 0) return fail(EIO);
    Acked out;
    out.lost = static_cast<size_t>(num(a->element[0]));
    for (size_t i = 1; i + 3 < a->elements; i += 4) out.claimed.push_back(parseMessage(a->element + i));
    return out;
  }

  Status giveBack(uint64_t box, uint64_t seq, bool redelivered) override {
    auto r = runScript(giveBack_, mailboxKeys(box), {std::to_string(box), std::to_string(seq), redelivered ? "1" : "0"});
    if (!r) return fail(r.error());
    return {};
  }

  Status renew(uint64_t box, const std::vector<uint64_t>& seqs) override {
    std::vector<std::string> args{std::to_string(leaseMs())};
    for (uint64_t s : seqs) args.push_back(std::to_string(s));
    auto r = runScript(renew_, mailboxKeys(box), std::move(args));
    if (!r) return fail(r.error());
    return {};
  }

  Status setWaiting(uint64_t box, uint32_t receivers) override {
    auto r = runScript(setWaiting_, mailboxKeys(box),
                       {std::to_string(box), daemon_, std::to_string(receivers), std::to_string(leaseMs())});
    if (!r) return fail(r.error());
    return {};
  }

  Result<std::vector<RemoteMessage>> queued(uint64_t box, size_t max) override {
    auto r = runScript(queued_, mailboxKeys(box), {std::to_string(max), std::to_string(box)});
    if (!r) return fail(r.error());
    return parseMessages(r->get());
  }

  Result<RemoteMessage> peek(uint64_t box, const std::string& name) override {
    auto r = runScript(peek_, mailboxKeys(box), {name});
    if (!r) return fail(r.error());
    auto msgs = parseMessages(r->get());
    if (msgs.empty()) return fail(ENOENT);
    return std::move(msgs.front());
  }

  Status removeQueued(uint64_t box, const std::string& name) override {
    auto r = runScript(removeQueued_, mailboxKeys(box), {std::to_string(box), name});
    if (!r) return fail(r.error());
    if (num(r->get()) == 0) return fail(ENOENT);
    return {};
  }

  Result<RemoteStats> stats(uint64_t box) override {
    auto r = runScript(stats_, mailboxKeys(box), {std::to_string(box)});
    if (!r) return fail(r.error());
    const redisReply* a = r->get();
    if (a->type != REDIS_REPLY_ARRAY || a->elements < 6) return fail(EIO);
    RemoteStats st;
    st.messages = static_cast<uint64_t>(num(a->element[0]));
    st.bytes = static_cast<uint64_t>(num(a->element[1]));
    st.claimed = static_cast<uint64_t>(num(a->element[2]));
    st.sent = static_cast<uint64_t>(num(a->element[3]));
    st.received = static_cast<uint64_t>(num(a->element[4]));
    st.redelivered = static_cast<uint64_t>(num(a->element[5]));
    return st;
  }

  Result<bool> hold(uint64_t box, uint32_t pid) override {
    auto r = runScript(hold_, mailboxKeys(box), {fmt::format("{}:{}", daemon_, pid), std::to_string(leaseMs())});
    if (!r) return fail(r.error());
    return num(r->get()) == 1;
  }

  Result<bool> bind(uint64_t box, uint32_t pid) override {
    auto r = runScript(bind_, mailboxKeys(box), {fmt::format("{}:{}", daemon_, pid), std::to_string(leaseMs())});
    if (!r) return fail(r.error());
    return num(r->get()) == 1;
  }

  Status unhold(uint64_t box, uint32_t pid) override {
    const std::string x = mailboxTag(box) + ":x";
    if (auto r = call(x, {"HDEL", x, fmt::format("{}:{}", daemon_, pid)}); !r) return fail(r.error());
    return {};
  }

  Result<uint64_t> queueLength(uint64_t box) override {
    const std::string q = mailboxTag(box) + ":q";
    auto r = call(q, {"LLEN", q});
    if (!r) return fail(r.error());
    return static_cast<uint64_t>(num(r->get()));
  }

  // ---- sem/ ----

  Result<std::vector<RemoteSemaphore>> semaphores() override {
    auto r = call(kSemIndex, {"HGETALL", kSemIndex});
    if (!r) return fail(r.error());
    std::vector<RemoteSemaphore> out;
    for (size_t i = 0; i + 1 < (*r)->elements; i += 2) {
      auto sem = semaphore(static_cast<uint64_t>(num((*r)->element[i + 1])));
      if (sem) out.push_back(std::move(*sem));
      else if (sem.error() != std::errc::no_such_file_or_directory) return fail(sem.error());
    }
    return out;
  }

  Result<RemoteSemaphore> semaphore(uint64_t id) override {
    const std::string key = semKey(id);
    auto r = call(key, {"HGETALL", key});
    if (!r) return fail(r.error());
    if ((*r)->elements == 0) return fail(ENOENT);
    RemoteSemaphore sem;
    sem.id = id;
    for (size_t i = 0; i + 1 < (*r)->elements; i += 2) {
      const std::string k = str((*r)->element[i]);
      const redisReply* v = (*r)->element[i + 1];
      if (k == "name") sem.name = str(v);
      else if (k == "mode") sem.mode = static_cast<uint32_t>(num(v));
      else if (k == "uid") sem.uid = static_cast<uint32_t>(num(v));
      else if (k == "gid") sem.gid = static_cast<uint32_t>(num(v));
      else if (k == "mtime") sem.mtimeNs = num(v);
      else if (k == "value") sem.value = static_cast<uint64_t>(num(v));
    }
    return sem;
  }

  Result<RemoteSemaphore> createSemaphore(RemoteSemaphore sem) override {
    auto id = call(kIds, {"INCR", kIds});
    if (!id) return fail(id.error());
    sem.id = static_cast<uint64_t>(num(id->get()));
    const std::string key = semKey(sem.id);
    auto w = call(key, {"HSET", key, "name", sem.name, "mode", std::to_string(sem.mode), "uid", std::to_string(sem.uid),
                        "gid", std::to_string(sem.gid), "mtime", std::to_string(sem.mtimeNs), "value",
                        std::to_string(sem.value)});
    if (!w) return fail(w.error());
    auto taken = call(kSemIndex, {"HSETNX", kSemIndex, sem.name, std::to_string(sem.id)});
    if (!taken) return fail(taken.error());
    if (num(taken->get()) == 0) {
      (void)call(key, {"DEL", key});
      return fail(EEXIST);
    }
    publish("n");
    return sem;
  }

  Status removeSemaphore(const RemoteSemaphore& sem) override {
    auto owner = call(kSemIndex, {"HGET", kSemIndex, sem.name});
    if (!owner) return fail(owner.error());
    if (static_cast<uint64_t>(num(owner->get())) == sem.id) {
      if (auto r = call(kSemIndex, {"HDEL", kSemIndex, sem.name}); !r) return fail(r.error());
    }
    const std::string key = semKey(sem.id);
    if (auto r = call(key, {"DEL", key}); !r) return fail(r.error());
    publish("n");
    return {};
  }

  // The new name is taken first (so two renames to one name cannot both win), then the
  // semaphore says its new name, then the old one goes: a listing in between shows it once
  // (by id) under one of the two names.
  Status renameSemaphore(uint64_t id, const std::string& from, const std::string& to) override {
    auto taken = call(kSemIndex, {"HSETNX", kSemIndex, to, std::to_string(id)});
    if (!taken) return fail(taken.error());
    if (num(taken->get()) == 0) return fail(EEXIST);
    const std::string key = semKey(id);
    if (auto r = call(key, {"HSET", key, "name", to}); !r) return fail(r.error());
    auto owner = call(kSemIndex, {"HGET", kSemIndex, from});
    if (!owner) return fail(owner.error());
    if (static_cast<uint64_t>(num(owner->get())) == id) {
      if (auto r = call(kSemIndex, {"HDEL", kSemIndex, from}); !r) return fail(r.error());
    }
    publish("n");
    return {};
  }

  Status updateSemaphore(const RemoteSemaphore& sem) override {
    const std::string key = semKey(sem.id);
    auto w = call(key, {"HSET", key, "mode", std::to_string(sem.mode), "uid", std::to_string(sem.uid), "gid",
                        std::to_string(sem.gid), "mtime", std::to_string(sem.mtimeNs)});
    if (!w) return fail(w.error());
    publish("n");
    return {};
  }

  Result<uint64_t> post(uint64_t sem, uint64_t n) override {
    const auto nowNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
    auto r = runScript(post_, {semKey(sem)},
                       {std::to_string(sem), std::to_string(n), std::to_string(kSemValueMax), std::to_string(nowNs)});
    if (!r) return fail(r.error());
    const int64_t v = num(r->get());
    if (v == -1) return fail(EOVERFLOW);
    if (v == -2) return fail(EIDRM);
    return static_cast<uint64_t>(v);
  }

  Result<std::optional<uint64_t>> tryWait(uint64_t sem) override {
    auto r = runScript(tryWait_, {semKey(sem)}, {});
    if (!r) return fail(r.error());
    const int64_t v = num(r->get());
    if (v == -2) return fail(EIDRM);
    if (v < 0) return std::optional<uint64_t>();
    return std::optional<uint64_t>(static_cast<uint64_t>(v));
  }

  // ---- events ----

  void listen(std::function<void(const BackendEvent&)> onEvent) override {
    onEvent_ = std::move(onEvent);
    listener_ = std::thread([this] { listenLoop(); });
  }

  void stop() override {
    stopping_ = true;
    if (listener_.joinable()) listener_.join();
  }

 private:
  static std::string makeDaemonId() {
    char host[256] = {};
    (void)gethostname(host, sizeof host - 1);
    const auto t = std::chrono::system_clock::now().time_since_epoch().count();
    return fmt::format("{}:{}:{:x}", host, getpid(), static_cast<uint64_t>(t));
  }

  Server* serverFor(const std::string& host, int port) {
    for (auto& s : servers_)
      if (s->host == host && s->port == port) return s.get();
    servers_.push_back(std::make_unique<Server>());
    servers_.back()->host = host;
    servers_.back()->port = port;
    return servers_.back().get();
  }

  timeval timeout() const {
    return timeval{static_cast<time_t>(options_.timeoutMs / 1000), static_cast<suseconds_t>(options_.timeoutMs % 1000) * 1000};
  }

  Context connect(const Server& s) const {
    Context c(redisConnectWithTimeout(s.host.c_str(), s.port, timeout()));
    if (!c || c->err) return nullptr;
    if (redisSetTimeout(c.get(), timeout()) != REDIS_OK) return nullptr;
    return c;
  }

  bool down() const { return Clock::now().time_since_epoch().count() < downUntil_.load(); }
  bool failing() const override { return failing_.load(std::memory_order_relaxed); }
  void markDown() {
    failing_.store(true, std::memory_order_relaxed);
    downUntil_ = (Clock::now() + std::chrono::milliseconds(std::min<uint32_t>(options_.timeoutMs, 50))).time_since_epoch().count();
  }

  // Learns the slot map (cluster) or that the first reachable seed is the only server.
  // REQUIRES: topologyMutex_ held.
  bool refreshTopology() {
    for (Server* seed : seeds_) {
      Context c = connect(*seed);
      if (!c) continue;
      Reply r(static_cast<redisReply*>(redisCommand(c.get(), "CLUSTER SLOTS")));
      if (!r) continue;
      if (r->type == REDIS_REPLY_ERROR) {  // not a cluster
        cluster_ = false;
        single_ = seed;
        return true;
      }
      if (r->type != REDIS_REPLY_ARRAY) continue;
      slots_.fill(nullptr);
      for (size_t i = 0; i < r->elements; ++i) {
        const redisReply* range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
        const redisReply* master = range->element[2];
        if (master->type != REDIS_REPLY_ARRAY || master->elements < 2) continue;
        std::string host = str(master->element[0]);
        if (host.empty()) host = seed->host;
        Server* s = serverFor(host, static_cast<int>(num(master->element[1])));
        for (int64_t slot = num(range->element[0]); slot <= num(range->element[1]) && slot < static_cast<int64_t>(kSlots); ++slot)
          slots_[static_cast<size_t>(slot)] = s;
      }
      cluster_ = true;
      return true;
    }
    return false;
  }

  Server* serverForKey(std::string_view key, bool refresh) {
    std::lock_guard lock(topologyMutex_);
    if ((refresh || (!single_ && !cluster_)) && !refreshTopology()) return nullptr;
    if (!cluster_) return single_;
    return slots_[slotOf(key)];
  }

  // `reused`: taken from the pool (it may have been closed by a server that restarted since).
  Context acquire(Server& s, bool* reused = nullptr) {
    {
      std::lock_guard lock(s.mutex);
      if (!s.idle.empty()) {
        Context c = std::move(s.idle.back());
        s.idle.pop_back();
        if (reused) *reused = true;
        return c;
      }
    }
    if (reused) *reused = false;
    return connect(s);
  }

  // A pooled connection the server closed (it restarted, or dropped idle clients): nothing
  // was executed on it, so the command may go again on a new one.
  static bool closedByServer(const redisContext* c) {
    return c->err == REDIS_ERR_EOF || (c->err == REDIS_ERR_IO && (errno == ECONNRESET || errno == EPIPE));
  }

  static void giveBackConnection(Server& s, Context c) {
    std::lock_guard lock(s.mutex);
    if (s.idle.size() < 16) s.idle.push_back(std::move(c));
  }

  static Reply command(redisContext* c, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
  }

  // One command on the server that holds `key`: follows MOVED/ASK once, reloads scripts the
  // server forgot (`script`), and turns every failure to reach a server into EIO.
  Result<Reply> call(std::string_view key, std::vector<std::string> args, Script* script = nullptr) {
    if (down()) return fail(EIO);
    bool refresh = false;
    Server* ask = nullptr;
    for (int attempt = 0; attempt < 4; ++attempt) {
      Server* s = ask ? ask : serverForKey(key, refresh);
      if (!s) {
        markDown();
        return fail(EIO);
      }
      bool reused = false;
      Context c = acquire(*s, &reused);
      if (!c) {
        markDown();
        return fail(EIO);
      }
      if (ask) {
        Reply asking(static_cast<redisReply*>(redisCommand(c.get(), "ASKING")));
        if (!asking) {
          markDown();
          return fail(EIO);
        }
      }
      if (script) {
        args[1] = shaOf(*script);
        if (args[1].empty()) {
          if (!loadScript(c.get(), *script)) {
            markDown();
            return fail(EIO);
          }
          args[1] = shaOf(*script);
        }
      }
      Reply r = command(c.get(), args);
      if (!r && reused && closedByServer(c.get())) {
        if ((c = connect(*s))) r = command(c.get(), args);
      }
      if (!r) {
        markDown();
        return fail(EIO);
      }
      failing_.store(false, std::memory_order_relaxed);
      ask = nullptr;
      if (r->type == REDIS_REPLY_ERROR) {
        const std::string err = str(r.get());
        if (err.starts_with("MOVED")) {
          giveBackConnection(*s, std::move(c));
          refresh = true;
          continue;
        }
        if (err.starts_with("ASK")) {
          const auto space = err.rfind(' ');
          const auto colon = err.rfind(':');
          if (space != std::string::npos && colon != std::string::npos && colon > space) {
            std::lock_guard lock(topologyMutex_);
            ask = serverFor(err.substr(space + 1, colon - space - 1), static_cast<int>(num(err.substr(colon + 1))));
          }
          giveBackConnection(*s, std::move(c));
          continue;
        }
        if (err.starts_with("NOSCRIPT") && script) {
          if (!loadScript(c.get(), *script)) {
            markDown();
            return fail(EIO);
          }
          giveBackConnection(*s, std::move(c));
          continue;
        }
        giveBackConnection(*s, std::move(c));
        return fail(EIO);  // a script error or a wrong-type key: nothing a caller can fix
      }
      refresh = false;
      giveBackConnection(*s, std::move(c));
      return r;
    }
    return fail(EIO);
  }

  bool loadScript(redisContext* c, Script& script) {
    Reply r = command(c, {"SCRIPT", "LOAD", script.text});
    if (!r || r->type != REDIS_REPLY_STRING) return false;
    std::lock_guard lock(scriptMutex_);
    script.sha = str(r.get());
    return true;
  }

  std::string shaOf(const Script& script) {
    std::lock_guard lock(scriptMutex_);
    return script.sha;
  }

  Result<Reply> runScript(Script& script, const std::vector<std::string>& keys, std::vector<std::string> argv) {
    std::vector<std::string> args{"EVALSHA", "", std::to_string(keys.size())};
    args.insert(args.end(), keys.begin(), keys.end());
    for (auto& a : argv) args.push_back(std::move(a));
    return call(keys.front(), std::move(args), &script);
  }

  Status writeMeta(const RemoteMailbox& box, bool fresh) {
    const std::string meta = mailboxTag(box.id) + ":meta";
    std::vector<std::string> args{"HSET", meta, "name", box.name, "mode", std::to_string(box.mode), "uid",
                                  std::to_string(box.uid), "gid", std::to_string(box.gid), "ctime",
                                  std::to_string(box.ctimeNs), "mtime", std::to_string(box.mtimeNs), "capacity",
                                  box.capacity == kUnlimited ? "-1" : std::to_string(box.capacity), "policy",
                                  box.policy, "maxmsg", std::to_string(box.maxMsgSize)};
    if (fresh) {
      for (const char* k : {"nextseq", "sent", "received", "redelivered"}) {
        args.push_back(k);
        args.push_back("0");
      }
    }
    auto r = call(meta, std::move(args));
    if (!r) return fail(r.error());
    return {};
  }

  void publish(const std::string& what) { (void)call(kEvents, {"PUBLISH", kEvents, what}); }

  // The subscriber: one connection to any reachable server (a cluster broadcasts every
  // PUBLISH to every node), polled so that stop() is seen within a quarter second.
  void listenLoop() {
    bool up = false;
    size_t next = 0;
    while (!stopping_) {
      Context c;
      for (size_t i = 0; i < seeds_.size() && !c; ++i) c = connect(*seeds_[(next + i) % seeds_.size()]);
      ++next;
      if (c) {
        Reply r = command(c.get(), {"SUBSCRIBE", kEvents});
        if (!r) c.reset();
      }
      if (!c) {
        if (up || !announcedDown_) onEvent_({BackendEvent::Kind::Down, 0});
        up = false;
        announcedDown_ = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        continue;
      }
      up = true;
      downUntil_ = 0;
      onEvent_({BackendEvent::Kind::Up, 0});
      while (!stopping_) {
        pollfd p{c->fd, POLLIN, 0};
        const int n = ::poll(&p, 1, 250);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || (n > 0 && redisBufferRead(c.get()) != REDIS_OK)) break;
        bool broken = false;
        for (;;) {
          void* raw = nullptr;
          if (redisGetReplyFromReader(c.get(), &raw) != REDIS_OK) {
            broken = true;
            break;
          }
          if (!raw) break;
          Reply msg(static_cast<redisReply*>(raw));
          if (msg->type == REDIS_REPLY_ARRAY && msg->elements == 3 && str(msg->element[0]) == "message")
            deliver(str(msg->element[2]));
        }
        if (broken) break;
      }
      if (!stopping_) {
        markDown();
        onEvent_({BackendEvent::Kind::Down, 0});
        up = false;
      }
    }
  }

  void deliver(std::string_view text) {
    if (text.empty()) return;
    BackendEvent e;
    switch (text.front()) {
      case 'm': e.kind = BackendEvent::Kind::Message; break;
      case 'r': e.kind = BackendEvent::Kind::Room; break;
      case 'c': e.kind = BackendEvent::Kind::Settings; break;
      case 's': e.kind = BackendEvent::Kind::Semaphore; break;
      case 'd': {  // "d ID SEQ PID"
        e.kind = BackendEvent::Kind::Delivered;
        std::string_view rest = text.substr(std::min<size_t>(2, text.size()));
        const size_t a = rest.find(' ');
        const size_t b = a == std::string_view::npos ? a : rest.find(' ', a + 1);
        if (b == std::string_view::npos) return;
        e.id = static_cast<uint64_t>(num(rest.substr(0, a)));
        e.seq = static_cast<uint64_t>(num(rest.substr(a + 1, b - a - 1)));
        e.pid = static_cast<uint32_t>(num(rest.substr(b + 1)));
        onEvent_(e);
        return;
      }
      default: e.kind = BackendEvent::Kind::Namespace; break;
    }
    if (text.size() > 2) e.id = static_cast<uint64_t>(num(text.substr(2)));
    onEvent_(e);
  }

  const RedisOptions options_;
  const std::string url_;
  const std::string daemon_;
  std::mutex topologyMutex_;
  std::vector<std::unique_ptr<Server>> servers_;  // GUARDED_BY(topologyMutex_) once running
  std::vector<Server*> seeds_;
  bool cluster_ = false;      // GUARDED_BY(topologyMutex_)
  Server* single_ = nullptr;  // GUARDED_BY(topologyMutex_)
  std::array<Server*, kSlots> slots_{};  // GUARDED_BY(topologyMutex_)
  std::mutex scriptMutex_;
  Script push_, claim_, reclaim_, hold_, bind_, ack_, giveBack_, renew_, setWaiting_, queued_, peek_, removeQueued_, dropMailbox_, stats_, post_,
      tryWait_;
  std::atomic<int64_t> downUntil_{0};
  std::function<void(const BackendEvent&)> onEvent_;
  std::thread listener_;
  std::atomic<bool> stopping_{false};
  bool announcedDown_ = false;
  std::atomic<bool> failing_{false};  // the last command did not reach a server
};

}  // namespace

std::expected<std::shared_ptr<Backend>, std::string> makeRedisBackend(const std::string& url,
                                                                      const RedisOptions& options) {
  constexpr std::string_view scheme = "redis://";
  if (!std::string_view(url).starts_with(scheme)) return std::unexpected("backend '" + url + "': expected redis://HOST:PORT");
  std::vector<std::pair<std::string, int>> seeds;
  std::string_view rest = std::string_view(url).substr(scheme.size());
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view one = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (one.ends_with('/')) one.remove_suffix(1);
    const size_t colon = one.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      return std::unexpected("backend '" + url + "': '" + std::string(one) + "' is not HOST:PORT");
    int port = 0;
    const std::string_view p = one.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc{} || end != p.data() + p.size() || port <= 0 || port > 65535)
      return std::unexpected("backend '" + url + "': bad port '" + std::string(p) + "'");
    std::string host(one.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    seeds.emplace_back(std::move(host), port);
  }
  if (seeds.empty()) return std::unexpected("backend '" + url + "': no HOST:PORT given");
  return std::make_shared<RedisBackend>(std::move(seeds), options, url);
}

}  // namespace ipcfs
