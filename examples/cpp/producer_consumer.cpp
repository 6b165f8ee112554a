// An ipcfs producer and consumer in one program (C++23, POSIX calls only).
//
//     producer_consumer produce MAILBOX_DIR N   sends "job 1" ... "job N", one message each
//     producer_consumer consume MAILBOX_DIR N   receives N messages and prints one per line
//
// Send: everything written between one open() and close() of MAILBOX_DIR/.send is one
// message, delivered atomically at close(). Receive: one open file of .receive serves
// any number of messages; read() continues the current message, a read() returning 0
// marks its end, and the next read() takes (waiting while the mailbox is empty) the next.
#include <fcntl.h>
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

namespace {

namespace fs = std::filesystem;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Owns one file descriptor and closes it when it goes out of scope. For .send, close()
// is the moment the message is delivered and can fail, so a sender calls close() itself
// and lets it throw; the destructor is the safety net for every other path.
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

    // Closes now and reports failure.
    void close() {
        if (const int fd = std::exchange(fd_, -1); fd >= 0 && ::close(fd) != 0) throw_errno("close");
    }

private:
    void reset() noexcept {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }
    int fd_ = -1;
};

void write_all(const Fd& fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd.get(), data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("write");
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

// One read(2); returns the number of bytes read, 0 at the end of a message.
std::size_t read_some(const Fd& fd, std::span<char> buf) {
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno != EINTR) throw_errno("read");
    }
}

// Sends one message: one open, one write, one close.
void send(const fs::path& mailbox, std::string_view payload) {
    Fd out = Fd::open(mailbox / ".send", O_WRONLY);
    write_all(out, payload);
    out.close();  // the message is delivered here
}

// Takes the next whole message, waiting while the mailbox is empty.
std::string receive(const Fd& in) {
    std::string message;
    std::array<char, 64 * 1024> chunk{};
    while (const std::size_t n = read_some(in, chunk)) message.append(chunk.data(), n);
    return message;
}

void produce(const fs::path& mailbox, long n) {
    for (long i = 1; i <= n; ++i) send(mailbox, "job " + std::to_string(i) + "\n");
}

void consume(const fs::path& mailbox, long n) {
    if (n == 0) return;
    const Fd in = Fd::open(mailbox / ".receive", O_RDONLY);
    for (long i = 0; i < n; ++i) {  // stops after n: never takes an (n+1)th message
        const std::string message = receive(in);
        std::cout << message;
        if (!message.ends_with('\n')) std::cout << '\n';
        std::cout.flush();
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
    const std::optional<long> n = argc == 4 ? parse_count(argv[3]) : std::nullopt;
    const std::string_view command = argc > 1 ? argv[1] : "";
    if (!n || (command != "produce" && command != "consume")) {
        std::cerr << "usage: " << argv[0] << " produce|consume MAILBOX_DIR N\n";
        return 2;
    }
    try {
        if (command == "produce")
            produce(argv[2], *n);
        else
            consume(argv[2], *n);
    } catch (const std::exception& e) {
        std::cerr << "producer_consumer " << command << ": " << e.what() << '\n';
        return 1;
    }
    return std::cout ? EXIT_SUCCESS : EXIT_FAILURE;
}
