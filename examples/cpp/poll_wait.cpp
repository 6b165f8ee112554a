// Wait on several ipcfs mailboxes at once with poll(2) and print messages as they arrive
// (C++23, POSIX calls only).
//
//     poll_wait -n N MAILBOX_DIR [MAILBOX_DIR ...]
//
// Each mailbox's .receive is opened once with O_NONBLOCK; poll() reports POLLIN on it
// while a message is waiting. On each readiness event one whole message is taken and
// printed as "MAILBOX: payload" (one trailing newline of the payload dropped); the
// program exits after N messages. If another receiver was faster, the read finds the
// mailbox empty and fails with EAGAIN: that event is skipped.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Owns one file descriptor and closes it when it goes out of scope.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }

    static Fd open(const fs::path& path, int flags) {
        const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
        if (fd < 0) throw_errno("open " + path.string());
        return Fd(fd);
    }

    [[nodiscard]] int get() const noexcept { return fd_; }

private:
    void reset() noexcept {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }
    int fd_ = -1;
};

struct Mailbox {
    std::string name;
    Fd receive;
};

// The mailbox's name: the last component of its path, ignoring a trailing slash.
std::string name_of(fs::path path) {
    if (!path.has_filename()) path = path.parent_path();
    return path.filename().string();
}

// Takes one whole message from a non-blocking .receive, or nothing if the mailbox was
// empty (EAGAIN before the first byte: another receiver was faster).
std::optional<std::string> try_receive(const Fd& fd) {
    std::string message;
    std::array<char, 64 * 1024> chunk{};
    for (;;) {
        const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
        if (n > 0) {
            message.append(chunk.data(), static_cast<std::size_t>(n));
        } else if (n == 0) {
            return message;  // end of message
        } else if (errno == EAGAIN && message.empty()) {
            return std::nullopt;
        } else if (errno != EINTR) {
            throw_errno("read");  // EAGAIN mid-message is not expected: messages arrive whole
        }
    }
}

void poll_wait(std::span<char* const> dirs, long n) {
    std::vector<Mailbox> mailboxes;
    std::vector<pollfd> fds;
    for (const fs::path dir : dirs) {
        Fd fd = Fd::open(dir / ".receive", O_RDONLY | O_NONBLOCK);
        fds.push_back({.fd = fd.get(), .events = POLLIN, .revents = 0});
        mailboxes.push_back({name_of(dir), std::move(fd)});
    }
    std::cerr << "poll_wait: waiting on ";
    for (std::string_view sep; const Mailbox& m : mailboxes) std::cerr << std::exchange(sep, ", ") << m.name;
    std::cerr << std::endl;

    for (long seen = 0; seen < n;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        for (std::size_t i = 0; i < fds.size() && seen < n; ++i) {
            if (fds[i].revents == 0) continue;
            // POLLERR/POLLHUP too: the read then reports what went wrong.
            const std::optional<std::string> message = try_receive(mailboxes[i].receive);
            if (!message) continue;
            std::string_view text = *message;
            if (text.ends_with('\n')) text.remove_suffix(1);
            std::cout << mailboxes[i].name << ": " << text << std::endl;
            ++seen;
        }
    }
}

std::optional<long> parse_count(std::string_view arg) {
    long n = 0;
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
    if (ec != std::errc{} || end != arg.data() + arg.size() || n < 0) return std::nullopt;
    return n;
}

}  // namespace

int main(int argc, char** argv) {
    const std::span<char* const> args(argv, static_cast<std::size_t>(argc));
    const std::optional<long> n =
        args.size() >= 4 && std::string_view(args[1]) == "-n" ? parse_count(args[2]) : std::nullopt;
    if (!n) {
        std::cerr << "usage: " << args[0] << " -n N MAILBOX_DIR [MAILBOX_DIR ...]\n";
        return 2;
    }
    try {
        poll_wait(args.subspan(3), *n);
    } catch (const std::exception& e) {
        std::cerr << "poll_wait: " << e.what() << '\n';
        return 1;
    }
    return std::cout ? EXIT_SUCCESS : EXIT_FAILURE;
}
