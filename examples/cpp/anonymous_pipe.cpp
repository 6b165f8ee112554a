// An ordinary (anonymous) pipe made from an ipcfs duplex pipe, producer/consumer style
// (C++23, POSIX calls only).
//
//     anonymous_pipe PIPES_DIR/NAME N
//
// The parent creates the duplex pipe NAME (its open with O_CREAT is the first end), opens it
// again (the second end) and unlinks the name: from then on nobody else can open it
// (ENOENT), but both ends keep working. It forks; the child keeps one end and produces
// "item 1" ... "item N", one line each; the parent keeps the other end, consumes the lines,
// prints them, and prints "EOF after N items" when read() returns 0 (the child closed its
// end by exiting).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace {

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

    static Fd open(const std::string& path, int flags, mode_t mode = 0) {
        const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
        if (fd < 0) throw_errno("open " + path);
        return Fd(fd);
    }

    [[nodiscard]] int get() const noexcept { return fd_; }
    void reset() noexcept {
        if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }

private:
    int fd_ = -1;
};

void write_all(const Fd& fd, std::string_view data) {
    while (!data.empty()) {  // a pipe write may take part of a large buffer
        const ssize_t n = ::write(fd.get(), data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("write");
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

// One read(2), blocking while the pipe is empty; 0 at end of file.
std::size_t read_some(const Fd& fd, std::span<char> buf) {
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno != EINTR) throw_errno("read");
    }
}

void produce(const Fd& out, long n) {
    for (long i = 1; i <= n; ++i) write_all(out, "item " + std::to_string(i) + "\n");
}

// Prints every line read from in until end of file; returns how many there were.
long consume(const Fd& in) {
    long count = 0;
    std::string pending;
    std::array<char, 64 * 1024> chunk{};
    while (const std::size_t n = read_some(in, chunk)) {
        pending.append(chunk.data(), n);
        std::size_t start = 0;
        for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
            std::cout << std::string_view(pending).substr(start, nl - start) << '\n';
            ++count;
        }
        pending.erase(0, start);
    }
    if (!pending.empty()) {
        std::cout << pending << '\n';
        ++count;
    }
    return count;
}

std::optional<long> parse_count(std::string_view arg) {
    long n = 0;
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
    if (ec != std::errc{} || end != arg.data() + arg.size() || n < 0) return std::nullopt;
    return n;
}

int run(const std::string& path, long n) {
    // O_EXCL: a fresh pipe, or fail if the name is taken by someone else's.
    Fd consumer_end = Fd::open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    Fd producer_end = Fd::open(path, O_RDWR);
    if (::unlink(path.c_str()) != 0) throw_errno("unlink " + path);

    std::cout.flush();  // nothing buffered may be inherited by the child
    const pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {  // child: the producer
        int status = EXIT_SUCCESS;
        try {
            consumer_end.reset();
            produce(producer_end, n);
        } catch (const std::exception& e) {
            std::cerr << "producer: " << e.what() << '\n';
            status = EXIT_FAILURE;
        }
        ::_exit(status);  // exiting closes producer_end: the consumer sees end of file
    }

    // parent: the consumer
    producer_end.reset();
    const long count = consume(consumer_end);
    consumer_end.reset();
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw_errno("waitpid");
    std::cout << "EOF after " << count << " items\n" << std::flush;
    const bool child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!child_ok || count != n) {
        std::cerr << "anonymous_pipe: producer " << (child_ok ? "ok" : "failed") << ", " << count
                  << " of " << n << " items\n";
        return EXIT_FAILURE;
    }
    return std::cout ? EXIT_SUCCESS : EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
    const std::optional<long> n = argc == 3 ? parse_count(argv[2]) : std::nullopt;
    if (!n) {
        std::cerr << "usage: " << argv[0] << " PIPES_DIR/NAME N\n";
        return 2;
    }
    try {
        return run(argv[1], *n);
    } catch (const std::exception& e) {
        std::cerr << "anonymous_pipe: " << e.what() << '\n';
        return EXIT_FAILURE;
    }
}
