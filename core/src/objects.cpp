// Message storage: one allocation per message (its payload inline), and the flat indexes
// that find messages by uid and by seq.
#include "objects.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/format.h>

namespace ipcfs::detail {

namespace {

// Payloads up to this size are copied into the message's own allocation; larger ones keep
// their buffer (moved, not copied).
constexpr size_t kInlineMax = 4096;

// Bytes to add to the next allocation allocate_shared makes on this thread, and where that
// allocation ends. The engine's mutex is held, and only makeMessage sets it.
thread_local size_t tTailBytes = 0;
thread_local char* tTailEnd = nullptr;

// Lets std::allocate_shared put the message, its reference counts and its payload in one
// block: the payload follows the message, which libstdc++ places last in the block.
template <class T>
struct TailAllocator {
  using value_type = T;
  TailAllocator() = default;
  template <class U>
  TailAllocator(const TailAllocator<U>&) {}  // NOLINT(google-explicit-constructor)
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T) + tTailBytes;
    tTailBytes = 0;
    auto* p = static_cast<char*>(::operator new(bytes));
    tTailEnd = p + bytes;
    return reinterpret_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p); }
  template <class U>
  bool operator==(const TailAllocator<U>&) const {
    return true;
  }
};

}  // namespace

std::shared_ptr<Message> makeMessage(std::string_view payload) {
  if (payload.size() > kInlineMax) return makeMessage(std::string(payload));
  tTailBytes = payload.size();
  auto msg = std::allocate_shared<Message>(TailAllocator<Message>{});
  tTailBytes = 0;
  char* tail = reinterpret_cast<char*>(msg.get() + 1);
  if (tail + payload.size() > tTailEnd) std::abort();  // the block is not laid out as assumed
  if (!payload.empty()) std::memcpy(tail, payload.data(), payload.size());
  msg->inlineSize = static_cast<uint32_t>(payload.size());
  return msg;
}

std::shared_ptr<Message> makeMessage(std::string&& payload) {
  if (payload.size() <= kInlineMax) return makeMessage(std::string_view(payload));
  auto msg = std::make_shared<Message>();
  msg->body() = std::move(payload);
  return msg;
}

std::string seqName(uint64_t seq) { return fmt::format("{:010}", seq); }

std::string Message::name() const { return namedBySeq() ? seqName(seq) : extra->name; }

namespace {

// The seq of a name derived from one (seqName), if `name` is one.
std::optional<uint64_t> seqOfName(std::string_view name) {
  if (name.size() < 10 || name.size() > 20 || (name.size() > 10 && name[0] == '0')) return std::nullopt;
  uint64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

}  // namespace

Message* findByName(const Mailbox& box, std::string_view name) {
  if (!box.byName.empty()) {
    if (auto it = box.byName.find(std::string(name)); it != box.byName.end()) return it->second;
  }
  if (auto seq = seqOfName(name)) {
    Message* m = box.bySeq.find(*seq);
    if (m && m->namedBySeq()) return m;
  }
  return nullptr;
}

void addName(Mailbox& box, Message* msg) {
  if (msg->namedBySeq()) {
    box.bySeq.insert(msg);
  } else {
    box.byName.emplace(msg->extra->name, msg);
  }
}

void eraseName(Mailbox& box, const Message* msg) {
  if (msg->namedBySeq()) {
    box.bySeq.erase(msg);
  } else if (auto it = box.byName.find(msg->extra->name); it != box.byName.end() && it->second == msg) {
    box.byName.erase(it);
  }
}

std::deque<std::shared_ptr<Message>>::iterator queuePosition(Mailbox& box, int64_t order) {
  auto it = std::lower_bound(box.queue.begin(), box.queue.end(), order,
                             [](const std::shared_ptr<Message>& m, int64_t o) { return m->order < o; });
  return it != box.queue.end() && (*it)->order == order ? it : box.queue.end();
}

// ------------------------------------------------------------------ MessageTable

// Robin Hood linear probing: along a probe sequence, entries are ordered by how far they
// sit from their home slot, so a lookup stops at the first entry closer to home than it
// has come, and a deletion shifts entries back only up to the first one at its home (with
// consecutive keys every entry is at home: both take one step).
size_t MessageTable::distance(size_t slot) const {
  const size_t h = home(keyOf(slots_[slot]));
  return slot >= h ? slot - h : slot + slots_.size() - h;
}

size_t MessageTable::slotOf(uint64_t k, const Message* m) const {
  if (size_ == 0) return kNone;
  for (size_t i = home(k), d = 0;; i = next(i), ++d) {
    const Message* at = slots_[i];
    if (!at || distance(i) < d) return kNone;
    if (m ? at == m : keyOf(at) == k) return i;
  }
}

Message* MessageTable::find(uint64_t k) const {
  const size_t i = slotOf(k, nullptr);
  return i == kNone ? nullptr : slots_[i];
}

void MessageTable::insert(Message* m) {
  // At most 7/8 full.
  if ((size_ + 1) * 8 > slots_.size() * 7) rehash(std::max<size_t>(16, slots_.size() * 3 / 2));
  place(m);
  ++size_;
}

void MessageTable::place(Message* m) {
  for (size_t i = home(keyOf(m)), d = 0;; i = next(i), ++d) {
    if (!slots_[i]) {
      slots_[i] = m;
      return;
    }
    if (const size_t at = distance(i); at < d) {
      std::swap(m, slots_[i]);
      d = at;
    }
  }
}

void MessageTable::erase(const Message* m) {
  size_t i = slotOf(keyOf(m), m);
  if (i == kNone) return;
  for (size_t j = next(i); slots_[j] && distance(j) > 0; i = j, j = next(j)) slots_[i] = slots_[j];
  slots_[i] = nullptr;
  --size_;
  if (slots_.size() > 64 && size_ * 8 < slots_.size()) rehash(slots_.size() * 2 / 3);
}

void MessageTable::reserve(size_t n) {
  size_t cap = 16;
  while (n * 8 > cap * 7) cap = cap * 3 / 2;
  if (cap > slots_.size()) rehash(cap);
}

void MessageTable::rehash(size_t capacity) {
  std::vector<Message*> old(capacity, nullptr);
  old.swap(slots_);
  for (Message* m : old)
    if (m) place(m);
}

}  // namespace ipcfs::detail
