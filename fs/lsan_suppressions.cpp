// Leak-checker suppressions for sanitizer builds of the daemon (linked only with
// IPCFS_SANITIZER=address).
//
// libfuse 3.14 queues a FUSE_INTERRUPT whose target request it cannot find (the target
// may simply not have arrived yet) and frees it only when a later request arrives. When
// the kernel interrupts a request that was being answered at that very moment (a client
// killed while its flush or read completes) and nothing else follows before the unmount,
// fuse_session_destroy leaves that 128-byte request on the queue. The leak is libfuse's,
// bounded to one struct per unmount, and cannot be reached from the API.
//
// The frames of that allocation are all inside libfuse (no symbols in Debian's package), so
// the suppression names the library. What it could hide on our side, a request we never
// answer, is covered elsewhere: a parked request dropped unanswered is answered with EIO by
// ParkedRequest's destructor and logged as an error, and any other unanswered request hangs
// its client, which every test bounds with a deadline.
extern "C" const char* __lsan_default_suppressions();
extern "C" const char* __lsan_default_suppressions() { return "leak:libfuse3.so\n"; }
