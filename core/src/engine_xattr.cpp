// user.ipc.* extended attributes: settings of mailboxes, facts about messages.
#include <cerrno>
#include <optional>
#include <string>

#include "decimal.hpp"
#include "ipcfs/engine.hpp"
#include "ipcfs/inode.hpp"
#include "objects.hpp"

namespace ipcfs {

namespace {

constexpr std::string_view kMailboxAttrs[] = {"user.ipc.id", "user.ipc.max_msg_size", "user.ipc.capacity",
                                              "user.ipc.policy"};
constexpr std::string_view kMessageAttrs[] = {"user.ipc.seq", "user.ipc.sender_pid", "user.ipc.redeliveries"};

template <size_t N>
bool contains(const std::string_view (&names)[N], std::string_view name) {
  for (auto n : names)
    if (n == name) return true;
  return false;
}

std::string capacityText(uint64_t capacity) {
  return capacity == kUnlimited ? std::string("unlimited") : std::to_string(capacity);
}

std::optional<uint64_t> parseCapacity(std::string_view value) {
  std::string_view v = value;
  if (!v.empty() && v.back() == '\n') v.remove_suffix(1);
  if (v == "unlimited") return kUnlimited;
  auto n = parseDecimal(value);
  if (!n || *n == kUnlimited) return std::nullopt;
  return n;
}

std::optional<detail::Policy> parsePolicy(std::string_view value) {
  if (!value.empty() && value.back() == '\n') value.remove_suffix(1);
  if (value == "any") return detail::Policy::Any;
  if (value == "exclusive") return detail::Policy::Exclusive;
  if (value == "pair") return detail::Policy::Pair;
  return std::nullopt;
}

template <size_t N>
std::string joinNul(const std::string_view (&names)[N]) {
  std::string out;
  for (auto n : names) {
    out.append(n);
    out.push_back('\0');
  }
  return out;
}

}  // namespace

Result<std::string> Engine::getxattr(uint64_t ino, std::string_view name) {
  if (backend_) {
    if (auto fresh = refreshRemote(ino); !fresh) return fail(fresh.error());
  }
  std::lock_guard lock(mutex_);
  if (auto box = mailboxByIno(ino)) {
    if (name == "user.ipc.id") return std::to_string(box->id);
    if (name == "user.ipc.max_msg_size") return std::to_string(box->maxMsgSize);
    if (name == "user.ipc.capacity") return capacityText(box->capacity);
    if (name == "user.ipc.policy") return std::string(policyName(box->policy));
    return fail(ENODATA);
  }
  if (ino::kindOf(ino) == ino::Kind::Semaphore) {
    auto it = semaphoresById_.find(ino::idOf(ino));
    if (it == semaphoresById_.end()) return fail(ENOENT);
    if (name == "user.ipc.value") return std::to_string(it->second->value);
    return fail(ENODATA);
  }
  if (ino::kindOf(ino) == ino::Kind::Message) {
    const detail::Message* found = messages_->find(ino::idOf(ino));
    if (!found) return fail(ENOENT);
    const detail::Message& msg = *found;
    if (name == "user.ipc.seq") return std::to_string(msg.seq);
    if (name == "user.ipc.sender_pid") return std::to_string(msg.senderPid);
    if (name == "user.ipc.redeliveries") return std::to_string(msg.redeliveries());
    return fail(ENODATA);
  }
  if (!statOf(ino)) return fail(ENOENT);
  return fail(ENODATA);
}

Result<std::string> Engine::listxattr(uint64_t ino) {
  std::lock_guard lock(mutex_);
  if (mailboxByIno(ino)) return joinNul(kMailboxAttrs);
  if (ino::kindOf(ino) == ino::Kind::Semaphore) {
    if (!semaphoresById_.contains(ino::idOf(ino))) return fail(ENOENT);
    return std::string("user.ipc.value", sizeof "user.ipc.value");
  }
  if (ino::kindOf(ino) == ino::Kind::Message) {
    if (!messages_->contains(ino::idOf(ino))) return fail(ENOENT);
    return joinNul(kMessageAttrs);
  }
  if (!statOf(ino)) return fail(ENOENT);
  return std::string{};
}

Status Engine::setxattr(uint64_t ino, std::string_view name, std::string_view value) {
  After after;
  std::optional<RemoteMailbox> shared;  // --backend: the values set, taken with the change
  Status result = [&]() -> Status {
    std::lock_guard lock(mutex_);
    auto box = mailboxByIno(ino);
    if (!box) return setNodeXattr(ino, name);
    auto done = [&]() -> Status {
      if (box->remote) shared = remoteRecord(*box);
      return {};
    };
    if (name == "user.ipc.max_msg_size") {
      auto v = parseDecimal(value);
      if (!v || *v > kMaxMaxMsgSize) return fail(EINVAL);
      box->maxMsgSize = *v;
      if (journal_) journalPut(*box);
      return done();
    }
    if (name == "user.ipc.capacity") {
      auto v = parseCapacity(value);
      if (!v) return fail(EINVAL);
      box->capacity = *v;
      if (journal_) journalPut(*box);
      dispatch(*box, after);  // more room lets blocked senders in
      return done();
    }
    if (name == "user.ipc.policy") {
      auto p = parsePolicy(value);
      if (!p) return fail(EINVAL);
      // Applies to later opens; files already open keep working.
      box->pair.clear();
      box->policy = *p;
      if (journal_) journalPut(*box);
      return done();
    }
    return fail(contains(kMailboxAttrs, name) ? EPERM : ENOTSUP);
  }();
  commitSync(after);
  if (result && shared) {  // every host sees it
    const auto field = name == "user.ipc.capacity" ? Backend::Field::Capacity
                       : name == "user.ipc.policy" ? Backend::Field::Policy
                                                   : Backend::Field::MaxMsgSize;
    return backend_->updateMailbox(*shared, {field});
  }
  return result;
}

// REQUIRES: mutex_ held.
Status Engine::setNodeXattr(uint64_t ino, std::string_view name) {
  if (ino::kindOf(ino) == ino::Kind::Semaphore) {
    if (!semaphoresById_.contains(ino::idOf(ino))) return fail(ENOENT);
    return fail(name == "user.ipc.value" ? EPERM : ENOTSUP);
  }
  if (ino::kindOf(ino) == ino::Kind::Message) {
    if (!messages_->contains(ino::idOf(ino))) return fail(ENOENT);
    return fail(contains(kMessageAttrs, name) ? EPERM : ENOTSUP);
  }
  if (!statOf(ino)) return fail(ENOENT);
  return fail(ENOTSUP);
}

Status Engine::removexattr(uint64_t ino, std::string_view name) {
  std::lock_guard lock(mutex_);
  const bool known = (mailboxByIno(ino) && contains(kMailboxAttrs, name)) ||
                     (ino::kindOf(ino) == ino::Kind::Message && contains(kMessageAttrs, name));
  return fail(known ? EPERM : ENODATA);
}

}  // namespace ipcfs
